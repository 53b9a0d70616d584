"""``mlws run ...``: submit, watch, query and download runs."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import (
    CONTEXT,
    duration,
    key_values,
    open_workspace,
    print_json,
    progress_bar,
    table,
    when,
)


@click.group(context_settings=CONTEXT)
def run() -> None:
    """Submit, watch and query runs."""


@run.command("submit", context_settings={"ignore_unknown_options": True, **CONTEXT})
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "-e", "--experiment", "exp_name", default="default", show_default=True, help="Experiment name."
)
@click.option(
    "-d",
    "--source-directory",
    default=".",
    show_default=True,
    help="Folder captured as the run's snapshot.",
)
@click.option("-t", "--target", default="local", show_default=True, help="Compute target.")
@click.option(
    "--environment", "env_name", help="A registered environment (default: the current interpreter)."
)
@click.option("--tag", "tags", multiple=True, help="Tag key=value (repeatable).")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=DATASET[:VERSION][@MODE]",
    help="A registered dataset as input NAME (MODE mount, the default, download or direct);"
    " '{input:NAME}' in ARGS becomes its path (repeatable).",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="NAME[=DATASTORE:PATH]",
    help="An output folder, uploaded to PATH on DATASTORE when the run completes ('{run-id}'"
    " is filled in); '{output:NAME}' in ARGS becomes its path (repeatable).",
)
@click.option(
    "--register-output",
    "registers",
    multiple=True,
    metavar="NAME=DATASET",
    help="Register output NAME as the next version of DATASET when the run completes.",
)
@click.option("--wait", is_flag=True, help="Stream the output and wait for the run to end.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only the run id (for scripts: ID=$(mlws run submit -q ...)).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def run_submit(
    ctx: click.Context,
    script: str,
    args: tuple[str, ...],
    exp_name: str,
    source_directory: str,
    target: str,
    env_name: str | None,
    tags: tuple[str, ...],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    registers: tuple[str, ...],
    wait: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Submit SCRIPT (relative to the source directory) with ARGS after '--'.

    Returns at once; the run goes on in the background.

    \b
    Example:
      mlws run submit train.py -e demo -- --alpha 0.5
      mlws run submit train.py -e demo --wait -- --alpha 0.1
      mlws run submit train.py --environment sklearn -- --alpha 0.1
      mlws run submit prep.py --input raw=iris:1 --output clean \\
          --register-output clean=iris_clean -- --data {input:raw} --out {output:clean}
    """
    from ..compute import target_config
    from ..experiments import Experiment, check_experiment_name
    from ..runconfig import ScriptRunConfig
    from .datasets import data_arguments

    tag_values = key_values(
        tags
    )  # before anything is opened or created: a bad --tag changes nothing
    ws = open_workspace(ctx)
    cfg = ScriptRunConfig(
        source_directory=source_directory,
        script=script,
        arguments=data_arguments(ws, args, inputs, outputs, registers),
        compute_target=target,
    )
    if env_name:
        from ..environments import Environment

        # looked up now, before the experiment is created: an unknown name changes nothing
        cfg.run_config.environment = Environment.get(ws, env_name)
    # Check everything before the experiment is created: bad input changes nothing.
    cfg.validate()
    check_experiment_name(exp_name)
    if ws.remote is None:  # a remote workspace's server checks its own targets
        target_config(ws, target)
    # A bar only for a snapshot with many files to read: most submits read a few, or none.
    with progress_bar("Snapshot", as_json=as_json or quiet, min_total=500) as progress:
        r = Experiment(ws, exp_name).submit(cfg, tags=tag_values or None, progress=progress)
    if quiet:
        click.echo(r.id)
    elif as_json:
        print_json(
            {"id": r.id, "experiment": exp_name, "number": r.number, "status": r.get_status()}
        )
    else:
        click.echo(f"Submitted run {r.id} (experiment {exp_name}, number {r.number})")
    if wait:
        details = r.wait_for_completion(show_output=not (as_json or quiet), raise_on_error=False)
        if details["status"] != "Completed":
            msg = details.get("error", {}).get("error", {}).get("message", "")
            raise click.ClickException(f"run {r.id} ended {details['status']}: {msg}")


def _run_dict(row: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "experiment": row["experiment"],
        "number": row["number"],
        "display_name": row["display_name"],
        "type": row["type"],
        "status": row["status"],
        "parent_id": row["parent_id"],
        "created": row["created"],
        "start_time": row["start_time"],
        "end_time": row["end_time"],
        "metrics": metrics,
    }


@run.command("list")
@click.option("-e", "--experiment", "exp_name", help="Only runs of this experiment.")
@click.option("--status", help="Only runs in this status (e.g. Completed, Failed, Running).")
@click.option(
    "--tag", "tags", multiple=True, help="Only runs with tag key=value (or just key); repeatable."
)
@click.option(
    "--sort-by",
    default=None,
    help="created (default), number, status, end_time, duration, id, display_name, target,"
    " submitter_user, metric:NAME, tag:KEY or property:KEY.",
)
@click.option("--ascending", is_flag=True, help="Sort ascending (default: descending).")
@click.option("--include-children", is_flag=True, help="List child runs too.")
@click.option(
    "--parent",
    "parent_id",
    help="Only the children of this run (a sweep's trials, with their hyperparameters).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="At most this many runs.",
)
@click.option("--all", "show_all", is_flag=True, help="Every matching run (no limit).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def run_list(
    ctx: click.Context,
    exp_name: str | None,
    status: str | None,
    tags: tuple[str, ...],
    sort_by: str | None,
    ascending: bool,
    include_children: bool,
    parent_id: str | None,
    limit: int,
    show_all: bool,
    as_json: bool,
) -> None:
    """List runs with their latest metric values (the first 100 unless --limit or --all).

    \b
    Example:
      mlws run list -e demo --sort-by metric:r2
      mlws run list --status Failed --json
      mlws run list --parent HD_0123 --sort-by metric:accuracy
    """
    from ..experiments import check_experiment_name, query_runs
    from ..metrics import latest_scalars

    ws = open_workspace(ctx)
    if exp_name is not None:
        check_experiment_name(exp_name)
    tag_filter: dict[str, str | None] = {}
    for t in tags:
        k, sep, v = t.partition("=")
        tag_filter[k] = v if sep else None
    rows = query_runs(
        ws,
        experiment=exp_name,
        tags=tag_filter or None,
        status=status,
        include_children=include_children,
        parent=parent_id,
        sort_by=sort_by,
        ascending=ascending,
        limit=None if show_all else limit + 1,
    )
    truncated = not show_all and len(rows) > limit
    rows = rows if show_all else rows[:limit]
    summary = latest_scalars(ws.catalog, {r["seq"]: r["id"] for r in rows})
    hps: dict[str, dict[str, Any]] = {}
    if any(r["parent_id"] for r in rows):  # trials of a sweep show their hyperparameters
        from ..hyperdrive.run import trial_hyperparameters

        hps = trial_hyperparameters(ws, {r["seq"]: r["id"] for r in rows})
    if as_json:
        print_json(
            [
                {
                    **_run_dict(r, summary[r["id"]]),
                    **({"hyperparameters": hps[r["id"]]} if r["id"] in hps else {}),
                }
                for r in rows
            ]
        )
        return
    hp_names = list(dict.fromkeys(n for h in hps.values() for n in h))
    names: list[str] = []
    if sort_by and sort_by.startswith("metric:"):
        names.append(sort_by[len("metric:") :])
    for r in rows:
        for n in summary[r["id"]]:
            if n not in names and len(names) < 4:
                names.append(n)
    cells = [
        [
            r["id"],
            r["experiment"],
            r["number"],
            r["status"],
            when(r["created"]),
            duration(r["start_time"], r["end_time"]),
        ]
        + [hps.get(r["id"], {}).get(n, "") for n in hp_names]
        + [summary[r["id"]].get(n, "") for n in names]
        for r in rows
    ]
    headers = ["run id", "experiment", "#", "status", "created", "duration"]
    table(cells, headers + [n.lstrip("-") for n in hp_names] + names)
    if truncated:
        click.echo(f"(first {limit} runs shown; --limit N or --all for more)", err=True)


def _argument_text(a: Any) -> str:
    """One stored run argument as ``mlws run submit`` takes it: data placeholders
    (``{"mlwsInput": name}``) as ``{input:name}``."""
    if isinstance(a, dict):
        if "mlwsInput" in a:
            return f"{{input:{a['mlwsInput']}}}"
        if "mlwsOutput" in a:
            return f"{{output:{a['mlwsOutput']}}}"
        return json.dumps(a, sort_keys=True)
    return str(a)


@run.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (v1 get_details() shape).")
@click.pass_context
def run_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show a run: status, times, definition, tags, properties, metrics, files; for a
    pipeline run, its steps too (what each waits for, its state, the run it reused).

    \b
    Example:
      mlws run show demo_1764000000_ab12cd34
    """
    from ..pipelines.run import PipelineRun
    from ..runs import Run

    ws = open_workspace(ctx)
    r = ws.get_run(run_id)
    d = r.get_details()
    steps = r.step_summary() if isinstance(r, PipelineRun) else None
    if as_json:
        d["metrics"] = Run.get_metrics(r)  # its own: a sweep's get_metrics() is its trials'
        d["files"] = r.get_file_names()
        if steps is not None:
            d["steps"] = steps
        print_json(d)
        return
    rows = [
        ["run id", d["runId"]],
        ["experiment", d["experimentName"]],
        ["number", d["number"]],
        ["type", d["runType"]],
        ["status", d["status"]],
        ["target", d["target"]],
        ["created", d["createdTimeUtc"]],
        ["started", d["startTimeUtc"]],
        ["ended", d["endTimeUtc"]],
    ]
    rd = d["runDefinition"]
    if rd.get("script") or rd.get("command"):
        words = [rd.get("script") or str(rd.get("command"))]
        words += [_argument_text(a) for a in rd.get("arguments") or []]
        rows.append(["command", " ".join(words)])
    if d.get("error"):
        rows.append(["error", d["error"]["error"].get("message")])
    for k, v in d["tags"].items():
        rows.append([f"tag {k}", v])
    for k, v in d["properties"].items():
        rows.append([f"property {k}", v])
    for k, v in Run.get_metrics(r).items():
        text = json.dumps(v, default=str)
        rows.append([f"metric {k}", text if len(text) < 80 else text[:77] + "..."])
    for f in r.get_file_names():
        rows.append(["file", f])
    table(rows, ["field", "value"])
    if steps is not None:  # a pipeline: its graph, upstream first, with each step's fate
        click.echo()
        table(
            [
                [
                    s["name"],
                    ", ".join(s["upstream"]) or "-",
                    s["status"],
                    s["run_id"] or "-",
                    s["reused_from"] or "",
                ]
                for s in steps
            ],
            ["step", "after", "status", "step run", "reused from"],
        )


@run.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the run ends.")
@click.option(
    "--file", "name", default="logs/driver.log", show_default=True, help="Which log file."
)
@click.pass_context
def run_logs(ctx: click.Context, run_id: str, follow: bool, name: str) -> None:
    """Print a run's output (stdout and stderr of its script).

    \b
    Example:
      mlws run logs -f demo_1764000000_ab12cd34
    """
    ws = open_workspace(ctx)
    r = ws.get_run(run_id)
    for chunk in r.iter_log(name, follow=follow):
        click.echo(chunk, nl=False)
        sys.stdout.flush()


@run.command("metrics")
@click.argument("run_id")
@click.option("--name", help="Only this metric.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (v1 get_metrics() shape).")
@click.pass_context
def run_metrics(ctx: click.Context, run_id: str, name: str | None, as_json: bool) -> None:
    """Print a run's metrics.

    \b
    Example:
      mlws run metrics demo_1764000000_ab12cd34 --json
    """
    from ..runs import Run

    ws = open_workspace(ctx)
    m = Run.get_metrics(ws.get_run(run_id), name=name)  # its own, a sweep's too
    if as_json:
        print_json(m)
        return
    table(
        [
            [k, json.dumps(v, default=str) if not isinstance(v, (int, float, str)) else v]
            for k, v in m.items()
        ],
        ["metric", "value"],
    )


@run.command("cancel")
@click.argument("run_id")
@click.pass_context
def run_cancel(ctx: click.Context, run_id: str) -> None:
    """Cancel a run (its processes get SIGTERM, then SIGKILL).

    \b
    Example:
      mlws run cancel demo_1764000000_ab12cd34
    """
    ws = open_workspace(ctx)
    r = ws.get_run(run_id)
    r.cancel()
    click.echo(f"Run {run_id}: {r.get_status()}")


@run.command("download")
@click.argument("run_id")
@click.option("--outputs", "what", flag_value="outputs", help="Only outputs/.")
@click.option(
    "--snapshot", "what", flag_value="snapshot", help="The source snapshot instead of run files."
)
@click.option("--zip", "as_zip", is_flag=True, help="Write a .zip file instead of a folder.")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(),
    default=None,
    help="Target folder (default: ./<run id>).",
)
@click.option("--overwrite", is_flag=True, help="Replace files that are there already.")
@click.pass_context
def run_download(
    ctx: click.Context,
    run_id: str,
    what: str | None,
    as_zip: bool,
    output: str | None,
    overwrite: bool,
) -> None:
    """Download a run's files, outputs or snapshot (each file checked against its hash).

    Files already there are refused unless --overwrite; nothing is written through a symlink
    that leads out of the target.

    \b
    Example:
      mlws run download demo_1764000000_ab12cd34 --outputs -o ./model
      mlws run download demo_1764000000_ab12cd34 --snapshot --zip
    """
    from ..rundownload import download_run

    r = open_workspace(ctx).get_run(run_id)
    with progress_bar("Downloading") as progress:
        done = download_run(
            r, output, what=what, as_zip=as_zip, overwrite=overwrite, progress=progress
        )
    click.echo(f"Downloaded {done.count} file(s) to {done.path}")


@run.command("delete")
@click.argument("run_id")
@click.pass_context
def run_delete(ctx: click.Context, run_id: str) -> None:
    """Delete an ended run and its children: their metrics, files, tags and properties
    (blobs no longer used go at the next 'mlws gc'). Refused for a run that has not ended.

    \b
    Example:
      mlws run delete demo_1764000000_ab12cd34
    """
    ids = open_workspace(ctx).get_run(run_id).delete()
    click.echo(f"Deleted {len(ids)} run(s): {', '.join(ids)}")


@run.command("tag")
@click.argument("run_id")
@click.argument("pairs", nargs=-1, required=True)
@click.pass_context
def run_tag(ctx: click.Context, run_id: str, pairs: tuple[str, ...]) -> None:
    """Set tags (key=value) on a run.

    \b
    Example:
      mlws run tag demo_1764000000_ab12cd34 stage=best owner=ana
    """
    tags = key_values(pairs)
    ws = open_workspace(ctx)
    ws.get_run(run_id).set_tags(tags)
    click.echo(f"Tagged {run_id}: " + ", ".join(f"{k}={v}" for k, v in tags.items()))


@run.command("property")
@click.argument("run_id")
@click.argument("pairs", nargs=-1, required=True)
@click.pass_context
def run_property(ctx: click.Context, run_id: str, pairs: tuple[str, ...]) -> None:
    """Add properties (key=value) to a run. Properties are add-only: a key that is already set
    cannot take another value (use a tag for values that change).

    \b
    Example:
      mlws run property demo_1764000000_ab12cd34 dataset=v3
    """
    props = key_values(pairs)
    ws = open_workspace(ctx)
    ws.get_run(run_id).add_properties(props)
    click.echo(f"Added properties to {run_id}: " + ", ".join(f"{k}={v}" for k, v in props.items()))
