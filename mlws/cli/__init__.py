"""The ``mlws`` command line: a thin layer over the library.

Each command finds the workspace, calls one library function and renders the result (a table, or
JSON with ``--json``). Library errors (:class:`mlws.errors.MlwsError`) become one ``Error: ...``
line and exit status 1.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import MlwsError


class _Group(click.Group):
    """Turns every library error raised below into a one-line ``Error:`` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlwsError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            # A path the user gave that the system refuses (too long, not a folder, no
            # permission, a read-only share, a full disk): their situation, not a bug. An
            # OSError about no path, of another kind, keeps its traceback.
            user_side = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
            if e.filename is None and e.errno not in user_side:
                raise
            raise click.ClickException(_os_error_line(e)) from None


def _os_error_line(e: OSError) -> str:
    def shown(name: Any) -> str:
        text = os.fsdecode(name) if isinstance(name, (str, bytes)) else str(name)
        return repr(text) if len(text) <= 80 else f"{text[:60]!r}... ({len(text)} characters)"

    if e.filename is None:
        return e.strerror or type(e).__name__
    where = shown(e.filename) + (f" -> {shown(e.filename2)}" if e.filename2 else "")
    return f"{e.strerror or type(e).__name__}: {where}"


def _open(ctx: click.Context) -> Any:
    from ..workspace import Workspace, find_workspace_path

    obj = ctx.find_root().obj or {}
    path, create = find_workspace_path(obj.get("workspace"))
    ws = Workspace._open_or_create(path) if create else Workspace(path)
    ctx.call_on_close(ws.close)
    return ws


def _when(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _duration(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    secs = (end or time.time()) - start
    if secs < 60:
        return f"{secs:.1f}s"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _table(rows: list[list[Any]], headers: list[str]) -> None:
    from tabulate import tabulate

    click.echo(
        tabulate(rows, headers=headers, tablefmt="simple", floatfmt=".4g") if rows else "(none)"
    )


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _stdin_text(what: str) -> str:
    """Standard input as UTF-8 text; anything else is one ``Error:`` line, not a
    UnicodeDecodeError (or a value that cannot be stored)."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text stream put in place by the caller
        return sys.stdin.read()
    data = binary.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{what} on standard input is not UTF-8 text") from None


def _kv(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise click.BadParameter(f"expected key=value, got {p!r}")
        k, v = p.split("=", 1)
        if not k.strip():
            raise click.BadParameter(f"expected key=value with a non-empty key, got {p!r}")
        out[k] = v
    return out


CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="mlws")
@click.option(
    "-w",
    "--workspace",
    type=click.Path(),
    envvar=None,
    help="Workspace folder (default: discovered, see README).",
)
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """mlws: the Azure ML v1 workspace on your own disk.

    \b
    Example:
      mlws run submit train.py -e demo -- --alpha 0.5
      mlws run list -e demo --sort-by metric:r2
    """
    ctx.obj = {"workspace": workspace}


# -- workspace -----------------------------------------------------------------------------------
@cli.group(cls=_Group, context_settings=CONTEXT)
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
            _json(ws.get_details())
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
    ws = _open(ctx)
    details = ws.get_details()
    if as_json:
        _json(details)
    else:
        shown = {**details, "created": _when(details["created"])}
        _table([[k, v] for k, v in shown.items()], ["field", "value"])


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
    ws = _open(ctx)
    if ws.release_writer_lease():
        click.echo(f"This machine no longer writes workspace {ws.name!r}")
    else:
        click.echo(f"This machine was not writing workspace {ws.name!r}; nothing to release")


# -- experiments -----------------------------------------------------------------------------------
@cli.group(cls=_Group, context_settings=CONTEXT)
def experiment() -> None:
    """List experiments."""


@experiment.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def experiment_list(ctx: click.Context, as_json: bool) -> None:
    """List experiments with their run counts.

    \b
    Example:
      mlws experiment list
    """
    from ..experiments import experiment_summaries

    rows = experiment_summaries(_open(ctx))
    if as_json:
        _json([dict(r) for r in rows])
    else:
        _table(
            [[r["name"], r["runs"], _when(r["last_run"]), _when(r["created"])] for r in rows],
            ["experiment", "runs", "last run", "created"],
        )


# -- runs ------------------------------------------------------------------------------------------
@cli.group(cls=_Group, context_settings=CONTEXT)
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

    tag_values = _kv(tags)  # before anything is opened or created: a bad --tag changes nothing
    ws = _open(ctx)
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
    target_config(ws, target)
    r = Experiment(ws, exp_name).submit(cfg, tags=tag_values or None)
    if quiet:
        click.echo(r.id)
    elif as_json:
        _json({"id": r.id, "experiment": exp_name, "number": r.number, "status": r.get_status()})
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
    "--sort-by", default=None, help="created (default), number, status, end_time, or metric:NAME."
)
@click.option("--ascending", is_flag=True, help="Sort ascending (default: descending).")
@click.option("--include-children", is_flag=True, help="List child runs too.")
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
    limit: int,
    show_all: bool,
    as_json: bool,
) -> None:
    """List runs with their latest metric values (the first 100 unless --limit or --all).

    \b
    Example:
      mlws run list -e demo --sort-by metric:r2
      mlws run list --status Failed --json
    """
    from ..experiments import check_experiment_name, query_runs
    from ..metrics import latest_scalars

    ws = _open(ctx)
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
        sort_by=sort_by,
        ascending=ascending,
        limit=None if show_all else limit + 1,
    )
    truncated = not show_all and len(rows) > limit
    rows = rows if show_all else rows[:limit]
    summary = latest_scalars(ws.catalog, {r["seq"]: r["id"] for r in rows})
    if as_json:
        _json([_run_dict(r, summary[r["id"]]) for r in rows])
        return
    names: list[str] = []
    if sort_by and sort_by.startswith("metric:"):
        names.append(sort_by[len("metric:") :])
    for r in rows:
        for n in summary[r["id"]]:
            if n not in names and len(names) < 4:
                names.append(n)
    table = [
        [
            r["id"],
            r["experiment"],
            r["number"],
            r["status"],
            _when(r["created"]),
            _duration(r["start_time"], r["end_time"]),
        ]
        + [summary[r["id"]].get(n, "") for n in names]
        for r in rows
    ]
    _table(table, ["run id", "experiment", "#", "status", "created", "duration", *names])
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
    """Show a run: status, times, definition, tags, properties, metrics, files.

    \b
    Example:
      mlws run show demo_1764000000_ab12cd34
    """
    ws = _open(ctx)
    r = ws.get_run(run_id)
    d = r.get_details()
    if as_json:
        d["metrics"] = r.get_metrics()
        d["files"] = r.get_file_names()
        _json(d)
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
    for k, v in r.get_metrics().items():
        text = json.dumps(v, default=str)
        rows.append([f"metric {k}", text if len(text) < 80 else text[:77] + "..."])
    for f in r.get_file_names():
        rows.append(["file", f])
    _table(rows, ["field", "value"])


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
    ws = _open(ctx)
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
    ws = _open(ctx)
    m = ws.get_run(run_id).get_metrics(name=name)
    if as_json:
        _json(m)
        return
    _table(
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
    ws = _open(ctx)
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
    import shutil
    import tempfile

    from ..blobs import copy_file, plan_writes

    ws = _open(ctx)
    r = ws.get_run(run_id)
    target = Path(output or (f"{run_id}-snapshot" if what == "snapshot" else run_id))

    def fetch(into: Path, replace: bool) -> int:
        if what == "snapshot":
            r.restore_snapshot(into, overwrite=replace)
            return sum(1 for p in into.rglob("*") if p.is_file())
        prefix = "outputs" if what == "outputs" else None
        files = r.download_files(prefix, into, overwrite=replace, _validate_checksum=True)
        return len(files)

    if not as_zip:
        count = fetch(target, overwrite)
        click.echo(f"Downloaded {count} file(s) to {target}")
        return
    whole = Path(os.path.abspath(target))  # "-o ." names the current folder
    dest = whole.with_name(whole.name + ".zip")
    [dest] = plan_writes(dest.parent, [dest.name], overwrite=overwrite, flag="--overwrite")
    staging = Path(tempfile.mkdtemp(prefix=".mlws-download-"))
    try:
        count = fetch(staging / "files", False)
        archive = shutil.make_archive(str(staging / "archive"), "zip", staging / "files")
        copy_file(archive, dest)  # a link at dest is replaced, never written through
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    click.echo(f"Downloaded {count} file(s) to {dest}")


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
    ids = _open(ctx).get_run(run_id).delete()
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
    tags = _kv(pairs)
    ws = _open(ctx)
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
    props = _kv(pairs)
    ws = _open(ctx)
    ws.get_run(run_id).add_properties(props)
    click.echo(f"Added properties to {run_id}: " + ", ".join(f"{k}={v}" for k, v in props.items()))


# -- environments ----------------------------------------------------------------------------------
@cli.group(cls=_Group, context_settings=CONTEXT)
def environment() -> None:
    """Register, inspect and build environments."""


@environment.command("create")
@click.argument("name")
@click.option(
    "-r", "--requirements", type=click.Path(), help="A pip requirements file (managed environment)."
)
@click.option(
    "--conda-file", type=click.Path(), help="A conda environment.yml; its pip part is installed."
)
@click.option(
    "--pip",
    "pip_packages",
    multiple=True,
    help="A pip requirement (repeatable; managed environment).",
)
@click.option(
    "--python-version", help="Python version of a managed environment (needs pythonX.Y on PATH)."
)
@click.option(
    "--interpreter", type=click.Path(), help="Use this interpreter as it is (user-managed)."
)
@click.option(
    "--env",
    "variables",
    multiple=True,
    help="Environment variable KEY=VALUE for runs (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def environment_create(
    ctx: click.Context,
    name: str,
    requirements: str | None,
    conda_file: str | None,
    pip_packages: tuple[str, ...],
    python_version: str | None,
    interpreter: str | None,
    variables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register environment NAME (a new version when its definition changed).

    \b
    Example:
      mlws environment create sklearn -r requirements.txt
      mlws environment create tab --pip tabulate --pip six
    """
    from ..environments import CondaDependencies, Environment

    if requirements and conda_file:
        raise click.UsageError("give --requirements or --conda-file, not both")
    if requirements:
        env = Environment.from_pip_requirements(name, requirements)
    elif conda_file:
        env = Environment.from_conda_specification(name, conda_file)
    else:
        env = Environment(name)
    if pip_packages or python_version:
        env.python.user_managed_dependencies = False
        deps = (
            env.python.conda_dependencies if (requirements or conda_file) else CondaDependencies()
        )
        for p in pip_packages:
            deps.add_pip_package(p)
        if python_version:
            deps.python_version = python_version
        env.python.conda_dependencies = deps
    if interpreter:
        if env.managed:
            raise click.UsageError(
                "--interpreter is for user-managed environments; drop the package options"
            )
        env.python.interpreter_path = str(Path(interpreter).absolute())
    env.environment_variables = _kv(variables)
    env.register(_open(ctx))
    if as_json:
        _json(env.to_dict())
    else:
        kind = "managed" if env.managed else "user-managed"
        click.echo(f"Registered environment {env.name!r} version {env.version} ({kind})")


@environment.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def environment_list(ctx: click.Context, as_json: bool) -> None:
    """List registered environments (latest versions).

    \b
    Example:
      mlws environment list
    """
    from ..environments import Environment

    envs = Environment.list(_open(ctx))
    if as_json:
        _json([e.to_dict() for e in envs.values()])
        return
    rows = []
    for e in envs.values():
        deps = e.python.conda_dependencies
        what = (
            ", ".join(deps.pip_packages)
            if e.managed
            else (e.python.interpreter_path or "current interpreter")
        )
        rows.append([e.name, e.version, "managed" if e.managed else "user-managed", what])
    _table(rows, ["environment", "version", "kind", "packages / interpreter"])


@environment.command("show")
@click.argument("name")
@click.option("--version", "version", help="A version (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def environment_show(ctx: click.Context, name: str, version: str | None, as_json: bool) -> None:
    """Show an environment's definition and where it is built on this machine.

    \b
    Example:
      mlws environment show sklearn --json
    """
    from ..environments import Environment, envs_dir

    ws = _open(ctx)
    env = Environment.get(ws, name, version)
    data = env.to_dict()
    if env.managed:
        built = envs_dir() / env.spec_hash()
        data["build"] = {
            "specHash": env.spec_hash(),
            "path": str(built),
            "built": (built / ".mlws-complete").exists(),
        }
    if as_json:
        _json(data)
    else:
        click.echo(json.dumps(data, indent=2))


@environment.command("build")
@click.argument("name")
@click.option("--version", "version", help="A version (default: the latest).")
@click.pass_context
def environment_build(ctx: click.Context, name: str, version: str | None) -> None:
    """Build environment NAME on this machine now (runs reuse it), printing its interpreter.

    \b
    Example:
      mlws environment build sklearn
    """
    from ..environments import Environment

    ws = _open(ctx)
    env = Environment.get(ws, name, version)
    python = env.build(ws, log=sys.stderr)
    click.echo(f"Environment {name!r} version {env.version}: {python}")


# -- secrets ---------------------------------------------------------------------------------------
@cli.group(cls=_Group, context_settings=CONTEXT)
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
        value = _stdin_text("the secret's value").rstrip("\n")
    _open(ctx).get_default_keyvault().set_secret(name, value)
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
    click.echo(_open(ctx).get_default_keyvault().get_secret(name))


@secret.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def secret_list(ctx: click.Context, as_json: bool) -> None:
    """List secret names (never values).

    \b
    Example:
      mlws secret list
    """
    names = _open(ctx).get_default_keyvault().list_secrets()
    if as_json:
        _json(names)
    else:
        _table([[n["name"]] for n in names], ["secret"])


@secret.command("delete")
@click.argument("name")
@click.pass_context
def secret_delete(ctx: click.Context, name: str) -> None:
    """Delete secret NAME.

    \b
    Example:
      mlws secret delete db-password
    """
    _open(ctx).get_default_keyvault().delete_secret(name)
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
    key = _open(ctx).get_default_keyvault().export_key()
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
    _open(ctx).get_default_keyvault().import_key(text)
    click.echo("Key imported")


# -- upkeep ----------------------------------------------------------------------------------------
@cli.command("fsck")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def fsck_cmd(ctx: click.Context, as_json: bool) -> None:
    """Check the catalog, re-hash every blob and check every manifest. Exit 1 on problems.

    \b
    Example:
      mlws fsck
    """
    from ..errors import CatalogDamaged, CatalogMissing
    from ..maintenance import fsck
    from ..workspace import Workspace, find_workspace_path

    path, _create = find_workspace_path((ctx.find_root().obj or {}).get("workspace"))
    try:
        ws = Workspace(path, _checking=True)
    except (CatalogDamaged, CatalogMissing) as e:
        if as_json:
            _json({"ok": False, "catalog_problems": [str(e)]})
        else:
            click.echo(f"catalog: {e}")
        raise click.ClickException("workspace has problems (see above)") from None
    ctx.call_on_close(ws.close)
    rep = fsck(ws)
    if as_json:
        _json(rep.as_dict())
    else:
        click.echo(
            f"catalog: {'ok' if not rep.catalog_problems else '; '.join(rep.catalog_problems)}"
        )
        click.echo(
            f"blobs checked: {rep.blobs_checked}, corrupted: {len(rep.corrupted)}, missing: {len(rep.missing)}, unreadable manifests: {len(rep.bad_manifests)}"
        )
        for d in rep.corrupted:
            click.echo(f"  corrupted {d}")
        for d in rep.missing:
            click.echo(f"  missing {d}")
        for d in rep.bad_manifests:
            click.echo(f"  bad manifest {d}")
    if not rep.ok:
        raise click.ClickException("workspace has problems (see above)")


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option(
    "--grace",
    type=float,
    default=3600.0,
    show_default=True,
    help="Keep unreferenced blobs younger than this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def gc_cmd(ctx: click.Context, dry_run: bool, grace: float, as_json: bool) -> None:
    """Remove blobs that no run, snapshot or file references.

    \b
    Example:
      mlws gc --dry-run
    """
    from ..maintenance import gc

    ws = _open(ctx)
    rep = gc(ws, dry_run=dry_run, grace_s=grace)
    if as_json:
        _json(rep.as_dict())
    else:
        verb = "would remove" if dry_run else "removed"
        click.echo(
            f"{verb} {rep.removed} blob(s), {rep.bytes_freed / 1e6:.1f} MB; kept {rep.kept_recent} recent unreferenced blob(s)"
        )


# Command groups kept in their own modules register themselves on import.
from . import compute as _compute  # noqa: E402, F401
from . import datasets as _datasets  # noqa: E402, F401
from . import datastores as _datastores  # noqa: E402, F401
from . import models as _models  # noqa: E402, F401
from . import services as _services  # noqa: E402, F401
