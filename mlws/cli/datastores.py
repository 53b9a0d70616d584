"""``mlws datastore ...``: named places where data lives."""

from __future__ import annotations

import click

from . import CONTEXT, _Group, _json, _open, _table, cli


@cli.group(cls=_Group, context_settings=CONTEXT)
def datastore() -> None:
    """Register datastores and move files in and out of them."""


@datastore.command("register")
@click.argument("name")
@click.argument("path", type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace a datastore of that name.")
@click.pass_context
def datastore_register(ctx: click.Context, name: str, path: str, overwrite: bool) -> None:
    """Register a folder of this machine as datastore NAME.

    \b
    Example:
      mlws datastore register lab_data /data/lab
    """
    from ..datastores import Datastore

    d = Datastore.register_local(_open(ctx), name, path, overwrite=overwrite)
    click.echo(f"Registered datastore {d.name!r} at {d.root}")


@datastore.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def datastore_list(ctx: click.Context, as_json: bool) -> None:
    """List datastores (the default is marked).

    \b
    Example:
      mlws datastore list
    """
    from ..datastores import Datastore

    stores = Datastore.list(_open(ctx))
    if as_json:
        _json([d.serialize() for d in stores])
        return
    _table(
        [[d.name, d.datastore_type, str(d.root), "yes" if d.is_default else ""] for d in stores],
        ["datastore", "type", "folder", "default"],
    )


@datastore.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def datastore_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a datastore: type, folder, whether it is the default.

    \b
    Example:
      mlws datastore show workspaceblobstore
    """
    from ..datastores import Datastore

    data = Datastore(_open(ctx), name).serialize()
    if as_json:
        _json(data)
        return
    for k, v in data.items():
        click.echo(f"{k}: {v}")


@datastore.command("upload")
@click.argument("name")
@click.argument("src", type=click.Path())
@click.option("-t", "--target-path", help="Folder on the datastore (default: its root).")
@click.option("--overwrite", is_flag=True, help="Replace files that are there.")
@click.pass_context
def datastore_upload(
    ctx: click.Context, name: str, src: str, target_path: str | None, overwrite: bool
) -> None:
    """Copy the files under SRC to a datastore.

    \b
    Example:
      mlws datastore upload workspaceblobstore ./data -t iris
    """
    from ..datastores import Datastore

    d = Datastore(_open(ctx), name)
    d.upload(src, target_path, overwrite=overwrite)
    done = d.last_upload
    click.echo(f"Uploaded {done['copied']} file(s), kept {done['skipped']} already there")


@datastore.command("download")
@click.argument("name")
@click.argument("target", type=click.Path())
@click.option("-p", "--prefix", help="Only files under this path on the datastore.")
@click.option("--overwrite", is_flag=True, help="Replace files that are there.")
@click.pass_context
def datastore_download(
    ctx: click.Context, name: str, target: str, prefix: str | None, overwrite: bool
) -> None:
    """Copy a datastore's files (under --prefix) into TARGET, keeping their paths.

    \b
    Example:
      mlws datastore download workspaceblobstore ./here -p iris
    """
    from ..datastores import Datastore

    n = Datastore(_open(ctx), name).download(target, prefix=prefix, overwrite=overwrite)
    click.echo(f"Downloaded {n} file(s) to {target}")


@datastore.command("set-default")
@click.argument("name")
@click.pass_context
def datastore_set_default(ctx: click.Context, name: str) -> None:
    """Make NAME the workspace's default datastore.

    \b
    Example:
      mlws datastore set-default lab_data
    """
    from ..datastores import Datastore

    Datastore(_open(ctx), name).set_as_default()
    click.echo(f"{name!r} is the default datastore")


@datastore.command("unregister")
@click.argument("name")
@click.pass_context
def datastore_unregister(ctx: click.Context, name: str) -> None:
    """Forget a datastore (its files stay where they are).

    \b
    Example:
      mlws datastore unregister lab_data
    """
    from ..datastores import Datastore

    Datastore(_open(ctx), name).unregister()
    click.echo(f"Unregistered datastore {name!r}")
