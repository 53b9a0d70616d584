"""Reading tabular files into one pyarrow table: delimited text, Parquet, JSON Lines.

``TableReader(format, options, ...).read(files)`` reads each file (pyarrow: multithreaded CSV
parsing, Parquet, JSON), applies ``set_column_types`` and pandas' datetime range to it, tags it
with its path (``include_path``), and joins the tables; transforms are the dataset's business
(``mlws.tabular``). The result converts to the frame ``pandas.read_csv`` would give for an
ordinary file: the same NA strings and booleans, pandas-style column names, a column of only
missing values as float64 NaN, datetimes in pandas' unit.

Errors name the file (as the dataset shows it, ``/folder/file.csv``), and for a value the
column and row (counted from 1, the header not counted).
"""

from __future__ import annotations

import csv
import enum
import json
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .datatypes import convert, finer_unit, first_bad, out_of_pandas_range, pandas_datetime_unit
from .errors import ExtraNotInstalled, UserErrorException

if TYPE_CHECKING:
    import pyarrow as pa

PATH_COLUMN = "Path"
# pandas.read_csv's default NA strings, so a file gives the same frame read either way.
_NA = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"]
_NA += ["1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
_TRUE, _FALSE = ["True", "TRUE", "true"], ["False", "FALSE", "false"]  # pandas' booleans
_INDEX = re.compile(r"__index_level_\d+__")  # pandas' unnamed index, stored by to_parquet
_LABELS = {"delimited": "delimited text", "parquet": "Parquet", "json_lines": "JSON Lines"}


class PromoteHeadersBehavior(enum.IntEnum):
    """How delimited files' first lines become column names (v1's values; ``header=True`` is
    ``ALL_FILES_HAVE_SAME_HEADERS``, ``header=False`` is ``NO_HEADERS``: ``Column1``, ...)."""

    NO_HEADERS = 0
    ONLY_FIRST_FILE_HAS_HEADERS = 1
    COMBINE_ALL_FILES_HEADERS = 2
    ALL_FILES_HAVE_SAME_HEADERS = 3


def arrow() -> Any:
    """pyarrow (with pandas importable), or the error that says how to install the extra."""
    try:
        import pandas  # noqa: F401
        import pyarrow
    except ImportError:
        raise ExtraNotInstalled(
            "tabular datasets need pandas and pyarrow: pip install 'mlws[tabular]'"
        ) from None
    return pyarrow


def unknown_columns(missing: list[str], columns: list[str], what: str) -> UserErrorException:
    """The error for a step (``what``) that names columns the table does not have: names them and
    lists the columns there are."""
    return UserErrorException(
        f"{what} names {', '.join(repr(m) for m in missing)}, which"
        f" {'is not a column' if len(missing) == 1 else 'are not columns'}; the columns are"
        f" {', '.join(columns) or '(none)'}"
    )


def _block_size(path: str) -> int:
    """How much of a delimited file each of pyarrow's parsing tasks takes: about four per CPU,
    between 1 MiB (pyarrow's default) and 8 MiB. Measured on 2 CPUs, a 70 MB CSV of 1M rows:
    1 MiB blocks took 20% more CPU time than 8 MiB ones (per-block set-up and type inference),
    while four blocks per CPU keep every thread busy."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 1 << 20
    return max(1 << 20, min(8 << 20, size // (4 * (os.cpu_count() or 1))))


class TableReader:
    """One read of a definition's files (``(name shown, path)`` pairs, in order).

    :param limit: read only the first ``limit`` rows (files after them are not opened).
    :param validating: errors hint at ``validate=False`` rather than ``on_error``.
    """

    def __init__(
        self,
        fmt: str,
        options: dict[str, Any],
        column_types: dict[str, dict[str, Any]],
        include_path: bool = False,
        on_error: str = "null",
        out_of_range: str = "null",
        limit: int | None = None,
        validating: bool = False,
    ) -> None:
        self.pa = arrow()
        self.fmt, self.opts, self.types = fmt, options, column_types
        self.include_path = include_path
        self.on_error, self.out_of_range, self.limit = on_error, out_of_range, limit
        self.hint = (
            "; pass validate=False to define it anyway (such values then read as null)"
            if validating
            else "; on_error='null' reads such values as null"
        )
        self.strings: set[str] = set()  # delimited columns read as text: their types conflict
        self.first_names: list[str] | None = None
        self.unit = pandas_datetime_unit()

    # -- the whole table ---------------------------------------------------------------------
    def read(self, files: list[tuple[str, str]]) -> pa.Table:
        """Read the files into one table, in order, converting columns as asked.

        A delimited column whose inferred types differ between files is read again as text in every
        file, so the text is as written.

        :raises UserErrorException: the files' columns cannot be combined, a conversion fails
        (``on_error``), or ``set_column_types`` names a column that is not there.
        """
        while True:
            self.first_names = None
            tables, got = [], 0
            for name, path in files:
                rows = None if self.limit is None else self.limit - got
                if rows is not None and rows <= 0 and tables:
                    break
                t = self._read(path, name, first=not tables, rows=rows)
                if t is None:
                    continue  # an empty file: no header, no rows
                tables.append(self._finish(t, name))
                got += tables[-1].num_rows
            try:
                table = self._concat(tables)
                break
            except _Conflict as c:
                if self.fmt != "delimited" or c.columns <= self.strings:
                    raise UserErrorException(c.message) from None
                # Read those columns again as text in every file: the text as written, where
                # casting numbers back to text would not be.
                self.strings |= c.columns
        table = self._nulls_as_float(table)
        if self.limit is None:
            missing = [c for c in self.types if c not in table.column_names]
            if missing:
                raise unknown_columns(missing, table.column_names, "set_column_types")
        return table

    def _concat(self, tables: list[pa.Table]) -> pa.Table:
        pa = self.pa
        if not tables:
            return pa.table({})
        if len(tables) == 1:
            return tables[0]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        kinds: dict[str, set[Any]] = {}
        for t in tables:
            for f in t.schema:
                if not pa.types.is_null(f.type):
                    kinds.setdefault(f.name, set()).add(f.type)
        numeric = (pa.types.is_integer, pa.types.is_floating)
        clash = {
            n
            for n, ts in kinds.items()
            if len(ts) > 1 and not all(any(is_(t) for is_ in numeric) for t in ts)
        }
        message = (
            f"columns {', '.join(sorted(clash))} have different types in different files;"
            " give them one with set_column_types"
        )
        if self.fmt == "delimited" or not clash:
            raise _Conflict(clash, message)
        fixed = []
        for t in tables:
            for n in clash & set(t.column_names):
                i = t.column_names.index(n)
                t = t.set_column(i, n, t.column(i).cast(pa.string()))
            fixed.append(t)
        try:
            return pa.concat_tables(fixed, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise UserErrorException(message) from None

    def _nulls_as_float(self, table: pa.Table) -> pa.Table:
        """A column with no value at all is float64 NaN in pandas; pyarrow's null type would
        give an object column of None."""
        pa = self.pa
        for i, f in enumerate(table.schema):
            if pa.types.is_null(f.type):
                table = table.set_column(i, f.name, table.column(i).cast(pa.float64()))
        return table

    def _finish(self, t: pa.Table, name: str) -> pa.Table:
        """One file's table with its ``set_column_types`` applied, datetimes as pandas holds
        them and (``include_path``) its path as the first column."""
        pa = self.pa
        import pyarrow.compute as pc

        for col, spec in self.types.items():
            if col not in t.column_names:
                continue  # another file may have it; the whole read checks
            i = t.column_names.index(col)
            before = t.column(i)
            after = convert(before, spec)
            if self.on_error == "fail":
                bad = first_bad(before, after)
                if bad is not None:
                    raise UserErrorException(
                        f"column {col!r}: cannot convert {before[bad].as_py()!r} to"
                        f" {spec['type']} ({name}, row {bad + 1}){self.hint}"
                    )
            t = t.set_column(i, col, after)
        for i, f in enumerate(t.schema):
            col = t.column(i)
            if pa.types.is_date(f.type):
                col = col.cast(pa.timestamp("s"))  # pandas has no date dtype; v1 gives datetimes
            if not pa.types.is_timestamp(col.type):
                continue
            mask = out_of_pandas_range(col)
            if mask is not None:
                if self.out_of_range == "fail":
                    at = int(pc.index(mask, True).as_py())
                    raise UserErrorException(
                        f"column {f.name!r}: {col[at].as_py()} is outside the datetimes pandas"
                        f" holds (1677-09-21 to 2262-04-11) ({name}, row {at + 1});"
                        " out_of_range_datetime='null' reads such values as NaT"
                    )
                col = pc.if_else(mask, pa.scalar(None, col.type), col)
            t = t.set_column(
                i, f.name, self._unit(col, keep=self.fmt == "parquet" and f.type == col.type)
            )
        if self.include_path:
            if PATH_COLUMN in t.column_names:
                raise UserErrorException(
                    f"include_path adds a column {PATH_COLUMN!r}, but {name} has one already"
                )
            t = t.add_column(0, PATH_COLUMN, pa.repeat(pa.scalar(name), t.num_rows))
        return t

    def _unit(self, col: Any, keep: bool) -> Any:
        """Timestamps in the unit pandas would give: a Parquet column's own unit (as
        ``pandas.read_parquet``), else pandas' parsing unit (pyarrow parses text with
        fractions to ns, pandas 3 to us) unless the values need a finer one."""
        pa = self.pa
        unit = col.type.unit
        if keep or unit == self.unit:
            return col
        target = pa.timestamp(self.unit, col.type.tz)
        if finer_unit(unit, self.unit) == self.unit:
            return col.cast(target)  # coarser to finer: exact (the range is checked above)
        try:
            return col.cast(target)  # finer to coarser: only if no digit is lost
        except pa.ArrowInvalid:
            return col

    def _unreadable(self, name: str, error: Exception) -> UserErrorException:
        text = " ".join(str(error).split())
        hint = ""
        if "utf8" in text.lower() or "utf-8" in text.lower():
            hint = "; pass the files' encoding, e.g. encoding='latin1'"
        elif "Expected" in text and not self.opts.get("support_multi_line"):
            hint = "; if a quoted value holds a line break, pass support_multi_line=True"
        return UserErrorException(f"cannot read {name} as {_LABELS[self.fmt]}: {text}{hint}")

    # -- one file ----------------------------------------------------------------------------
    def _read(self, path: str, name: str, first: bool, rows: int | None) -> pa.Table | None:
        pa = self.pa
        try:
            if self.fmt == "delimited":
                return self._read_delimited(path, name, first, rows)
            if self.fmt == "parquet":
                return self._read_parquet(path, rows)
            return self._read_json(path, name, rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as e:
            raise self._unreadable(name, e) from None
        except csv.Error as e:  # the header peek: e.g. a field past csv's size limit
            raise self._unreadable(name, e) from None
        except UnicodeDecodeError as e:
            raise self._unreadable(
                name, ValueError(f"not valid {e.encoding}: {e.reason}")
            ) from None

    def _names(self, path: str, name: str, first: bool) -> tuple[list[str], int] | None:
        """A delimited file's column names and the lines before its data (None: empty file)."""
        enc = self.opts["encoding"]
        with open(path, newline="", encoding="utf-8-sig" if enc == "utf-8" else enc) as f:
            reader = csv.reader(f, delimiter=self.opts["separator"])
            row = next((r for r in reader if r), None)
            lines = reader.line_num
        if row is None:
            return None
        header = self.opts["header"]
        h = PromoteHeadersBehavior
        if header == h.NO_HEADERS or (header == h.ONLY_FIRST_FILE_HAS_HEADERS and not first):
            if header == h.NO_HEADERS or self.first_names is None:
                return [f"Column{i + 1}" for i in range(len(row))], 0
            return self.first_names, 0
        names = _dedup(row)
        if first:
            self.first_names = names
        elif (
            header == h.ALL_FILES_HAVE_SAME_HEADERS
            and self.first_names is not None
            and set(names) != set(self.first_names)
        ):
            raise UserErrorException(
                f"{name}'s header ({', '.join(names)}) differs from the first file's"
                f" ({', '.join(self.first_names)}); pass"
                " header=PromoteHeadersBehavior.COMBINE_ALL_FILES_HEADERS to combine them"
            )
        return names, lines

    def _read_delimited(self, path: str, name: str, first: bool, rows: int | None) -> Any:
        pa = self.pa
        import pyarrow.csv as pacsv

        found = self._names(path, name, first)
        if found is None:
            return None
        names, skip = found
        as_text = set(self.types) | self.strings
        if not self.opts["infer_column_types"]:
            as_text = set(names)
        enc = self.opts["encoding"]
        read = pacsv.ReadOptions(
            column_names=names,
            skip_rows=skip,
            encoding="utf8" if enc == "utf-8" else enc,
            block_size=_block_size(path) if rows is None else 1 << 20,
        )
        parse = pacsv.ParseOptions(
            delimiter=self.opts["separator"], newlines_in_values=self.opts["support_multi_line"]
        )
        conv = pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names if n in as_text},
            null_values=_NA,
            strings_can_be_null=not self.opts["empty_as_string"],
            true_values=_TRUE,
            false_values=_FALSE,
        )
        if rows is not None:
            try:
                # The streaming reader stops after the rows needed; it infers types from its
                # first block and fails if a later one disagrees: then read the whole file.
                reader = pacsv.open_csv(
                    path, read_options=read, parse_options=parse, convert_options=conv
                )
                return _first_rows(pa, reader, rows)
            except pa.ArrowInvalid:
                pass
        table = pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=conv)
        return table if rows is None else table.slice(0, rows)

    def _read_parquet(self, path: str, rows: int | None) -> Any:
        pa = self.pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if rows is None:
            t = pf.read(use_pandas_metadata=True)  # else index columns are left out
        else:
            t = _first_rows(
                pa,
                pf.iter_batches(batch_size=max(1, min(rows, 65536)), use_pandas_metadata=True),
                rows,
            )
            if t is None:
                t = pf.schema_arrow.empty_table()
        # pandas metadata would rebuild an index; a tabular dataset's frames have a RangeIndex
        # and any named index is an ordinary column.
        t = t.replace_schema_metadata(None)
        return t.drop_columns([c for c in t.column_names if _INDEX.fullmatch(c)])

    def _read_json(self, path: str, name: str, rows: int | None) -> Any:
        pa = self.pa
        import io

        import pyarrow.json as pajson

        if os.path.getsize(path) == 0:
            return None
        enc = self.opts["encoding"]
        if rows is None and enc == "utf-8":
            try:
                return pajson.read_json(path)
            except pa.ArrowInvalid:
                return self._json_by_line(_lines(path, enc), name)
        lines = list(_lines(path, enc, rows))
        try:
            return pajson.read_json(io.BytesIO("\n".join(lines).encode("utf-8")))
        except pa.ArrowInvalid:
            return self._json_by_line(lines, name)

    def _json_by_line(self, lines: Iterable[str], name: str) -> pa.Table:
        """The slow path, when pyarrow refuses a file: find its invalid lines (an error, or
        dropped with ``invalid_lines='drop'``) and build the table from Python values, a field
        with values of several kinds as text."""
        pa = self.pa
        rows = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                if self.opts["invalid_lines"] == "drop":
                    continue
                shown = line.strip()
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise UserErrorException(
                    f"line {n} of {name} is not a JSON object: {shown!r}; pass"
                    " invalid_lines='drop' to skip such lines"
                )
            rows.append(obj)
        fields: dict[str, None] = {}
        for r in rows:
            fields.update(dict.fromkeys(r))
        columns = {f: [r.get(f) for r in rows] for f in fields}
        out = {}
        for f, values in columns.items():
            try:
                out[f] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                out[f] = pa.array(
                    [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
                )
        return pa.table(out) if out else pa.table({})

    # -- columns without reading rows --------------------------------------------------------
    def columns(self, files: list[tuple[str, str]]) -> list[str] | None:
        """The files' columns from their headers or schemas (no rows read); None for JSON
        Lines, whose fields can first appear in any line."""
        if self.fmt == "json_lines":
            return None
        seen: dict[str, None] = {}
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            for name, path in files:
                try:
                    schema = pq.read_schema(path)
                except (self.pa.ArrowInvalid, OSError) as e:
                    raise self._unreadable(name, e) from None
                seen.update(dict.fromkeys(n for n in schema.names if not _INDEX.fullmatch(n)))
            return list(seen)
        h = PromoteHeadersBehavior
        every_file = self.opts["header"] in (h.NO_HEADERS, h.COMBINE_ALL_FILES_HEADERS)
        first = True
        for name, path in files:
            found = self._names(path, name, first)
            if found is None:
                continue
            seen.update(dict.fromkeys(found[0]))
            first = False
            if not every_file:
                break
        return list(seen)


class _Conflict(Exception):
    def __init__(self, columns: set[str], message: str) -> None:
        super().__init__(message)
        self.columns, self.message = columns, message


def _first_rows(pa: Any, batches: Iterable[Any], rows: int) -> Any:
    got, kept = 0, []
    schema = getattr(batches, "schema", None)
    for b in batches:
        kept.append(b)
        got += b.num_rows
        if got >= rows:
            break
    if not kept:
        return schema.empty_table() if schema is not None else None
    return pa.Table.from_batches(kept).slice(0, rows)


def _lines(path: str, encoding: str, limit: int | None = None) -> Iterable[str]:
    """The lines of a text file (the first ``limit`` that are not blank)."""
    n = 0
    with open(path, encoding=encoding) as f:
        for line in f:
            if limit is not None and line.strip():
                n += 1
                if n > limit:
                    return
            yield line.rstrip("\r\n")


def _dedup(names: list[str]) -> list[str]:
    """Column names as pandas makes them: '' is 'Unnamed: <i>', repeats are 'a.1', 'a.2'."""
    out: list[str] = []
    counts: dict[str, int] = {}
    for i, n in enumerate(names):
        n = n or f"Unnamed: {i}"
        seen = counts.get(n, 0)
        while seen:  # pandas' loop: 'a', 'a' -> 'a', 'a.1'; and 'a.1' taken already -> 'a.1.1'
            counts[n] = seen + 1
            n = f"{n}.{seen}"
            seen = counts.get(n, 0)
        counts[n] = seen + 1
        out.append(n)
    return out
