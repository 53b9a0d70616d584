"""``mlws secret ...``: the workspace key vault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import CONTEXT, open_workspace, print_json, stdin_text, table


@click.group(context_settings=CONTEXT)
def secret() -> None:
    """Manage the workspace key vault (values encrypted; the key stays outside the workspace)."""


@secret.command("set")
@click.argument("name")
@click.option(
    "--value",
    help="The value (default: read from standard input, so it stays out of shell history).",
)
@click.pass_context
def secret_set(ctx: click.Context, name: str, value: str | None) -> None:
    """Store or replace secret NAME.

    \b
    Example:
      printf %s "$DB_PASSWORD" | mlws secret set db-password
    """
    if value is None:
        value = stdin_text("the secret's value").rstrip("\n")
    open_workspace(ctx).get_default_keyvault().set_secret(name, value)
    click.echo(f"Secret {name!r} stored")


@secret.command("get")
@click.argument("name")
@click.pass_context
def secret_get(ctx: click.Context, name: str) -> None:
    """Print the value of secret NAME.

    \b
    Example:
      mlws secret get db-password
    """
    click.echo(open_workspace(ctx).get_default_keyvault().get_secret(name))


@secret.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def secret_list(ctx: click.Context, as_json: bool) -> None:
    """List secret names (never values).

    \b
    Example:
      mlws secret list
    """
    names = open_workspace(ctx).get_default_keyvault().list_secrets()
    if as_json:
        print_json(names)
    else:
        table([[n["name"]] for n in names], ["secret"])


@secret.command("delete")
@click.argument("name")
@click.pass_context
def secret_delete(ctx: click.Context, name: str) -> None:
    """Delete secret NAME.

    \b
    Example:
      mlws secret delete db-password
    """
    open_workspace(ctx).get_default_keyvault().delete_secret(name)
    click.echo(f"Secret {name!r} deleted")


@secret.command("export-key")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="Write the key to this file (mode 0600) instead of printing it.",
)
@click.pass_context
def secret_export_key(ctx: click.Context, output: str | None) -> None:
    """Export the workspace's key, to share the secrets with a teammate deliberately.

    \b
    Example:
      mlws secret export-key -o team.key
    """
    target = Path(output).absolute() if output else None
    # Checked before export_key(), which makes a key when there is none: a bad -o changes nothing.
    if target is not None and target.is_dir():
        raise click.ClickException(f"{output} is a folder; give a file name such as team.key")
    if target is not None and not target.parent.is_dir():
        raise click.ClickException(
            f"folder {target.parent} does not exist; create it first or give another -o"
        )
    key = open_workspace(ctx).get_default_keyvault().export_key()
    if target is not None:
        from ..keyvault import write_private

        write_private(target, key.encode() + b"\n")
        click.echo(f"Key written to {output}")
    else:
        click.echo(key)


@secret.command("import-key")
@click.argument("key_file", type=click.File("rb"))
@click.pass_context
def secret_import_key(ctx: click.Context, key_file: Any) -> None:
    """Install the workspace's key from KEY_FILE ('-' for standard input).

    \b
    Example:
      mlws secret import-key team.key
    """
    # Bytes, decoded here: a binary file is a wrong key, not a UnicodeDecodeError.
    try:
        text = key_file.read().decode("ascii")
    except UnicodeDecodeError:
        raise click.ClickException(
            f"{key_file.name} is not a key file (a key is 44 url-safe base64 characters)"
        ) from None
    open_workspace(ctx).get_default_keyvault().import_key(text)
    click.echo("Key imported")
