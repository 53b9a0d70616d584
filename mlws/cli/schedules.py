"""``mlws schedule ...``: schedules of published pipelines, and the process that fires them
(a thin layer over :mod:`mlws.pipelines.schedules`)."""

from __future__ import annotations

from typing import Any

import click

from .common import CONTEXT, key_values, open_workspace, print_json, status_commands, table, when


@click.group(context_settings=CONTEXT)
def schedule() -> None:
    """Create, list, enable and disable schedules of published pipelines, and run them."""


def _ints(text: str | None) -> list[int] | None:
    """``"0,30"`` as ``[0, 30]`` (the library checks the ranges)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and len(p) < 6 for p in parts):
        raise click.BadParameter(f"expected whole numbers separated by commas, got {text[:40]!r}")
    return [int(p) for p in parts]


@schedule.command("create")
@click.argument("name")
@click.option("--pipeline", "pipeline_id", help="The published pipeline to submit (its id).")
@click.option("--endpoint", help="Or the pipeline endpoint (its name) whose default to submit.")
@click.option("-e", "--experiment", "exp_name", required=True, help="Experiment of its runs.")
@click.option(
    "--frequency",
    type=click.Choice(["Minute", "Hour", "Day", "Week", "Month"]),
    help="Fire every INTERVAL of these.",
)
@click.option("--interval", type=int, default=1, show_default=True, help="How many.")
@click.option("--hours", help="Hours of the day, e.g. 9,17 (Day or Week).")
@click.option("--minutes", help="Minutes of the hour, e.g. 0,30 (Hour, Day or Week).")
@click.option("--week-days", help="e.g. Monday,Friday (Week).")
@click.option("--start-time", help="First firing, YYYY-MM-DDTHH:MM (default: at once).")
@click.option("--time-zone", help="Zone of the times, e.g. Europe/Paris (default UTC).")
@click.option("--datastore", help="Instead of a frequency: fire when files here change...")
@click.option("--path", "path_on_datastore", help="...under this path of the datastore.")
@click.option(
    "--polling-interval", type=float, default=5, show_default=True, help="Minutes between looks."
)
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter (repeatable)."
)
@click.option("--description", help="What it is for.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the schedule's id.")
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
@click.pass_context
def schedule_create(
    ctx: click.Context,
    name: str,
    pipeline_id: str | None,
    endpoint: str | None,
    exp_name: str,
    frequency: str | None,
    interval: int,
    hours: str | None,
    minutes: str | None,
    week_days: str | None,
    start_time: str | None,
    time_zone: str | None,
    datastore: str | None,
    path_on_datastore: str | None,
    polling_interval: float,
    params: tuple[str, ...],
    description: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Create the schedule NAME of a published pipeline (--pipeline) or an endpoint's
    default (--endpoint): on a recurrence (--frequency), or when the files under a datastore
    path change (--datastore, --path). `mlws schedule run` fires it.

    \b
    Example:
      mlws schedule create nightly --pipeline 0b6c7f0e-5d3a-4c1e-9f27-2a5e8d9c1b44 \\
          -e nightly --frequency Day --hours 2 --minutes 30 --time-zone Europe/Paris
      mlws schedule create on-new-data --endpoint scoring -e scoring \\
          --datastore workspaceblobstore --path incoming --polling-interval 1
    """
    from ..pipelines.schedules import Schedule, ScheduleRecurrence

    values = key_values(params)
    recurrence = None
    if frequency is not None:
        recurrence = ScheduleRecurrence(
            frequency,
            interval,
            start_time=start_time,
            time_zone=time_zone,
            hours=_ints(hours),
            minutes=_ints(minutes),
            week_days=None if week_days is None else [d.strip() for d in week_days.split(",")],
        )
    ws = open_workspace(ctx)
    s = Schedule.create(
        ws,
        name,
        pipeline_id=pipeline_id,
        pipeline_endpoint_id=endpoint,
        experiment_name=exp_name,
        recurrence=recurrence,
        description=description,
        pipeline_parameters=values or None,
        datastore=datastore,
        path_on_datastore=path_on_datastore,
        polling_interval=polling_interval,
    )
    if quiet:
        click.echo(s.id)
    elif as_json:
        print_json(s.as_dict())
    else:
        click.echo(f"Created schedule {s.name!r} ({s.id}); `mlws schedule run` fires it")


def _when_next(s: Any) -> str:
    t = s.next_fire_time()
    return "on change" if t is None else when(t)


@schedule.command("list")
@click.option("--all", "show_all", is_flag=True, help="Disabled ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedule_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List schedules, oldest first.

    \b
    Example:
      mlws schedule list --all
    """
    from ..pipelines.schedules import Schedule

    found = Schedule.list(open_workspace(ctx), active_only=not show_all)
    if as_json:
        print_json([s.as_dict() for s in found])
        return
    table(
        [
            [s.id, s.name, s.status, s.experiment_name, _when_next(s), s.last_run_id or ""]
            for s in found
        ],
        ["id", "name", "status", "experiment", "next", "last run"],
    )


@schedule.command("show")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedule_show(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Show a schedule: what it runs, when, and its last firing.

    \b
    Example:
      mlws schedule show 3f2b1c0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9
    """
    from ..pipelines.schedules import Schedule

    s = Schedule.get(open_workspace(ctx), schedule_id)
    d = s.as_dict()
    if as_json:
        print_json(d)
        return
    d["last_fire"] = when(d["last_fire"])
    d["next_fire"] = _when_next(s)
    table([[k, v] for k, v in d.items() if v not in (None, {}, "")], ["field", "value"])


def _schedule(ws: Any, schedule_id: str) -> Any:
    from ..pipelines.schedules import Schedule

    return Schedule.get(ws, schedule_id)


status_commands(
    schedule,
    "schedule",
    "schedule_id",
    _schedule,
    "3f2b1c0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9",
    "the scheduler leaves it alone until it is enabled",
)


@schedule.command("run")
@click.option("--once", is_flag=True, help="Fire what is due now, then exit (for cron).")
@click.pass_context
def schedule_run(ctx: click.Context, once: bool) -> None:
    """Fire the workspace's schedules as they fall due, until Ctrl-C or SIGTERM. A firing
    missed while no scheduler ran happens once when it starts (not once per missed slot).

    \b
    Example:
      mlws schedule run
    """
    import signal
    import threading

    from ..pipelines.scheduler import Scheduler

    ws = open_workspace(ctx)
    sched = Scheduler(ws, log=lambda line: click.echo(line))
    if once:
        sched.acquire()
        try:
            sched.tick()
        finally:
            sched.release()
        return
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo("Scheduler running; Ctrl-C stops it")
    try:
        sched.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    click.echo("Scheduler stopped")
