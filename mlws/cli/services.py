"""``mlws model deploy`` and ``mlws service ...``: models served as local HTTP services."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import CONTEXT, open_workspace, print_json, stdin_text, table


def _deploy_config(
    port: int | None, replicas: int | None, no_auth: bool, host: str | None, timeout_ms: int | None
) -> Any:
    from ..serving import LocalWebservice

    kwargs: dict[str, Any] = {"port": port, "replicas": replicas, "auth_enabled": not no_auth}
    if host:
        kwargs["host"] = host
    if timeout_ms:
        kwargs["scoring_timeout_ms"] = timeout_ms
    return LocalWebservice.deploy_configuration(**kwargs)


@click.command("deploy", context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True, metavar="NAME[:VERSION]...")
@click.option("-n", "--name", "service", required=True, help="The service's name.")
@click.option(
    "--entry-script",
    help="The scoring script (init() and run()); none for an MLflow model (served as it is).",
)
@click.option("-d", "--source-dir", default=".", show_default=True, help="Its folder.")
@click.option("--environment", help="A registered environment to run it (default: this Python).")
@click.option("--port", type=int, help="Port (default: a free one).")
@click.option("--replicas", type=int, help="Replica processes sharing the port (default 1).")
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--timeout-ms", type=int, help="Scoring timeout per request (default 60000).")
@click.option("--no-auth", is_flag=True, help="Serve without keys.")
@click.option("--overwrite", is_flag=True, help="Replace a service of that name.")
@click.pass_context
def model_deploy(
    ctx: click.Context,
    refs: tuple[str, ...],
    service: str,
    entry_script: str | None,
    source_dir: str,
    environment: str | None,
    port: int | None,
    replicas: int | None,
    host: str | None,
    timeout_ms: int | None,
    no_auth: bool,
    overwrite: bool,
) -> None:
    """Deploy models as a local HTTP scoring service and wait until it answers. Without
    --entry-script the model is an MLflow model (an MLmodel with a python_function flavour),
    answering Azure's {"data": ...} and MLflow's dataframe_split/inputs payloads.

    \b
    Example:
      mlws model deploy iris:2 -n iris-svc --entry-script score.py --replicas 2
      curl -H "Authorization: Bearer $(mlws service keys iris-svc -q)" \\
           -d '{"data": [[5.1, 3.5, 1.4, 0.2]]}' http://127.0.0.1:PORT/score
      mlws model deploy iris-mlflow -n iris-mlflow-svc
    """
    from ..models import Model
    from ..serving import InferenceConfig
    from .models import get_model

    ws = open_workspace(ctx)
    models = [get_model(ws, r, None) for r in refs]
    svc = Model.deploy(
        ws,
        service,
        models,
        InferenceConfig(entry_script, source_dir if entry_script else None, environment),
        _deploy_config(port, replicas, no_auth, host, timeout_ms),
        overwrite=overwrite,
    )
    svc.wait_for_deployment()
    click.echo(f"Service {svc.name} is Healthy: {svc.scoring_uri}")


@click.group(context_settings=CONTEXT)
def service() -> None:
    """Inspect, call, update and delete deployed services."""


def _svc(ctx: click.Context, name: str) -> Any:
    from ..serving import Webservice

    return Webservice(open_workspace(ctx), name)


@service.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def service_list(ctx: click.Context, as_json: bool) -> None:
    """List services with their state and address.

    \b
    Example:
      mlws service list
    """
    from ..serving import Webservice

    services = Webservice.list(open_workspace(ctx))
    if as_json:
        print_json([s.serialize() for s in services])
        return
    rows = [
        [
            s.name,
            s.state,
            s.scoring_uri or "",
            ", ".join(s.serialize()["models"]),
            s.config.get("replicas"),
        ]
        for s in services
    ]
    table(rows, ["service", "state", "scoring uri", "models", "replicas"])


@service.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def service_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a service: state, addresses, models, settings, last error.

    \b
    Example:
      mlws service show iris-svc
    """
    data = _svc(ctx, name).serialize()
    if as_json:
        print_json(data)
        return
    for k, v in data.items():
        if v is not None:
            click.echo(f"{k}: {v}")


@service.command("logs")
@click.argument("name")
@click.option("-n", "--lines", default=200, show_default=True, help="Last lines of each log.")
@click.pass_context
def service_logs(ctx: click.Context, name: str, lines: int) -> None:
    """Print the supervisor's and the replicas' logs.

    \b
    Example:
      mlws service logs iris-svc -n 50
    """
    click.echo(_svc(ctx, name).get_logs(lines))


@service.command("run")
@click.argument("name")
@click.argument("data", required=False)
@click.pass_context
def service_run(ctx: click.Context, name: str, data: str | None) -> None:
    """Score DATA (JSON; read from stdin when left out) and print the answer.

    \b
    Example:
      mlws service run iris-svc '{"data": [[5.1, 3.5, 1.4, 0.2]]}'
    """
    body = data if data is not None else stdin_text("the data to score")
    click.echo(json.dumps(_svc(ctx, name).run(body)))


@service.command("keys")
@click.argument("name")
@click.option(
    "--regen", type=click.Choice(["Primary", "Secondary"]), help="Replace this key first."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the primary key.")
@click.pass_context
def service_keys(ctx: click.Context, name: str, regen: str | None, quiet: bool) -> None:
    """Print the service's keys (or replace one with --regen).

    \b
    Example:
      mlws service keys iris-svc
      mlws service keys iris-svc --regen Secondary
    """
    svc = _svc(ctx, name)
    if regen:
        svc.regen_key(regen)
    primary, secondary = svc.get_keys()
    if quiet:
        click.echo(primary or "")
        return
    click.echo(f"primary:   {primary}\nsecondary: {secondary}")


@service.command("update")
@click.argument("name")
@click.option(
    "--model", "refs", multiple=True, metavar="NAME[:VERSION]", help="New models (repeatable)."
)
@click.option("--entry-script", help="A new scoring script (with --source-dir).")
@click.option("-d", "--source-dir", default=".", show_default=True)
@click.option("--replicas", type=int, help="A new number of replicas.")
@click.pass_context
def service_update(
    ctx: click.Context,
    name: str,
    refs: tuple[str, ...],
    entry_script: str | None,
    source_dir: str,
    replicas: int | None,
) -> None:
    """Roll a service to new models, code or replica count without dropping a request.

    \b
    Example:
      mlws service update iris-svc --model iris:3
    """
    from ..serving import InferenceConfig, LocalWebservice
    from .models import get_model

    svc = _svc(ctx, name)
    if not (refs or entry_script or replicas):
        raise click.UsageError("give --model, --entry-script or --replicas")
    models = [get_model(svc.workspace, r, None) for r in refs] or None
    inference = InferenceConfig(entry_script, source_dir) if entry_script else None
    deployment = None
    if replicas:
        c = svc.config
        # Everything but the replica count stays as deployed (the host and port cannot change).
        deployment = LocalWebservice.deploy_configuration(
            replicas=replicas,
            host=svc.host,
            auth_enabled=c.get("authEnabled", True),
            autoscale_target_utilization=c.get("targetUtilization", 70),
            idle_seconds_before_scaledown=c.get("idleSecondsBeforeScaledown", 30.0),
            scoring_timeout_ms=c.get("scoringTimeoutMs", 60_000),
            max_request_bytes=c.get("maxRequestBytes", 5 * 1024 * 1024),
            client_timeout_ms=c.get("clientTimeoutMs", 5_000),
            collect_model_data=c.get("collectModelData", False),
        )
    svc.update(models=models, inference_config=inference, deployment_config=deployment)
    click.echo(f"Service {svc.name} updated: {svc.state}")


@service.command("delete")
@click.argument("name")
@click.pass_context
def service_delete(ctx: click.Context, name: str) -> None:
    """Stop a service (in-flight requests finish) and remove it with its keys.

    \b
    Example:
      mlws service delete iris-svc
    """
    _svc(ctx, name).delete()
    click.echo(f"Deleted service {name}")


@service.command("telemetry")
@click.argument("name")
@click.option("--since", type=float, help="Only requests after this many seconds ago.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def service_telemetry(ctx: click.Context, name: str, since: float | None, as_json: bool) -> None:
    """Requests, rate, latency percentiles and error rate of a service.

    \b
    Example:
      mlws service telemetry iris-svc --since 300
    """
    import time

    data = _svc(ctx, name).get_telemetry(time.time() - since if since else None)
    if as_json:
        print_json(data)
        return
    lat = data["latencyMs"]
    click.echo(
        f"requests: {data['requests']}  errors: {data['errors']} ({data['errorRate']:.2%})"
        f"  rate: {data['ratePerSecond'] or 0}/s"
    )
    if lat:
        click.echo(
            f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}"
        )
    if data["byStatus"]:
        click.echo(
            "by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(data["byStatus"].items()))
        )
