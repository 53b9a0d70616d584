"""``mlws workspace ...``: create, inspect and release workspaces."""

from __future__ import annotations

import click

from .common import CONTEXT, open_workspace, print_json, table, when


@click.group(context_settings=CONTEXT)
def workspace() -> None:
    """Create and inspect workspaces."""


@workspace.command("create")
@click.argument("path", type=click.Path())
@click.option("--name", help="Workspace name (default: the folder name).")
@click.option("--exist-ok", is_flag=True, help="Open it if it already exists.")
@click.option("--write-config", is_flag=True, help="Also write .mlws/config.json here, naming it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workspace_create(
    path: str, name: str | None, exist_ok: bool, write_config: bool, as_json: bool
) -> None:
    """Create a workspace folder at PATH.

    \b
    Example:
      mlws workspace create ~/ml/team-ws --name team --write-config
    """
    from ..workspace import Workspace

    with Workspace.create(path, name=name, exist_ok=exist_ok) as ws:
        if write_config:
            ws.write_config(".")
        if as_json:
            print_json(ws.get_details())
        else:
            click.echo(f"Created workspace {ws.name!r} at {ws.path}")


@workspace.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def workspace_show(ctx: click.Context, as_json: bool) -> None:
    """Show the workspace in use (after discovery).

    \b
    Example:
      mlws -w ./ws workspace show --json
    """
    ws = open_workspace(ctx)
    details = ws.get_details()
    if as_json:
        print_json(details)
    else:
        shown = {**details, "created": when(details["created"])}
        table([[k, v] for k, v in shown.items()], ["field", "value"])


@workspace.command("release")
@click.pass_context
def workspace_release(ctx: click.Context) -> None:
    """Stop writing to a shared-folder workspace from this machine, so another may write now.

    A workspace in a network folder has one writing machine at a time; its lease otherwise
    lapses a minute after that machine's last write. Run it when this machine's work is done
    (no run or service of this machine may still be writing).

    \b
    Example:
      mlws -w /mnt/team/ws workspace release
    """
    ws = open_workspace(ctx)
    if ws.release_writer_lease():
        click.echo(f"This machine no longer writes workspace {ws.name!r}")
    else:
        click.echo(f"This machine was not writing workspace {ws.name!r}; nothing to release")
