"""``mlws dataset ...``: registered, versioned, fingerprinted data."""

from __future__ import annotations

from typing import Any

import click

from . import CONTEXT, _Group, _json, _kv, _open, _table, cli


@cli.group(cls=_Group, context_settings=CONTEXT)
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
    registered = _kv(registers)
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
@click.pass_context
def dataset_register(
    ctx: click.Context,
    name: str,
    paths: tuple[str, ...],
    datastore: str | None,
    new_version: bool,
    description: str | None,
    tags: tuple[str, ...],
) -> None:
    """Register a file dataset over PATHS (globs allowed), with a fingerprint of its files.

    \b
    Example:
      mlws dataset register iris 'iris/**/*.csv' --datastore workspaceblobstore
      mlws dataset register raw ./data --new-version
    """
    from ..datasets import Dataset
    from ..datastores import Datastore

    ws = _open(ctx)
    if datastore:
        store = Datastore(ws, datastore)
        sources: Any = [(store, p) for p in paths]
    else:
        sources = list(paths)
    ds = Dataset.File.from_files(sources, validate=False)
    ds = ds.register(
        ws, name, description=description, tags=_kv(tags), create_new_version=new_version
    )
    click.echo(
        f"Registered dataset {ds.name} version {ds.version} ({ds.serialize()['files']} files)"
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

    items = Dataset.get_all(_open(ctx)).values()
    if as_json:
        _json([d.serialize() for d in items])
        return
    _table(
        [[d.name, d.version, d.serialize()["files"], d.description or ""] for d in items],
        ["dataset", "version", "files", "description"],
    )


@dataset.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dataset_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a dataset version: definition, files, tags.

    \b
    Example:
      mlws dataset show iris:1
    """
    data = _get(_open(ctx), ref).serialize()
    if as_json:
        _json(data)
        return
    for k, v in data.items():
        if v is not None:
            click.echo(f"{k}: {v}")


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
    changes = _get(_open(ctx), ref).changes()
    if as_json:
        _json({"changed": bool(changes), **changes.as_dict()})
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
    paths = _get(_open(ctx), ref).download(target, overwrite=overwrite)
    click.echo(f"Downloaded {len(paths)} file(s) to {target}")
