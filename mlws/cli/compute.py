"""``mlws compute ...``: compute targets (local, ssh hosts, Dask clusters)."""

from __future__ import annotations

from typing import Any

import click

from .common import CONTEXT, open_workspace, print_json, table


@click.group(context_settings=CONTEXT)
def compute() -> None:
    """Create, attach, inspect and delete compute targets."""


def _summary(t: Any) -> str:
    c = t.config
    if t.type == "local":
        from ..compute import local

        return f"{local.max_concurrent_runs(t.workspace)} concurrent runs on this machine"
    if t.type == "ssh":
        n = len(c["nodes"])
        return f"{n} host{'s' if n != 1 else ''}, {c['maxConcurrentRunsPerNode']} run(s) each, python {c['python']}"
    if t.type == "dask":
        if c.get("scheduler"):
            return f"scheduler {c['scheduler']}"
        return f"local cluster, {c['minNodes']}-{c['maxNodes']} workers"
    return ""


def _as_dict(t: Any) -> dict[str, Any]:
    return {**t.serialize(), "status": t.get_status(), "nodes": t.nodes()}


@compute.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def compute_list(ctx: click.Context, as_json: bool) -> None:
    """List the workspace's compute targets.

    \b
    Example:
      mlws compute list
    """
    from ..compute import ComputeTarget

    targets = ComputeTarget.list(open_workspace(ctx))
    if as_json:
        print_json([t.serialize() for t in targets])
        return
    table([[t.name, t.type, _summary(t)] for t in targets], ["target", "type", "settings"])


@compute.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def compute_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a compute target: type, settings, status and nodes.

    \b
    Example:
      mlws compute show lab
    """
    from ..compute import ComputeTarget

    t = ComputeTarget(open_workspace(ctx), name)
    data = _as_dict(t)
    if as_json:
        print_json(data)
        return
    click.echo(f"{t.name} ({t.type}): {t.get_status()}")
    click.echo(f"  {_summary(t)}")
    for node in data["nodes"]:
        click.echo(f"  node {node}")


@compute.command("create")
@click.argument("name")
@click.option("--min-nodes", default=0, show_default=True, help="Workers kept when idle.")
@click.option("--max-nodes", default=4, show_default=True, help="Workers at most (adaptive).")
@click.option(
    "--idle-seconds",
    default=1800,
    show_default=True,
    help="Stop the local cluster after this long without runs.",
)
@click.option("--threads-per-worker", default=1, show_default=True)
@click.pass_context
def compute_create(
    ctx: click.Context,
    name: str,
    min_nodes: int,
    max_nodes: int,
    idle_seconds: int,
    threads_per_worker: int,
) -> None:
    """Create a Dask cluster target (Azure's AmlCompute) that starts on this machine when a
    run needs it and scales between --min-nodes and --max-nodes workers.

    \b
    Example:
      mlws compute create cpu-cluster --min-nodes 0 --max-nodes 4
      mlws run submit train.py -t cpu-cluster
    """
    from ..compute import ComputeTarget
    from ..compute.dask import AmlCompute

    config = AmlCompute.provisioning_configuration(
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        idle_seconds_before_scaledown=idle_seconds,
        threads_per_worker=threads_per_worker,
    )
    t = ComputeTarget.create(open_workspace(ctx), name, config)
    click.echo(f"Created compute target {t.name!r} (dask: {_summary(t)})")


@compute.command("attach")
@click.argument("name")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="An ssh host: host, host:port or user@host:port (repeat for several nodes).",
)
@click.option("--port", default=22, show_default=True, help="ssh port of hosts given without one.")
@click.option("--user", help="Login name of hosts given without one.")
@click.option(
    "--key", "key_file", type=click.Path(), help="Private key file (stored in the key vault)."
)
@click.option("--ask-passphrase", is_flag=True, help="Prompt for the key's passphrase.")
@click.option("--python", "python_path", default="/usr/bin/python3", show_default=True,
              help="Python on the hosts, by absolute path.")  # fmt: skip
@click.option("--work-dir", default=".mlws", show_default=True, help="Run folder on the hosts.")
@click.option("--max-concurrent-runs", default=1, show_default=True, help="Runs at once per host.")
@click.option("-o", "--ssh-option", "ssh_options", multiple=True, help="Extra ssh -o option.")
@click.option("--no-check", is_flag=True, help="Do not connect to the hosts first.")
@click.option("--scheduler", help="Attach an existing Dask scheduler instead (tcp://host:8786).")
@click.pass_context
def compute_attach(
    ctx: click.Context,
    name: str,
    hosts: tuple[str, ...],
    port: int,
    user: str | None,
    key_file: str | None,
    ask_passphrase: bool,
    python_path: str,
    work_dir: str,
    max_concurrent_runs: int,
    ssh_options: tuple[str, ...],
    no_check: bool,
    scheduler: str | None,
) -> None:
    """Attach ssh hosts (Azure's RemoteCompute) or an existing Dask scheduler as target NAME.

    \b
    Example:
      mlws compute attach lab --host gpu1 --host gpu2:2222 --user me --key ~/.ssh/id_ed25519
      mlws compute attach shared-dask --scheduler tcp://10.0.0.5:8786
    """
    from ..compute import ComputeTarget

    if bool(hosts) == bool(scheduler):
        raise click.UsageError("give --host (ssh hosts) or --scheduler (a Dask scheduler)")
    if scheduler:
        from ..compute.dask import DaskCompute

        config = DaskCompute.attach_configuration(scheduler)
    else:
        from ..compute.ssh import RemoteCompute

        passphrase = click.prompt("Passphrase", hide_input=True) if ask_passphrase else None
        config = RemoteCompute.attach_configuration(
            ssh_port=port,
            username=user,
            private_key_file=key_file,
            private_key_passphrase=passphrase,
            hosts=list(hosts),
            python_path=python_path,
            work_dir=work_dir,
            max_concurrent_runs=max_concurrent_runs,
            ssh_options=list(ssh_options),
            check=not no_check,
        )
    t = ComputeTarget.attach(open_workspace(ctx), name, config)
    click.echo(f"Attached compute target {t.name!r} ({t.type}: {_summary(t)})")


@compute.command("delete")
@click.argument("name")
@click.pass_context
def compute_delete(ctx: click.Context, name: str) -> None:
    """Delete (detach) a compute target and its stored credentials; refused while runs on it
    are active.

    \b
    Example:
      mlws compute delete lab
    """
    from ..compute import ComputeTarget

    ComputeTarget(open_workspace(ctx), name).delete()
    click.echo(f"Deleted compute target {name!r}")


@compute.command("stop")
@click.argument("name")
@click.pass_context
def compute_stop(ctx: click.Context, name: str) -> None:
    """Stop this machine's local Dask cluster of target NAME (the next run starts it again).

    \b
    Example:
      mlws compute stop cpu-cluster
    """
    from ..compute.dask import AmlCompute

    stopped = AmlCompute(open_workspace(ctx), name).stop()
    click.echo(
        f"Stopped the cluster of {name!r}" if stopped else f"No cluster of {name!r} is running"
    )
