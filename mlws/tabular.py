"""Tabular datasets: delimited, Parquet or JSON Lines files read as one table (v1's
``TabularDataset``).

``Dataset.Tabular.from_delimited_files(path, ...)`` (and ``from_parquet_files``,
``from_json_lines_files``) defines a table over the same paths as ``Dataset.File.from_files``;
the definition records the format, its read options, ``set_column_types``, ``include_path`` and
a list of transforms (``take``, ``skip``, ``take_sample``, ``random_split``, ``keep_columns``,
``drop_columns``), each returning a new, unregistered dataset. Registering one records all of it
with the usual fingerprint, so ``Dataset.get_by_name(...).to_pandas_dataframe()`` gives the same
frame for as long as the data is unchanged.

Reading is pyarrow's (multithreaded CSV parsing, Parquet, JSON), converted to pandas at the end
with pandas' own conventions: the same NA strings as ``pandas.read_csv``, an integer column with
a missing value is float64, text is pandas' default string dtype. Files are read in the order of
the definition's paths, sorted within each. pandas and pyarrow are the ``mlws[tabular]`` extra,
imported only when data is read.
"""

from __future__ import annotations

import codecs
import secrets
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .datasets import (
    AbstractDataset,
    Dataset,
    check_dataset_name,
    on_this_machine,
    resolve_sources,
    sources_of,
    workspace_of,
)
from .datatypes import DataType, check_column_types
from .errors import UserErrorException
from .readers import PATH_COLUMN, PromoteHeadersBehavior, TableReader, arrow, unknown_columns

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .workspace import Workspace

__all__ = ["DataType", "PromoteHeadersBehavior", "TabularDataset", "TabularDatasetFactory"]

FORMATS = ("delimited", "parquet", "json_lines")
#: ``validate=True`` reads this many rows and converts them with ``on_error="fail"``.
VALIDATE_ROWS = 1000
# v1's encoding names; any Python codec name works too.
_ENCODINGS = {
    "utf8": "utf-8",
    "utf8bom": "utf-8-sig",
    "iso88591": "iso-8859-1",
    "latin1": "latin-1",
    "ascii": "ascii",
    "utf16": "utf-16",
    "utf32": "utf-32",
    "windows1252": "cp1252",
}


def _choice(label: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise UserErrorException(
            f"{label} is one of {', '.join(repr(o) for o in options)}; got {value!r}"
        )
    return cast(str, value)


def _flag(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserErrorException(f"{label} is True or False; got {value!r}")
    return value


#: Row counts are 64-bit in pyarrow; a larger one used to surface as its OverflowError.
_MAX_ROWS = 2**63 - 1


def _count(label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ROWS:
        raise UserErrorException(
            f"{label} needs a whole number of rows from 0 to {_MAX_ROWS}; got {value!r}"
        )
    return value


def _fraction(label: str, value: Any, closed_top: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and not (0 < value < 1 or (closed_top and value == 1)):
        ok = False
    if not ok:
        top = "1]" if closed_top else "1)"
        raise UserErrorException(f"{label} is a number in (0, {top}; got {value!r}")
    return float(value)


def _seed(value: Any) -> int:
    if value is None:
        # Drawn once and stored: the same dataset gives the same rows every time it is read.
        return secrets.randbits(32)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserErrorException(
            f"seed is a whole number (or None for a random one); got {value!r}"
        )
    return value


def _columns_arg(columns: Any) -> list[str]:
    cols = [columns] if isinstance(columns, str) else columns
    if not isinstance(cols, (list, tuple)) or not cols or not all(isinstance(c, str) for c in cols):
        raise UserErrorException(f"columns is a column name or a list of them; got {columns!r}")
    return list(cols)


def _encoding(value: Any) -> str:
    if not isinstance(value, str):
        raise UserErrorException(f"encoding is a name like 'utf8' or 'latin1'; got {value!r}")
    name = _ENCODINGS.get(value.lower().replace("-", "").replace("_", ""), value)
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise UserErrorException(
            f"unknown encoding {value!r}; e.g. {', '.join(sorted(_ENCODINGS))}"
        ) from None


def _header(value: Any) -> int:
    if value is True:
        return PromoteHeadersBehavior.ALL_FILES_HAVE_SAME_HEADERS.value
    if value is False:
        return PromoteHeadersBehavior.NO_HEADERS.value
    if isinstance(value, int) and value in {h.value for h in PromoteHeadersBehavior}:
        return int(value)
    raise UserErrorException(
        f"header is True, False or a PromoteHeadersBehavior value (0-3); got {value!r}"
    )


class TabularDataset(AbstractDataset):
    """A table over delimited, Parquet or JSON Lines files (v1's ``TabularDataset``).

    Transforms return new unregistered datasets; ``to_pandas_dataframe()`` reads the data.
    """

    kind = "tabular"

    @property
    def _transforms(self) -> list[dict[str, Any]]:
        return list(self._extra.get("transforms", []))

    def _then(self, step: dict[str, Any]) -> TabularDataset:
        return cast(TabularDataset, self._derive(transforms=[*self._transforms, step]))

    # -- reading -----------------------------------------------------------------------------
    def to_pandas_dataframe(
        self, on_error: str = "null", out_of_range_datetime: str = "null"
    ) -> pd.DataFrame:
        """The data as a pandas DataFrame (a fresh RangeIndex).

        :param on_error: ``"null"``: a value that does not convert to its ``set_column_types``
            type is read as null; ``"fail"``: it is an error naming the column, value and row.
        :param out_of_range_datetime: datetimes outside ``pandas.Timestamp``'s range
            (1677-09-21 to 2262-04-11) are ``"null"`` (NaT) or ``"fail"``.
        :raises UserErrorException: an unreadable file, an unknown column, or (with
            ``"fail"``) a value that does not convert.
        :raises ExtraNotInstalled: pandas or pyarrow is missing.
        """
        _choice("on_error", on_error, ("null", "fail"))
        _choice("out_of_range_datetime", out_of_range_datetime, ("null", "fail"))
        return self._table(on_error, out_of_range_datetime).to_pandas()

    def _table(
        self,
        on_error: str = "null",
        out_of_range: str = "null",
        limit: int | None = None,
        validating: bool = False,
    ) -> pa.Table:
        """The data as a pyarrow table, transforms applied, reading only the rows they use."""
        needed = _rows_needed(self._transforms)
        if limit is not None:
            needed = limit if needed is None else min(limit, needed)
        reader = self._reader(on_error, out_of_range, needed, validating)
        return _transform(reader.read(self._file_list()), self._transforms)

    def _reader(
        self,
        on_error: str = "null",
        out_of_range: str = "null",
        limit: int | None = None,
        validating: bool = False,
    ) -> TableReader:
        extra = self._extra
        return TableReader(
            extra["format"],
            extra.get("options", {}),
            extra.get("set_column_types", {}),
            bool(extra.get("include_path")),
            on_error,
            out_of_range,
            limit,
            validating,
        )

    def _validate(self) -> None:
        """Read the first rows with every ``set_column_types`` conversion checked, and check
        that the columns it names exist (``validate=True`` of the factories)."""
        self._table("fail", "null", limit=VALIDATE_ROWS, validating=True)
        self._columns()

    def _columns(self, workspace: Workspace | None = None) -> list[str] | None:
        """The columns after the transforms, from the files' headers or schemas (no rows read);
        None for JSON Lines, whose fields can first appear in any line.

        :raises UserErrorException: ``set_column_types``, ``keep_columns`` or ``drop_columns``
            names a column that is not there.
        """
        cols = self._reader().columns(self._file_list(workspace))
        if cols is None:
            return None
        missing = [c for c in self._extra.get("set_column_types", {}) if c not in cols]
        if missing:
            raise unknown_columns(missing, cols, "set_column_types")
        if self._extra.get("include_path"):
            cols = [PATH_COLUMN, *cols]
        for step in self._transforms:
            if step["op"] in ("keep_columns", "drop_columns"):
                cols = _pick(cols, step)
        return cols

    # -- transforms (v1 names and arguments) -------------------------------------------------
    def take(self, count: int) -> TabularDataset:
        """The first ``count`` rows. Only the rows needed are read, so, as with
        ``pandas.read_csv(nrows=...)``, column types are inferred from those rows."""
        return self._then({"op": "take", "count": _count("take", count)})

    def skip(self, count: int) -> TabularDataset:
        """All rows but the first ``count``."""
        return self._then({"op": "skip", "count": _count("skip", count)})

    def take_sample(self, probability: float, seed: int | None = None) -> TabularDataset:
        """Each row kept with ``probability`` (0 < p <= 1), decided by ``seed`` and the row's
        position: the same seed gives the same rows (a random seed is drawn and recorded)."""
        p = _fraction("probability", probability, closed_top=True)
        return self._then({"op": "take_sample", "probability": p, "seed": _seed(seed)})

    def random_split(
        self, percentage: float, seed: int | None = None
    ) -> tuple[TabularDataset, TabularDataset]:
        """Two datasets that partition the rows: about ``percentage`` (0 < p < 1) of them in
        the first, the rest in the second; each row in exactly one, the same for a seed."""
        p = _fraction("percentage", percentage, closed_top=False)
        s = _seed(seed)
        return (
            self._then({"op": "random_split", "percentage": p, "seed": s, "part": 0}),
            self._then({"op": "random_split", "percentage": p, "seed": s, "part": 1}),
        )

    def keep_columns(self, columns: str | list[str], validate: bool = False) -> TabularDataset:
        """Only ``columns`` (in the dataset's order). Names are checked now against the files'
        headers (Parquet: schemas; JSON Lines: when read), whatever ``validate`` (v1's
        argument, kept for its callers) says.

        :raises UserErrorException: a name that is not a column.
        """
        return self._checked({"op": "keep_columns", "columns": _columns_arg(columns)})

    def drop_columns(self, columns: str | list[str]) -> TabularDataset:
        """All columns but ``columns``. :raises UserErrorException: a name that is not a column."""
        return self._checked({"op": "drop_columns", "columns": _columns_arg(columns)})

    def _checked(self, step: dict[str, Any]) -> TabularDataset:
        ds = self._then(step)
        ds._columns()
        return ds

    # -- registry ----------------------------------------------------------------------------
    def register(
        self,
        workspace: Workspace,
        name: str,
        description: str | None = None,
        tags: dict[str, Any] | None = None,
        create_new_version: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> TabularDataset:
        """As ``AbstractDataset.register``; a definition that names a column its data lacks is
        refused (nothing is recorded)."""
        check_dataset_name(name)
        self._columns(workspace)
        return cast(
            TabularDataset,
            super().register(workspace, name, description, tags, create_new_version, progress),
        )

    def _file_list(self, workspace: Workspace | None = None) -> list[tuple[str, str]]:
        """``(name shown, path)`` of every file, in the order of the definition's paths and
        sorted within each (a folder's walk order is the file system's)."""
        ws = workspace or self.workspace
        if ws is None and any("datastore" in s for s in self._sources):
            ws = self._ws()
        found: dict[str, tuple[str, Any]] = {}
        for src in self._sources:
            # Local paths need no workspace: resolve_sources only opens datastores.
            for name, file in sorted(resolve_sources(ws, [src]).items()):  # type: ignore[arg-type]
                found.setdefault(name, file)
        # Files on an ssh datastore are read from this machine's copy (fetched when changed).
        here = on_this_machine(found)
        return [("/" + n, here[n][0]) for n in found]


def _pick(cols: list[str], step: dict[str, Any]) -> list[str]:
    missing = [c for c in step["columns"] if c not in cols]
    if missing:
        raise unknown_columns(missing, cols, step["op"])
    if step["op"] == "keep_columns":
        return [c for c in cols if c in step["columns"]]
    return [c for c in cols if c not in step["columns"]]


def _rows_needed(steps: list[dict[str, Any]]) -> int | None:
    """How many rows from the start of the data the transforms can use (None: all). Rows past
    a ``take`` are never used, whatever follows; before one, a sample needs every row."""
    start, stop = 0, None
    for s in steps:
        if s["op"] == "skip":
            start += s["count"]
        elif s["op"] == "take":
            stop = start + s["count"] if stop is None else min(stop, start + s["count"])
        elif s["op"] in ("take_sample", "random_split"):
            return stop
    return stop


def _draws(seed: int, n: int) -> Any:
    """One uniform number in [0, 1) per row position: splitmix64 of (seed, position), so a
    row's draw depends on neither the row count nor numpy's generator of the day."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z += np.uint64(seed % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def _transform(table: pa.Table, steps: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    for s in steps:
        op = s["op"]
        if op == "take":
            table = table.slice(0, s["count"])
        elif op == "skip":
            table = table.slice(min(s["count"], table.num_rows))
        elif op in ("keep_columns", "drop_columns"):
            table = table.select(_pick(table.column_names, s))
        elif op == "take_sample":
            table = table.filter(pa.array(_draws(s["seed"], table.num_rows) < s["probability"]))
        elif op == "random_split":
            first = _draws(s["seed"], table.num_rows) < s["percentage"]
            table = table.filter(pa.array(first if s["part"] == 0 else ~first))
        else:
            raise UserErrorException(f"unknown transform {op!r} in the dataset's definition")
    return table


def _define(
    path: Any,
    fmt: str,
    options: dict[str, Any],
    validate: Any,
    include_path: Any,
    set_column_types: Any,
    partition_format: Any,
) -> TabularDataset:
    if partition_format is not None:
        raise UserErrorException(
            "partition_format is not supported by mlws; include_path=True adds each row's file"
            f" as a {PATH_COLUMN!r} column, to parse instead"
        )
    extra = {
        "format": fmt,
        "options": options,
        "set_column_types": check_column_types(set_column_types),
        "include_path": _flag("include_path", include_path),
        "transforms": [],
    }
    ds = TabularDataset(sources_of(None, path), workspace_of(path), extra)
    if _flag("validate", validate):
        ds._validate()
    return ds


class TabularDatasetFactory:
    """``Dataset.Tabular`` (v1's ``TabularDatasetFactory``): tabular datasets over files, or
    from a pandas DataFrame. ``path`` takes what ``Dataset.File.from_files`` takes:
    ``(datastore, "path/glob")``, ``datastore.path(...)``, local paths, or a list of them."""

    @staticmethod
    def from_delimited_files(
        path: Any,
        validate: bool = True,
        include_path: bool = False,
        infer_column_types: bool = True,
        set_column_types: dict[str, DataType] | None = None,
        separator: str = ",",
        header: bool | int | PromoteHeadersBehavior = True,
        partition_format: str | None = None,
        support_multi_line: bool = False,
        empty_as_string: bool = False,
        encoding: str = "utf8",
    ) -> TabularDataset:
        """A table over CSV/TSV files.

        :param validate: read the first rows now (set_column_types conversions must succeed
            and name existing columns).
        :param include_path: add a first column ``Path``: the file each row came from.
        :param infer_column_types: False reads every column as text.
        :param header: True (every file has the same header), False (none: ``Column1``, ...)
            or a ``PromoteHeadersBehavior``.
        :param support_multi_line: quoted values may hold line breaks (slower parsing).
        :param empty_as_string: empty fields of text columns are ``""``, not null.
        :param encoding: ``utf8``, ``latin1``, ``utf16``, ... (v1's names or Python's).
        :raises UserErrorException: bad options, a path matching no file, or (``validate``) a
            value that does not convert.
        """
        if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
            raise UserErrorException(
                f"separator is one character, e.g. ',' or '\\t'; got {separator!r}"
            )
        options = {
            "separator": separator,
            "header": _header(header),
            "infer_column_types": _flag("infer_column_types", infer_column_types),
            "support_multi_line": _flag("support_multi_line", support_multi_line),
            "empty_as_string": _flag("empty_as_string", empty_as_string),
            "encoding": _encoding(encoding),
        }
        return _define(
            path, "delimited", options, validate, include_path, set_column_types, partition_format
        )

    @staticmethod
    def from_parquet_files(
        path: Any,
        validate: bool = True,
        include_path: bool = False,
        set_column_types: dict[str, DataType] | None = None,
        partition_format: str | None = None,
    ) -> TabularDataset:
        """A table over Parquet files (columns joined by name across files)."""
        return _define(
            path, "parquet", {}, validate, include_path, set_column_types, partition_format
        )

    @staticmethod
    def from_json_lines_files(
        path: Any,
        validate: bool = True,
        include_path: bool = False,
        set_column_types: dict[str, DataType] | None = None,
        partition_format: str | None = None,
        invalid_lines: str = "error",
        encoding: str = "utf8",
    ) -> TabularDataset:
        """A table over JSON Lines files: one object per line, its fields the columns.

        :param invalid_lines: ``"error"`` (naming the line) or ``"drop"`` lines that are not
            a JSON object.
        """
        options = {
            "invalid_lines": _choice("invalid_lines", invalid_lines, ("error", "drop")),
            "encoding": _encoding(encoding),
        }
        return _define(
            path, "json_lines", options, validate, include_path, set_column_types, partition_format
        )

    @staticmethod
    def register_pandas_dataframe(
        dataframe: pd.DataFrame,
        target: Any,
        name: str,
        description: str | None = None,
        tags: dict[str, Any] | None = None,
        show_progress: bool = True,
    ) -> TabularDataset:
        """Write ``dataframe`` as one Parquet file in a new folder under ``target``
        (``(datastore, "folder")`` or ``datastore.path("folder")``): ``<folder>/<uuid>/
        data.parquet``, as v1's guid folder, so no version's file is ever overwritten. Then
        register a Parquet dataset over that file as the next version of ``name``. An index
        other than the default RangeIndex is kept as columns (``reset_index``).
        ``show_progress`` is v1's; there is one file to write.

        :raises UserErrorException: not a DataFrame, a bad target or name, or a frame Parquet
            cannot hold; then nothing is written or recorded.
        """
        pa = arrow()
        import pandas as pd
        import pyarrow.parquet as pq

        if not isinstance(dataframe, pd.DataFrame):
            raise UserErrorException(f"dataframe is a pandas DataFrame; got {type(dataframe)}")
        check_dataset_name(name)
        store, folder = _store_folder(target)
        index = dataframe.index
        default = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
        frame = dataframe if default and index.name is None else dataframe.reset_index()
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise UserErrorException(
                f"cannot store the DataFrame as Parquet: {' '.join(str(e).split())}"
            ) from None
        rel = "/".join(p for p in (folder, uuid.uuid4().hex, "data.parquet") if p)
        undo = store.write_new(rel, lambda tmp: pq.write_table(table, tmp))
        try:
            ds = TabularDatasetFactory.from_parquet_files((store, rel), validate=False)
            return ds.register(store.workspace, name, description, tags, create_new_version=True)
        except BaseException:
            undo()  # nothing left behind: the file and the folders made for it
            raise


def _store_folder(target: Any) -> tuple[Any, str]:
    from .datastores import DataReference, Datastore, clean_path

    if (
        isinstance(target, tuple)
        and len(target) == 2
        and isinstance(target[0], Datastore)
        and isinstance(target[1], str)
    ):
        return target[0], clean_path(target[1])
    if isinstance(target, DataReference):
        return target.datastore, target.path_on_datastore
    raise UserErrorException(
        f"target is (datastore, 'folder') or datastore.path('folder'); got {target!r}"
    )


Dataset.Tabular = TabularDatasetFactory
