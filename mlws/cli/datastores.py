"""``mlws datastore ...``: named places where data lives."""

from __future__ import annotations

import click

from .common import CONTEXT, open_workspace, print_json, progress_bar, table


@click.group(context_settings=CONTEXT)
def datastore() -> None:
    """Register datastores and move files in and out of them."""


@datastore.command("register")
@click.argument("name")
@click.argument("path", type=click.Path())
@click.option("--overwrite", is_flag=True, help="Replace a datastore of that name.")
@click.pass_context
def datastore_register(ctx: click.Context, name: str, path: str, overwrite: bool) -> None:
    """Register a folder of this machine as datastore NAME. On a served workspace (-w URL),
    PATH is an absolute folder on the server's machine, and registering needs the owner role.

    \b
    Example:
      mlws datastore register lab_data /data/lab
    """
    from ..datastores import Datastore

    d = Datastore.register_local(open_workspace(ctx), name, path, overwrite=overwrite)
    click.echo(f"Registered datastore {d.name!r} at {d.location}")


@datastore.command("register-ssh")
@click.argument("name")
@click.argument("host")
@click.argument("path")
@click.option("--user", help="Login name (else the one in HOST, or ~/.ssh/config's).")
@click.option("--port", default=22, show_default=True, help="ssh port (else the one in HOST).")
@click.option(
    "--key", "key_file", type=click.Path(), help="Private key file (stored in the key vault)."
)
@click.option("--ask-passphrase", is_flag=True, help="Prompt for the key's passphrase.")
@click.option("--python", "python_path", default="/usr/bin/python3", show_default=True,
              help="Python 3.8+ on the host, by absolute path.")  # fmt: skip
@click.option("-o", "--ssh-option", "ssh_options", multiple=True, help="Extra ssh -o option.")
@click.option("--overwrite", is_flag=True, help="Replace a datastore of that name.")
@click.option("--no-check", is_flag=True, help="Do not connect to the host first.")
@click.pass_context
def datastore_register_ssh(
    ctx: click.Context,
    name: str,
    host: str,
    path: str,
    user: str | None,
    port: int,
    key_file: str | None,
    ask_passphrase: bool,
    python_path: str,
    ssh_options: tuple[str, ...],
    overwrite: bool,
    no_check: bool,
) -> None:
    """Register folder PATH on HOST (host, host:port or user@host:port), reached over ssh, as
    datastore NAME. The folder is created if missing; a relative PATH is under the login's home.

    \b
    Example:
      mlws datastore register-ssh lab_data me@gpu1 /data/lab --key ~/.ssh/id_ed25519
      mlws datastore upload lab_data ./iris -t iris
    """
    from ..datastores import Datastore

    passphrase = click.prompt("Passphrase", hide_input=True) if ask_passphrase else None
    d = Datastore.register_ssh(
        open_workspace(ctx),
        name,
        host,
        path,
        username=user,
        port=port,
        private_key_file=key_file,
        private_key_passphrase=passphrase,
        python_path=python_path,
        ssh_options=list(ssh_options),
        overwrite=overwrite,
        check=not no_check,
    )
    click.echo(f"Registered datastore {d.name!r} at {d.location}")


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

    stores = Datastore.list(open_workspace(ctx))
    if as_json:
        print_json([d.serialize() for d in stores])
        return
    table(
        [[d.name, d.datastore_type, d.location, "yes" if d.is_default else ""] for d in stores],
        ["datastore", "type", "folder", "default"],
    )


@datastore.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def datastore_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a datastore: type, folder (on a host: its ssh address), whether it is the default.

    \b
    Example:
      mlws datastore show workspaceblobstore
    """
    from ..datastores import Datastore

    data = Datastore(open_workspace(ctx), name).serialize()
    if as_json:
        print_json(data)
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
    """Copy SRC to a datastore: a folder's files keeping their paths, or one file, into
    --target-path.

    \b
    Example:
      mlws datastore upload workspaceblobstore ./data -t iris
      mlws datastore upload workspaceblobstore ./iris.csv -t iris/v2
    """
    import os

    from ..datastores import Datastore

    d = Datastore(open_workspace(ctx), name)
    # show_progress=False: the library's own progress line would show in a pipe's stderr too.
    with progress_bar("Uploading") as progress:
        if os.path.isfile(src):
            d.upload_files(
                [src],
                target_path=target_path,
                overwrite=overwrite,
                show_progress=False,
                progress=progress,
            )
        else:  # a folder, or nothing there ("not a folder", one line)
            d.upload(src, target_path, overwrite=overwrite, show_progress=False, progress=progress)
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

    d = Datastore(open_workspace(ctx), name)
    with progress_bar("Downloading") as progress:
        n = d.download(
            target, prefix=prefix, overwrite=overwrite, show_progress=False, progress=progress
        )
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

    Datastore(open_workspace(ctx), name).set_as_default()
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

    Datastore(open_workspace(ctx), name).unregister()
    click.echo(f"Unregistered datastore {name!r}")
