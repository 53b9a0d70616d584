"""``mlws pipeline ...`` and ``mlws pipeline-endpoint ...``: submit, publish and version
pipelines (a thin layer over :mod:`mlws.pipelines`)."""

from __future__ import annotations

from typing import Any

import click

from .common import CONTEXT, key_values, open_workspace, print_json, status_commands, table, when

_PARAM = click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A pipeline parameter's value (repeatable).",
)
_EXPERIMENT = click.option(
    "-e", "--experiment", "exp_name", default="default", show_default=True, help="Experiment name."
)


@click.group(context_settings=CONTEXT)
def pipeline() -> None:
    """Submit, publish, list and show pipelines."""


def _announce(run: Any, exp_name: str, quiet: bool, as_json: bool, wait: bool) -> None:
    """Print a submitted pipeline run; with ``wait``, follow it and fail unless it completed."""
    if quiet:
        click.echo(run.id)
    elif as_json:
        print_json({"id": run.id, "experiment": exp_name, "status": run.get_status()})
    else:
        click.echo(f"Submitted pipeline run {run.id} (experiment {exp_name})")
    if wait:
        details = run.wait_for_completion(show_output=not (quiet or as_json), raise_on_error=False)
        if details["status"] != "Completed":
            msg = details.get("error", {}).get("error", {}).get("message", "")
            raise click.ClickException(f"pipeline run {run.id} ended {details['status']}: {msg}")


@pipeline.command("submit")
@click.argument("ref")
@_EXPERIMENT
@_PARAM
@click.option("--regenerate-outputs", is_flag=True, help="Run every step (reuse nothing).")
@click.option("--continue-on-step-failure", is_flag=True, help="Let independent branches finish.")
@click.option("--wait", is_flag=True, help="Follow the steps until the pipeline ends.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the pipeline run's id.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def pipeline_submit(
    ctx: click.Context,
    ref: str,
    exp_name: str,
    params: tuple[str, ...],
    regenerate_outputs: bool,
    continue_on_step_failure: bool,
    wait: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Submit a pipeline: REF is FILE.py:OBJ or MODULE:OBJ (a Pipeline, or a function of
    the workspace returning one), or the id of a published pipeline.

    \b
    Example:
      mlws pipeline submit pipeline.py:build -e demo --param k=3 --wait
      mlws pipeline submit 0b6c7f0e-5d3a-4c1e-9f27-2a5e8d9c1b44 -e nightly
    """
    from ..experiments import Experiment, check_experiment_name
    from ..pipelines.loader import is_reference, load_pipeline
    from ..pipelines.published import PublishedPipeline

    values = key_values(params)
    check_experiment_name(exp_name)
    ws = open_workspace(ctx)
    target: Any = load_pipeline(ref, ws) if is_reference(ref) else PublishedPipeline.get(ws, ref)
    # Checked before Experiment() creates the experiment: bad input changes nothing.
    if isinstance(target, PublishedPipeline):
        target.check(values or None)
    else:
        target.validate(values or None)
    run = Experiment(ws, exp_name).submit(
        target,
        pipeline_parameters=values or None,
        continue_on_step_failure=continue_on_step_failure or None,
        regenerate_outputs=regenerate_outputs,
    )
    _announce(run, exp_name, quiet, as_json, wait)


@pipeline.command("publish")
@click.argument("ref")
@click.option("--name", required=True, help="The published pipeline's name.")
@click.option("--description", help="What it does.")
@click.option("--version", "version", help="A version label of your own (free text).")
@click.option(
    "--continue-on-step-failure", is_flag=True, help="Its runs let independent branches finish."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the published pipeline's id.")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@click.pass_context
def pipeline_publish(
    ctx: click.Context,
    ref: str,
    name: str,
    description: str | None,
    version: str | None,
    continue_on_step_failure: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Publish the pipeline REF (FILE.py:OBJ or MODULE:OBJ): freeze its steps and their
    source folders as they are now, under a new id.

    \b
    Example:
      mlws pipeline publish pipeline.py:build --name nightly --version 1.0
    """
    from ..pipelines.loader import load_pipeline
    from ..pipelines.published import check_pipeline_name

    check_pipeline_name(name)
    ws = open_workspace(ctx)
    pp = load_pipeline(ref, ws).publish(
        name, description, version, continue_on_step_failure or None
    )
    if quiet:
        click.echo(pp.id)
    elif as_json:
        print_json(pp.as_dict())
    else:
        click.echo(f"Published pipeline {pp.name!r} as {pp.id} ({pp.total_run_steps} steps)")


@pipeline.command("list")
@click.option("--all", "show_all", is_flag=True, help="Disabled ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pipeline_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List published pipelines, newest first.

    \b
    Example:
      mlws pipeline list --all
    """
    from ..pipelines.published import PublishedPipeline

    ws = open_workspace(ctx)
    found = PublishedPipeline.list(ws, active_only=not show_all)
    if as_json:
        print_json([p.as_dict() for p in found])
        return
    table(
        [
            [p.id, p.name, p.version or "", p.status, p.total_run_steps, when(p.created)]
            for p in found
        ],
        ["id", "name", "version", "status", "steps", "published"],
    )


@pipeline.command("show")
@click.argument("pipeline_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pipeline_show(ctx: click.Context, pipeline_id: str, as_json: bool) -> None:
    """Show a published pipeline: its steps, parameters and state.

    \b
    Example:
      mlws pipeline show 0b6c7f0e-5d3a-4c1e-9f27-2a5e8d9c1b44
    """
    from ..pipelines.published import PublishedPipeline

    ws = open_workspace(ctx)
    d = PublishedPipeline.get(ws, pipeline_id).as_dict()
    if as_json:
        print_json(d)
        return
    rows = [[k, d[k]] for k in ("id", "name", "description", "version", "status")]
    rows.append(["published", when(d["created"])])
    rows += [[f"parameter {k}", v] for k, v in d["parameters"].items()]
    table(rows, ["field", "value"])
    click.echo()
    table(
        [[s["name"], ", ".join(s["upstream"]) or "-", s["target"]] for s in d["steps"]],
        ["step", "after", "target"],
    )


def _published(ws: Any, pipeline_id: str) -> Any:
    from ..pipelines.published import PublishedPipeline

    return PublishedPipeline.get(ws, pipeline_id)


status_commands(
    pipeline,
    "published pipeline",
    "pipeline_id",
    _published,
    "0b6c7f0e-5d3a-4c1e-9f27-2a5e8d9c1b44",
    "submitting it (directly, through an endpoint or a schedule) is refused until it is enabled",
)


# -- endpoints ---------------------------------------------------------------------------------
@click.group("pipeline-endpoint", context_settings=CONTEXT)
def pipeline_endpoint() -> None:
    """Versioned endpoints of published pipelines: create, add versions, set the default,
    submit."""


def _endpoint(ctx: click.Context, name: str) -> Any:
    return _endpoint_by_name(open_workspace(ctx), name)


@pipeline_endpoint.command("create")
@click.argument("name")
@click.argument("pipeline_id")
@click.option("--description", help="What it is for.")
@click.pass_context
def endpoint_create(
    ctx: click.Context, name: str, pipeline_id: str, description: str | None
) -> None:
    """Create the endpoint NAME with the published pipeline PIPELINE_ID as version 0.

    \b
    Example:
      mlws pipeline-endpoint create scoring 0b6c7f0e-5d3a-4c1e-9f27-2a5e8d9c1b44
    """
    from ..pipelines.endpoints import PipelineEndpoint
    from ..pipelines.published import PublishedPipeline

    ws = open_workspace(ctx)
    ep = PipelineEndpoint.publish(ws, name, description, PublishedPipeline.get(ws, pipeline_id))
    click.echo(f"Created pipeline endpoint {ep.name!r} ({ep.id}), default version 0")


@pipeline_endpoint.command("add")
@click.argument("name")
@click.argument("pipeline_id")
@click.option("--default", "make_default", is_flag=True, help="Make the new version the default.")
@click.pass_context
def endpoint_add(ctx: click.Context, name: str, pipeline_id: str, make_default: bool) -> None:
    """Add the published pipeline PIPELINE_ID to endpoint NAME as its next version.

    \b
    Example:
      mlws pipeline-endpoint add scoring 7a1d2c3b-0e4f-4a5b-8c6d-9e0f1a2b3c4d --default
    """
    ep = _endpoint(ctx, name)
    version = ep.add_default(pipeline_id) if make_default else ep.add(pipeline_id)
    click.echo(f"Added version {version} to {ep.name!r} (default version {ep.default_version})")


@pipeline_endpoint.command("set-default")
@click.argument("name")
@click.argument("version")
@click.pass_context
def endpoint_set_default(ctx: click.Context, name: str, version: str) -> None:
    """Make VERSION the default version of endpoint NAME.

    \b
    Example:
      mlws pipeline-endpoint set-default scoring 0
    """
    ep = _endpoint(ctx, name)
    ep.set_default_version(version)
    click.echo(f"Default version of {ep.name!r} is {ep.default_version}")


@pipeline_endpoint.command("list")
@click.option("--all", "show_all", is_flag=True, help="Disabled ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def endpoint_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List pipeline endpoints by name.

    \b
    Example:
      mlws pipeline-endpoint list --json
    """
    from ..pipelines.endpoints import PipelineEndpoint

    found = PipelineEndpoint.list(open_workspace(ctx), active_only=not show_all)
    if as_json:
        print_json([e.as_dict() for e in found])
        return
    table(
        [[e.name, e.status, e.default_version, len(e.list_versions()), e.id] for e in found],
        ["name", "status", "default", "versions", "id"],
    )


@pipeline_endpoint.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def endpoint_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a pipeline endpoint and its versions.

    \b
    Example:
      mlws pipeline-endpoint show scoring
    """
    ep = _endpoint(ctx, name)
    d = ep.as_dict()
    if as_json:
        print_json(d)
        return
    table(
        [[k, d[k]] for k in ("name", "id", "description", "status", "default_version")],
        ["field", "value"],
    )
    click.echo()
    rows = []
    for v in d["versions"]:
        pp = ep.get_pipeline(v["version"])
        mark = "*" if v["version"] == d["default_version"] else ""
        rows.append([v["version"] + mark, pp.id, pp.name, pp.version or "", pp.status])
    table(rows, ["version", "pipeline id", "name", "label", "status"])


@pipeline_endpoint.command("submit")
@click.argument("name")
@_EXPERIMENT
@click.option("--version", "version", help="The version to run (default: the default one).")
@_PARAM
@click.option("--wait", is_flag=True, help="Follow the steps until the pipeline ends.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the pipeline run's id.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def endpoint_submit(
    ctx: click.Context,
    name: str,
    exp_name: str,
    version: str | None,
    params: tuple[str, ...],
    wait: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Submit endpoint NAME's default version (or --version).

    \b
    Example:
      mlws pipeline-endpoint submit scoring -e nightly --version 1 --param k=3
    """
    from ..experiments import check_experiment_name

    values = key_values(params)
    check_experiment_name(exp_name)
    ep = _endpoint(ctx, name)
    run = ep.submit(exp_name, pipeline_parameters=values or None, pipeline_version=version)
    _announce(run, exp_name, quiet, as_json, wait)


def _endpoint_by_name(ws: Any, name: str) -> Any:
    from ..pipelines.endpoints import PipelineEndpoint

    return PipelineEndpoint.get(ws, name=name)


status_commands(
    pipeline_endpoint,
    "pipeline endpoint",
    "name",
    _endpoint_by_name,
    "scoring",
    "submitting it is refused until it is enabled",
)
