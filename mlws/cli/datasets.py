"""``mlws dataset ...``: registered, versioned, fingerprinted data."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from .common import CONTEXT, key_values, open_workspace, print_json, progress_bar, table

#: mlws.tabular.FORMATS, spelled out: importing mlws.tabular here (for a click.Choice) cost every
#: ``mlws --help`` 150 ms; tests/test_cli_split.py checks that the two agree.
FORMATS = ("delimited", "parquet", "json_lines")


@click.group(context_settings=CONTEXT)
def dataset() -> None:
    """Register datasets, and see whether their data changed."""


def data_arguments(
    ws: Any,
    args: tuple[str, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    registers: tuple[str, ...],
) -> list[Any]:
    """``mlws run submit``'s ARGS with ``{input:NAME}`` / ``{output:NAME}`` made the inputs and
    outputs that ``--input``, ``--output`` and ``--register-output`` describe."""
    from ..datastores import Datastore
    from ..rundata import OutputFileDatasetConfig

    made: dict[str, Any] = {}
    for item in inputs:
        name, eq, ref = item.partition("=")
        ref, at, mode = ref.partition("@")
        if not eq or not ref:
            raise click.ClickException(f"--input takes NAME=DATASET[:VERSION][@MODE], got {item!r}")
        config = _get(ws, ref).as_named_input(name)
        if mode not in ("", "mount", "download", "direct"):
            raise click.ClickException(f"--input {item!r}: MODE is mount, download or direct")
        made[f"{{input:{name}}}"] = (
            config.as_download()
            if mode == "download"
            else (config if mode == "direct" else config.as_mount())
        )
    registered = key_values(registers)
    for item in outputs:
        name, eq, where = item.partition("=")
        destination = None
        if eq:
            store, colon, path = where.partition(":")
            if not colon:
                raise click.ClickException(f"--output takes NAME[=DATASTORE:PATH], got {item!r}")
            destination = (Datastore(ws, store), path)
        config = OutputFileDatasetConfig(name, destination=destination)
        if name in registered:
            config = config.register_on_complete(registered.pop(name))
        made[f"{{output:{name}}}"] = config
    if registered:
        raise click.ClickException(
            f"--register-output names no --output {next(iter(registered))!r}"
        )
    out: list[Any] = []
    for a in args:
        if a.startswith(("{input:", "{output:")) and a.endswith("}") and a not in made:
            kind, _, name = a[1:-1].partition(":")
            raise click.ClickException(f"{a}: there is no --{kind} named {name!r}")
        out.append(made.get(a, a))
    return out


def _get(ws: Any, ref: str) -> Any:
    from ..datasets import Dataset

    name, sep, v = ref.rpartition(":")
    if sep and v.isdigit():
        return Dataset.get_by_name(ws, name, int(v))
    return Dataset.get_by_name(ws, ref)


@dataset.command("register")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--datastore", help="PATHS are paths or globs on this datastore (else local paths).")
@click.option("--new-version", is_flag=True, help="Register the next version of an existing NAME.")
@click.option("--description", help="What the data is.")
@click.option("--tag", "tags", multiple=True, help="Tag key=value (repeatable).")
@click.option(
    "--tabular",
    is_flag=True,
    help="A tabular dataset (read as a table); implied by the options below.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Tabular file format (default: from the first path's extension, else delimited).",
)
@click.option("--separator", help="Delimited: the one-character separator ('\\t' for tab).")
@click.option("--no-header", is_flag=True, help="Delimited: no header line (Column1, ...).")
@click.option("--include-path", is_flag=True, help="Tabular: add each row's file as column Path.")
@click.option(
    "--column-type",
    "column_types",
    multiple=True,
    metavar="COL=TYPE",
    help="Tabular: read COL as string, long, float, bool or datetime (repeatable).",
)
@click.pass_context
def dataset_register(
    ctx: click.Context,
    name: str,
    paths: tuple[str, ...],
    datastore: str | None,
    new_version: bool,
    description: str | None,
    tags: tuple[str, ...],
    tabular: bool,
    fmt: str | None,
    separator: str | None,
    no_header: bool,
    include_path: bool,
    column_types: tuple[str, ...],
) -> None:
    """Register a dataset over PATHS (globs allowed), with a fingerprint of its files: a file
    dataset, or with --tabular a table of delimited, Parquet or JSON Lines files.

    \b
    Example:
      mlws dataset register iris 'iris/**/*.csv' --datastore workspaceblobstore
      mlws dataset register raw ./data --new-version
      mlws dataset register weather weather.csv --tabular --column-type temp_c=float
      mlws dataset register events 'logs/*.jsonl' --format json_lines
    """
    from ..datasets import Dataset
    from ..datastores import Datastore

    ws = open_workspace(ctx)
    if datastore:
        store = Datastore(ws, datastore)
        sources: Any = [(store, p) for p in paths]
    else:
        sources = list(paths)
    tabular = tabular or bool(fmt or separator or no_header or include_path or column_types)
    if tabular:
        ds = _tabular(sources, paths[0], fmt, separator, no_header, include_path, column_types)
    else:
        ds = Dataset.File.from_files(sources, validate=False)
    with progress_bar("Fingerprinting") as progress:
        ds = ds.register(
            ws,
            name,
            description=description,
            tags=key_values(tags),
            create_new_version=new_version,
            progress=progress,
        )
    files = ds.serialize()["files"]
    if tabular:
        fmt = ds.definition["format"]
        click.echo(
            f"Registered tabular dataset {ds.name} version {ds.version} ({files} files, {fmt})"
        )
    else:
        click.echo(f"Registered dataset {ds.name} version {ds.version} ({files} files)")


_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "json_lines"}
_EXTENSIONS.update({".ndjson": "json_lines", ".json": "json_lines"})


def _tabular(
    sources: Any,
    first: str,
    fmt: str | None,
    separator: str | None,
    no_header: bool,
    include_path: bool,
    column_types: tuple[str, ...],
) -> Any:
    from ..datasets import Dataset
    from ..datatypes import DataType
    from ..errors import UserErrorException

    if fmt is None:
        fmt = _EXTENSIONS.get(os.path.splitext(first)[1].lower(), "delimited")
    if fmt != "delimited" and (separator or no_header):
        raise UserErrorException("--separator and --no-header are for --format delimited")
    types = {k: DataType.from_name(v) for k, v in key_values(column_types).items()}
    common: dict[str, Any] = {
        "validate": True,
        "include_path": include_path,
        "set_column_types": types,
    }
    if fmt == "parquet":
        return Dataset.Tabular.from_parquet_files(sources, **common)
    if fmt == "json_lines":
        return Dataset.Tabular.from_json_lines_files(sources, **common)
    sep = {"\\t": "\t", "tab": "\t"}.get(separator or ",", separator or ",")
    return Dataset.Tabular.from_delimited_files(
        sources, separator=sep, header=not no_header, **common
    )


@dataset.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dataset_list(ctx: click.Context, as_json: bool) -> None:
    """List datasets (latest versions).

    \b
    Example:
      mlws dataset list
    """
    from ..datasets import Dataset

    items = Dataset.get_all(open_workspace(ctx)).values()
    if as_json:
        print_json([d.serialize() for d in items])
        return
    table(
        [[d.name, d.version, d.kind, d.serialize()["files"], d.description or ""] for d in items],
        ["dataset", "version", "kind", "files", "description"],
    )


@dataset.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dataset_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a dataset version: definition (a table's format, column types and transforms),
    files, tags.

    \b
    Example:
      mlws dataset show iris:1
    """
    data = _get(open_workspace(ctx), ref).serialize()
    if as_json:
        print_json(data)
        return
    definition = data["definition"]
    for k, v in data.items():
        if k == "definition" and definition["type"] == "tabular":
            for line in _describe(definition):
                click.echo(line)
        elif v is not None:
            click.echo(f"{k}: {v}")


def _describe(definition: dict[str, Any]) -> list[str]:
    """A tabular definition as lines: kind, sources, format and options, types, transforms."""
    from ..tabular import PromoteHeadersBehavior

    options = dict(definition.get("options", {}))
    if "header" in options:
        options["header"] = PromoteHeadersBehavior(options["header"]).name
    opts = ", ".join(f"{k}={v!r}" for k, v in options.items())
    types = definition.get("set_column_types") or {}
    steps = []
    for step in definition.get("transforms", []):
        args = ", ".join(f"{k}={v!r}" for k, v in step.items() if k != "op")
        steps.append(f"{step['op']}({args})")
    return [
        "kind: tabular",
        f"sources: {definition['sources']}",
        f"format: {definition['format']}" + (f" ({opts})" if opts else ""),
        "column types: "
        + (", ".join(f"{c}={t['type']}" for c, t in types.items()) or "(inferred)"),
        f"include_path: {bool(definition.get('include_path'))}",
        "transforms: " + (" -> ".join(steps) or "(none)"),
    ]


@dataset.command("diff")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dataset_diff(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Whether the data under a version changed since it was registered, and which files
    (exit status 1 when it changed).

    \b
    Example:
      mlws dataset diff iris
    """
    ds = _get(open_workspace(ctx), ref)
    with progress_bar("Fingerprinting", as_json=as_json) as progress:
        changes = ds.changes(progress=progress)
    if as_json:
        print_json({"changed": bool(changes), **changes.as_dict()})
    elif not changes:
        click.echo("unchanged")
    else:
        for label, prefix in (("added", "+"), ("removed", "-"), ("modified", "M")):
            for path in getattr(changes, label):
                click.echo(f"{prefix} {path}")
    ctx.exit(1 if changes else 0)


@dataset.command("download")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.argument("target", type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace files that are there.")
@click.pass_context
def dataset_download(ctx: click.Context, ref: str, target: str, overwrite: bool) -> None:
    """Copy a dataset's files into TARGET.

    \b
    Example:
      mlws dataset download iris ./data
    """
    from ..errors import UserErrorException
    from ..tabular import TabularDataset

    ds = _get(open_workspace(ctx), ref)
    if isinstance(ds, TabularDataset):
        raise UserErrorException(
            f"{ds.id} is a tabular dataset; download copies a file dataset's files"
            " (see 'mlws dataset head', or its sources in 'mlws dataset show')"
        )
    paths = ds.download(target, overwrite=overwrite)
    click.echo(f"Downloaded {len(paths)} file(s) to {target}")


@dataset.command("head")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("-n", "rows", default=10, show_default=True, help="How many rows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per row).")
@click.pass_context
def dataset_head(ctx: click.Context, ref: str, rows: int, as_json: bool) -> None:
    """Print the first rows of a tabular dataset (its transforms applied).

    \b
    Example:
      mlws dataset head weather -n 5
      mlws dataset head weather:2 --json
    """
    from ..errors import UserErrorException
    from ..tabular import TabularDataset

    ds = _get(open_workspace(ctx), ref)
    if not isinstance(ds, TabularDataset):
        raise UserErrorException(
            f"{ds.id} is a {ds.kind} dataset; head shows tabular ones (see 'mlws dataset show')"
        )
    frame = ds.take(rows).to_pandas_dataframe()
    if as_json:
        # pandas' own JSON: NaN as null, datetimes in ISO 8601
        print_json(json.loads(frame.to_json(orient="records", date_format="iso")))
        return
    shown = frame.astype(object).where(frame.notna(), "")
    table(shown.values.tolist(), [str(c) for c in frame.columns])
