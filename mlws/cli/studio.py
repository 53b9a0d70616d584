"""``mlws studio``: the studio's web pages over a local workspace, served until Ctrl-C."""

from __future__ import annotations

import click

from .common import CONTEXT, open_workspace


@click.command(context_settings=CONTEXT)
@click.option("-w", "--workspace", help="The workspace folder (default: as for every command).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--open", "open_browser", is_flag=True, help="Open the studio in a web browser.")
@click.pass_context
def studio(
    ctx: click.Context, workspace: str | None, host: str, port: int, open_browser: bool
) -> None:
    """Serve the studio (experiments, runs, run pages with live charts and logs, compare) on
    this machine (a loopback address: it has no sign-in) and print its URL; Ctrl-C or SIGTERM
    ends it. A team's studio, with sign-in, is served by mlws serve.

    \b
    Example:
      mlws studio --port 8765 --open
    """
    from ..studio.serve import StudioServer

    if workspace:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), "workspace": workspace}
    server = StudioServer(open_workspace(ctx), host=host, port=port)
    click.echo(f"mlws studio: {server.url}/  (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url + "/")
    server.serve_forever()
