"""``mlws login URL`` and ``mlws remote sync``: a remote workspace's token and offline buffer."""

from __future__ import annotations

import sys

import click

from .common import CONTEXT, stdin_text


@click.command("login", context_settings=CONTEXT)
@click.argument("url")
@click.pass_context
def login(ctx: click.Context, url: str) -> None:
    """Check a token with the workspace server at URL and remember it for this user (in
    ~/.config/mlws/tokens.json, 0600; never in the project folder). The token is read from
    standard input, or asked for on a terminal.

    \b
    Example:
      mlws login https://lab:8787
      echo "$TOKEN" | mlws login http://127.0.0.1:8787
    """
    from ..remote.client import normalize_url, save_token
    from ..workspace import Workspace

    url = normalize_url(url)
    if sys.stdin.isatty():
        token = click.prompt("Token", hide_input=True)
    else:
        token = stdin_text("the token")
    token = token.strip()
    with Workspace(url, token=token) as ws:  # a wrong token is refused here, nothing saved
        user = ws.info["user"]
    path = save_token(url, token)
    click.echo(f"Logged in to {url} as {user['name']} ({user['role']}); token kept in {path}")


@click.group(context_settings=CONTEXT)
def remote() -> None:
    """Remote workspaces: what this machine holds for their servers."""


@remote.command("sync", context_settings=CONTEXT)
def remote_sync() -> None:
    """Deliver the writes this machine buffered while a workspace server was away (metrics,
    tags, outcomes of runs), in the order they were made.

    \b
    Example:
      mlws remote sync
    """
    from ..remote.spool import sync

    def show(url: str, run_id: str, done: bool) -> None:
        click.echo(f"{url} {run_id}: {'delivered' if done else 'server away, kept'}")

    counts = sync(progress=show)
    click.echo(f"{counts['delivered']} run(s) delivered, {counts['waiting']} waiting")
