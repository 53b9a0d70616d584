"""``mlws serve ...``: serve a workspace to a team over HTTP; its users and tokens."""

from __future__ import annotations

import time

import click

from .common import CONTEXT, open_workspace, print_json, table


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=int, help="Port (0: any free one).")
@click.option("--certfile", type=click.Path(), help="TLS certificate (PEM); with --keyfile.")
@click.option("--keyfile", type=click.Path(), help="TLS private key (PEM).")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP beyond loopback.")
@click.option(
    "--max-request-mb", default=64.0, show_default=True, type=float, help="Largest request body."
)
@click.option(
    "--run-lease-s",
    type=float,
    help="Seconds a run created over HTTP lives without hearing from its client "
    "(default: $MLWS_RUN_LEASE_S or 60; clients heartbeat every 10).",
)
@click.option("--detach", is_flag=True, help="Run in the background; stop with 'mlws serve stop'.")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    certfile: str | None,
    keyfile: str | None,
    insecure: bool,
    max_request_mb: float,
    run_lease_s: float | None,
    detach: bool,
) -> None:
    """Serve the workspace over HTTP (REST API under /api/v1/) until stopped.

    Every request needs a token (mlws serve token create). Beyond loopback, TLS
    (--certfile/--keyfile) or an explicit --insecure is required. SIGTERM or
    Ctrl-C stops it after in-flight requests.

    \b
    Example:
      mlws serve token create alice --role contributor
      mlws serve --port 8787 --detach
      curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8787/api/v1/runs
      mlws serve stop
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..server.leases import lease_seconds
    from ..server.process import (
        check_options,
        exec_server,
        running,
        server_argv,
        start_detached_server,
    )

    if max_request_mb <= 0:
        raise click.BadParameter("must be > 0", param_hint="--max-request-mb")
    check_options(host, port, certfile, keyfile, insecure)
    lease_seconds(run_lease_s)  # a bad lease is refused here, not in the server's log
    ws = open_workspace(ctx)
    other = running(ws)
    if other is not None:
        raise click.ClickException(
            f"a server already serves this workspace at {other['url']} (pid {other['pid']}); "
            "stop it with 'mlws serve stop'"
        )
    argv = server_argv(
        str(ws.path),
        host=host,
        port=port,
        certfile=certfile,
        keyfile=keyfile,
        insecure=insecure,
        max_body=int(max_request_mb * 1024 * 1024),
        run_lease_s=run_lease_s,
    )
    if detach:
        state = start_detached_server(ws, argv)
        click.echo(f"Serving workspace {ws.name!r} at {state['url']} (pid {state['pid']})")
        return
    ws.close()
    exec_server(argv)


@serve.command("stop")
@click.pass_context
def serve_stop(ctx: click.Context) -> None:
    """Stop this workspace's server (in-flight requests finish first).

    \b
    Example:
      mlws serve stop
    """
    from ..server.process import stop

    state = stop(open_workspace(ctx))
    click.echo(f"Stopped the server at {state['url']} (pid {state['pid']})")


@serve.group("token", context_settings=CONTEXT)
def token() -> None:
    """Users of the server: one token each, with a role (reader, contributor, owner)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["reader", "contributor", "owner"]),
    help="reader: read; contributor: also write runs, models, datasets; owner: also tokens, delete, gc.",
)
@click.pass_context
def token_create(ctx: click.Context, name: str, role: str) -> None:
    """Create user NAME and print their token: shown this once, alone on the last line.

    \b
    Example:
      mlws serve token create alice --role contributor
    """
    from ..lifecycle import current_user
    from ..server.auth import create_token

    secret = create_token(open_workspace(ctx), name, role, created_by=current_user())
    click.echo(f"Token for {name!r} ({role}); it is not shown again:")
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List users and their roles (never tokens).

    \b
    Example:
      mlws serve token list
    """
    from ..server.auth import list_tokens

    users = list_tokens(open_workspace(ctx))
    if as_json:
        print_json(users)
        return
    table(
        [
            [
                u["name"],
                u["role"],
                time.strftime("%Y-%m-%d %H:%M", time.localtime(u["created"])),
                u["createdBy"] or "",
            ]
            for u in users
        ],
        ["NAME", "ROLE", "CREATED", "BY"],
    )


@token.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke user NAME's token: refused from the next request on.

    \b
    Example:
      mlws serve token revoke alice
    """
    from ..server.auth import revoke_token

    revoke_token(open_workspace(ctx), name)
    click.echo(f"Token of {name!r} revoked")
