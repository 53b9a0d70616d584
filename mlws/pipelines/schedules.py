"""Schedules: submit a published pipeline (or an endpoint's default) on a recurrence, or when
the files under a datastore path change.

``Schedule.create(ws, name, pipeline_id=... | pipeline_endpoint_id=..., experiment_name,
recurrence=ScheduleRecurrence(...))`` records a time schedule; with ``datastore`` and
``path_on_datastore`` instead of a recurrence it is a data-change schedule, which looks at the
path's content every ``polling_interval`` minutes. Everything is checked before anything is
recorded (:class:`~mlws.errors.ScheduleError`, one line).

Nothing fires by itself: a long-lived :class:`~mlws.pipelines.scheduler.Scheduler` does
(``mlws schedule run``). When it
(re)starts, a time schedule whose firings were missed meanwhile fires **once**, not once per
missed slot: the next firing is always computed from the last one actually made
(:func:`next_fire`, a pure function of the recurrence). A data-change schedule fires when the
fingerprint of the files under its path (the hashes of their content, through the stat cache)
differs from the one it last saw; the first look, at creation, only records it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError, ScheduleError, ScheduleNotFound
from .published import ACTIVE, DISABLED, StoredItem, check_pipeline_name

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .run import PipelineRun

FREQUENCIES = ("Minute", "Hour", "Day", "Week", "Month")
WEEK_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: Where v1 allows ``hours``, ``minutes`` and ``week_days`` (ScheduleRecurrence's docs).
_HOURS_FOR = ("Day", "Week")
_MINUTES_FOR = ("Hour", "Day", "Week")
_WEEK_DAYS_FOR = ("Week",)


def _ints(value: Any, what: str, top: int) -> list[int] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (int, str)) else value
    try:
        items = list(items)
    except TypeError:
        raise ScheduleError(f"{what} is a list of whole numbers 0-{top}, got {value!r}") from None
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).strip().isdigit():
            raise ScheduleError(f"{what} are whole numbers 0-{top}, got {str(v)[:40]!r}")
        if int(v) > top:
            raise ScheduleError(f"{what} are whole numbers 0-{top}, got {int(v)}")
        out.append(int(v))
    if not out:
        raise ScheduleError(f"{what}, when given, lists at least one value")
    return sorted(set(out))


def _zone(time_zone: Any) -> dt.tzinfo:
    if time_zone is None:
        return dt.timezone.utc
    name = getattr(time_zone, "value", time_zone)  # v1's TimeZone enum
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ScheduleError(f"time_zone is a zone name such as 'UTC', got {time_zone!r}")
    if name.upper() in ("UTC", "UTCTIMEZONE", "COORDINATED UNIVERSAL TIME"):
        return dt.timezone.utc
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        raise ScheduleError(
            f"unknown time_zone {name!r}: use an IANA name such as 'Europe/Paris', or 'UTC'"
        ) from None


class ScheduleRecurrence:
    """How often a schedule fires (v1's ``ScheduleRecurrence``): every ``interval``
    ``frequency`` ("Minute", "Hour", "Day", "Week" or "Month") from ``start_time`` (a datetime
    or ``"YYYY-MM-DDTHH:MM[:SS]"``; default: when the schedule is created, which fires at
    once), read in ``time_zone`` (default UTC). ``hours`` (0-23, with Day or Week),
    ``minutes`` (0-59, with Hour, Day or Week), ``week_days`` ("Monday"..., with Week) and
    ``time_of_day`` (``"HH:MM"``, instead of hours and minutes) pick times inside a period.

    :raises ScheduleError: any of it is not as above (v1 raises when the schedule is created;
        here already when the recurrence is).
    """

    def __init__(
        self,
        frequency: str,
        interval: int,
        start_time: dt.datetime | str | None = None,
        time_zone: Any = None,
        hours: list[int] | None = None,
        minutes: list[int] | None = None,
        week_days: list[str] | None = None,
        time_of_day: str | None = None,
    ) -> None:
        if frequency not in FREQUENCIES:
            raise ScheduleError(
                f"frequency is one of {', '.join(FREQUENCIES)}, got {str(frequency)[:40]!r}"
            )
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ScheduleError(f"interval is a whole number >= 1, got {str(interval)[:40]!r}")
        if interval > 10**6:
            raise ScheduleError(f"interval is at most 1000000, got {interval}")
        self.frequency = frequency
        self.interval = interval
        self.tz = _zone(time_zone)
        self.time_zone = None if time_zone is None else str(getattr(time_zone, "value", time_zone))
        if time_of_day is not None:
            if hours is not None or minutes is not None:
                raise ScheduleError("give time_of_day or hours and minutes, not both")
            hh, sep, mm = str(time_of_day).partition(":")
            if not sep:
                raise ScheduleError(f"time_of_day is 'HH:MM', got {str(time_of_day)[:40]!r}")
            hours, minutes = [hh], [mm]  # type: ignore[list-item]
        self.hours = _ints(hours, "hours", 23)
        self.minutes = _ints(minutes, "minutes", 59)
        if self.hours is not None and frequency not in _HOURS_FOR:
            raise ScheduleError(
                f"hours can be given only with frequency Day or Week, not {frequency}"
            )
        if self.minutes is not None and frequency not in _MINUTES_FOR:
            raise ScheduleError(
                f"minutes can be given only with frequency Hour, Day or Week, not {frequency}"
            )
        if week_days is not None:
            if frequency not in _WEEK_DAYS_FOR:
                raise ScheduleError(
                    f"week_days can be given only with frequency Week, not {frequency}"
                )
            days = [week_days] if isinstance(week_days, str) else list(week_days)
            bad = [d for d in days if not isinstance(d, str) or d.capitalize() not in WEEK_DAYS]
            if bad or not days:
                raise ScheduleError(
                    f"week_days are among {', '.join(WEEK_DAYS)}, got {str(bad or days)[:60]}"
                )
            week_days = sorted({d.capitalize() for d in days}, key=WEEK_DAYS.index)
        self.week_days = week_days
        self.start_time = _start(start_time, self.tz)

    def __repr__(self) -> str:
        return f"ScheduleRecurrence({self.to_dict()!r})"

    def validate(self) -> None:
        """Nothing to do: a recurrence is checked when it is made (kept for v1 code)."""

    def to_dict(self) -> dict[str, Any]:
        """The recurrence as the catalog stores it."""
        return {
            "frequency": self.frequency,
            "interval": self.interval,
            "start_time": None if self.start_time is None else self.start_time.isoformat(),
            "time_zone": self.time_zone,
            "hours": self.hours,
            "minutes": self.minutes,
            "week_days": self.week_days,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ScheduleRecurrence:
        """A recurrence from :meth:`to_dict`'s form."""
        return ScheduleRecurrence(**d)


def _start(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ScheduleError(
                f"start_time is a datetime or 'YYYY-MM-DDTHH:MM:SS', got {value[:40]!r}"
            ) from None
    if not isinstance(value, dt.datetime):
        raise ScheduleError(f"start_time is a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def _add_months(t: dt.datetime, months: int) -> dt.datetime:
    import calendar

    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def next_fire(rec: ScheduleRecurrence, after: dt.datetime, anchor: dt.datetime) -> dt.datetime:
    """The first firing of ``rec`` strictly after ``after`` (aware datetimes). Firings count
    from ``rec.start_time``, else from ``anchor`` (when the schedule was created); they are
    worked out in the recurrence's time zone (so "every day at 9" stays at 9 across DST) and
    returned in UTC. Pure: no clock, no catalog.
    """
    tz = rec.tz
    start = (rec.start_time or anchor).astimezone(tz).replace(tzinfo=None)
    a = after.astimezone(tz).replace(tzinfo=None)
    n = rec.interval
    lists = rec.hours is not None or rec.minutes is not None or rec.week_days is not None

    def utc(t: dt.datetime) -> dt.datetime:
        return t.replace(tzinfo=tz).astimezone(dt.timezone.utc)

    if rec.frequency == "Month":
        months = max(0, (a.year - start.year) * 12 + a.month - start.month - 1)
        k = months // n
        while True:
            t = _add_months(start, k * n)
            if t > a:
                return utc(t)
            k += 1
    if not lists:  # a fixed step from the start
        step = {
            "Minute": dt.timedelta(minutes=n),
            "Hour": dt.timedelta(hours=n),
            "Day": dt.timedelta(days=n),
            "Week": dt.timedelta(weeks=n),
        }[rec.frequency]
        if rec.frequency in ("Minute", "Hour"):
            # Elapsed time, not wall time: "every hour" must not skip or repeat one at DST.
            t0 = (rec.start_time or anchor).astimezone(dt.timezone.utc)
            t = after.astimezone(dt.timezone.utc)
            return t0 if t < t0 else t0 + (math.floor((t - t0) / step) + 1) * step
        if a < start:
            return utc(start)
        k = math.floor((a - start) / step) + 1
        return utc(start + k * step)
    # Times inside each period: periods start at the start's hour, day or week (Monday 0:00).
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if rec.frequency == "Hour":
        base, period = start.replace(minute=0, second=0, microsecond=0), dt.timedelta(hours=n)
        offsets = [dt.timedelta(minutes=m) for m in rec.minutes or [start.minute]]
    else:
        hours = rec.hours or [start.hour]
        minutes = rec.minutes or [start.minute]
        times = [dt.timedelta(hours=h, minutes=m) for h in hours for m in minutes]
        if rec.frequency == "Day":
            base, period = midnight, dt.timedelta(days=n)
            offsets = times
        else:
            base, period = midnight - dt.timedelta(days=start.weekday()), dt.timedelta(weeks=n)
            days = [WEEK_DAYS.index(d) for d in rec.week_days or [WEEK_DAYS[start.weekday()]]]
            offsets = [dt.timedelta(days=d) + t for d in days for t in times]
    offsets.sort()
    k = max(0, math.floor((a - base) / period))
    while True:
        for off in offsets:
            t = base + k * period + off
            if t > a and t >= start:
                return utc(t)
        k += 1


def _dt(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


class Schedule(StoredItem):
    """A schedule (v1's ``Schedule``): ``id``, ``name``, ``description``, ``status``
    (``"Active"`` or ``"Disabled"``), ``pipeline_id`` or ``pipeline_endpoint_id``,
    ``experiment_name``, ``recurrence`` (None for a data-change schedule), ``datastore_name``,
    ``path_on_datastore``, ``polling_interval`` (minutes)."""

    TABLE = "schedules"

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, id={self.id!r}, status={self.status!r})"

    pipeline_id = property(
        lambda self: self._row["pipeline_id"], doc="The published pipeline it submits, or None."
    )
    pipeline_endpoint_id = property(
        lambda self: self._row["pipeline_endpoint_id"],
        doc="The endpoint whose default version it submits, or None.",
    )
    experiment_name = property(
        lambda self: str(self._row["experiment_name"]), doc="The experiment of its runs."
    )
    datastore_name = property(
        lambda self: self._row["datastore"], doc="A data-change schedule's datastore, or None."
    )
    path_on_datastore = property(
        lambda self: self._row["path_on_datastore"], doc="The path it watches, or None."
    )
    polling_interval = property(
        lambda self: self._row["polling_interval"], doc="Minutes between looks at the path."
    )
    last_run_id = property(
        lambda self: self._row["last_run_id"], doc="The id of the last run it started, or None."
    )

    @property
    def recurrence(self) -> ScheduleRecurrence | None:
        """Its recurrence (None for a data-change schedule)."""
        text = self._row["recurrence"]
        return None if text is None else ScheduleRecurrence.from_dict(json.loads(text))

    @property
    def pipeline_parameters(self) -> dict[str, Any]:
        """The parameter values its runs get."""
        return dict(json.loads(self._row["pipeline_parameters"]))

    # -- creation ----------------------------------------------------------------------------
    @staticmethod
    def create(
        workspace: Workspace,
        name: str,
        pipeline_id: str | None = None,
        experiment_name: str | None = None,
        recurrence: ScheduleRecurrence | None = None,
        description: str | None = None,
        pipeline_parameters: dict[str, Any] | None = None,
        wait_for_provisioning: bool = False,
        wait_timeout: int = 3600,
        datastore: Any = None,
        polling_interval: float = 5,
        data_path_parameter_name: str | None = None,
        continue_on_step_failure: bool | None = None,
        path_on_datastore: str | None = None,
        pipeline_endpoint_id: str | None = None,
        _workflow_provider: Any = None,
        _service_endpoint: Any = None,
    ) -> Schedule:
        """Create a schedule of the published pipeline ``pipeline_id`` (or of the endpoint
        ``pipeline_endpoint_id``'s default version) in ``experiment_name``: on ``recurrence``,
        or when the files under ``path_on_datastore`` of ``datastore`` change (looked at every
        ``polling_interval`` minutes).

        :raises ScheduleError: anything that cannot work (nothing is recorded).
        :raises PipelineNotFound: no such pipeline or endpoint.
        """
        from ..experiments import check_experiment_name

        check_pipeline_name(name, "schedule")
        if (pipeline_id is None) == (pipeline_endpoint_id is None):
            raise ScheduleError("a schedule runs a pipeline_id or a pipeline_endpoint_id (one)")
        if experiment_name is None:
            raise ScheduleError("a schedule needs the experiment_name of its runs")
        check_experiment_name(experiment_name)
        if description is not None and not isinstance(description, str):
            raise ScheduleError(f"description is text, got {description!r}")
        spec = _target_spec(workspace, pipeline_id, pipeline_endpoint_id)
        from .published import resolve_parameters

        pipeline_parameters = _with_watched_path(
            pipeline_parameters,
            data_path_parameter_name,
            None if recurrence is not None else datastore,
            path_on_datastore,
        )
        try:
            resolve_parameters(spec, pipeline_parameters)
        except MlwsError as e:
            raise ScheduleError(str(e)) from None
        ds_name, fp, interval = None, None, None
        if recurrence is not None:
            if datastore is not None or path_on_datastore is not None:
                raise ScheduleError(
                    "a schedule fires on a recurrence or on a datastore path's changes, not both"
                )
            if not isinstance(recurrence, ScheduleRecurrence):
                raise ScheduleError(
                    f"recurrence is a ScheduleRecurrence, got {type(recurrence).__name__}"
                )
        else:
            if datastore is None:
                raise ScheduleError(
                    "a schedule needs a recurrence, or a datastore (and path_on_datastore) to watch"
                )
            interval = _polling(polling_interval)
            ds_name = getattr(datastore, "name", datastore)
            fp = data_fingerprint(workspace, ds_name, path_on_datastore)
        sid = str(uuid.uuid4())
        with workspace.catalog.write() as conn:
            conn.execute(
                "INSERT INTO schedules (id, name, description, status, pipeline_id,"
                " pipeline_endpoint_id, experiment_name, recurrence, pipeline_parameters,"
                " datastore, path_on_datastore, polling_interval, continue_on_step_failure,"
                " created, last_poll, data_fingerprint)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    name,
                    description,
                    ACTIVE,
                    pipeline_id,
                    None
                    if pipeline_endpoint_id is None
                    else _endpoint_id(workspace, pipeline_endpoint_id),
                    experiment_name,
                    None if recurrence is None else json.dumps(recurrence.to_dict()),
                    _stored(pipeline_parameters),
                    ds_name,
                    path_on_datastore,
                    interval,
                    None
                    if continue_on_step_failure is None
                    else int(bool(continue_on_step_failure)),
                    time.time(),
                    None if fp is None else time.time(),
                    fp,
                ),
            )
        return Schedule.get(workspace, sid)

    @staticmethod
    def create_for_pipeline_endpoint(
        workspace: Workspace,
        name: str,
        pipeline_endpoint_id: str,
        experiment_name: str,
        **kwargs: Any,
    ) -> Schedule:
        """:meth:`create` for an endpoint (v1's spelling)."""
        return Schedule.create(
            workspace,
            name,
            experiment_name=experiment_name,
            pipeline_endpoint_id=pipeline_endpoint_id,
            **kwargs,
        )

    # -- lookup ------------------------------------------------------------------------------
    @staticmethod
    def get(workspace: Workspace, id: str, **_kw: Any) -> Schedule:  # noqa: A002
        """The schedule ``id``.

        :raises ScheduleNotFound: there is none.
        """
        row = workspace.catalog.one("SELECT * FROM schedules WHERE id = ?", (str(id),))
        if row is None:
            raise ScheduleNotFound(
                f"no schedule with id {str(id)[:80]!r}; `mlws schedule list --all` lists them"
            )
        return Schedule(workspace, row)

    @staticmethod
    def list(
        workspace: Workspace,
        active_only: bool = True,
        pipeline_id: str | None = None,
        pipeline_endpoint_id: str | None = None,
        **_kw: Any,
    ) -> list[Schedule]:
        """The schedules, oldest first (only the active ones unless ``active_only`` is False;
        only those of one pipeline or endpoint when given)."""
        where, args = [], []
        if active_only:
            where.append(f"status = '{ACTIVE}'")
        if pipeline_id is not None:
            where.append("pipeline_id = ?")
            args.append(pipeline_id)
        if pipeline_endpoint_id is not None:
            where.append("pipeline_endpoint_id = ?")
            args.append(pipeline_endpoint_id)
        sql = "SELECT * FROM schedules" + (" WHERE " + " AND ".join(where) if where else "")
        rows = workspace.catalog.query(sql + " ORDER BY created, rowid", args)
        return [Schedule(workspace, r) for r in rows]

    get_all = list

    # -- changes -----------------------------------------------------------------------------
    def enable(self, wait_for_provisioning: bool = False, wait_timeout: int = 3600) -> None:
        """Make it ``Active``: the scheduler fires it again."""
        self.update(status=ACTIVE)

    def disable(self, wait_for_provisioning: bool = False, wait_timeout: int = 3600) -> None:
        """Make it ``Disabled``: the scheduler leaves it alone."""
        self.update(status=DISABLED)

    def update(
        self,
        name: str | None = None,
        description: str | None = None,
        recurrence: ScheduleRecurrence | None = None,
        pipeline_parameters: dict[str, Any] | None = None,
        status: str | None = None,
        wait_for_provisioning: bool = False,
        wait_timeout: int = 3600,
        datastore: Any = None,
        polling_interval: float | None = None,
        data_path_parameter_name: str | None = None,
        continue_on_step_failure: bool | None = None,
        path_on_datastore: str | None = None,
    ) -> None:
        """Change what is given (the rest stays).

        :raises ScheduleError: a change that cannot work (nothing is changed).
        """
        from .published import resolve_parameters

        sets: dict[str, Any] = {}
        if name is not None:
            sets["name"] = check_pipeline_name(name, "schedule")
        if description is not None:
            sets["description"] = str(description)
        if status is not None:
            if status not in (ACTIVE, DISABLED):
                raise ScheduleError(f"status is Active or Disabled, got {str(status)[:40]!r}")
            sets["status"] = status
        if recurrence is not None:
            if self._row["recurrence"] is None or not isinstance(recurrence, ScheduleRecurrence):
                raise ScheduleError(
                    "only a time schedule's recurrence can be changed, to a ScheduleRecurrence"
                )
            sets["recurrence"] = json.dumps(recurrence.to_dict())
        if data_path_parameter_name is not None:
            watched = self._row["recurrence"] is None
            pipeline_parameters = _with_watched_path(
                self.pipeline_parameters if pipeline_parameters is None else pipeline_parameters,
                data_path_parameter_name,
                (datastore or self.datastore_name) if watched else None,
                path_on_datastore if path_on_datastore is not None else self.path_on_datastore,
            )
        if pipeline_parameters is not None:
            spec = _target_spec(self.workspace, self.pipeline_id, self.pipeline_endpoint_id)
            try:
                resolve_parameters(spec, pipeline_parameters)
            except MlwsError as e:
                raise ScheduleError(str(e)) from None
            sets["pipeline_parameters"] = _stored(pipeline_parameters)
        if continue_on_step_failure is not None:
            sets["continue_on_step_failure"] = int(bool(continue_on_step_failure))
        if polling_interval is not None:
            if self._row["recurrence"] is not None:
                raise ScheduleError("polling_interval is for data-change schedules")
            sets["polling_interval"] = _polling(polling_interval)
        if datastore is not None or path_on_datastore is not None:
            if self._row["recurrence"] is not None:
                raise ScheduleError("a time schedule watches no datastore")
            ds = (
                getattr(datastore, "name", datastore)
                if datastore is not None
                else self.datastore_name
            )
            path = path_on_datastore if path_on_datastore is not None else self.path_on_datastore
            sets.update(
                datastore=ds,
                path_on_datastore=path,
                data_fingerprint=data_fingerprint(self.workspace, ds, path),
            )
        if not sets:
            return
        with self.workspace.catalog.write() as conn:
            conn.execute(
                f"UPDATE schedules SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                [*sets.values(), self.id],
            )
        self._refresh()

    # -- runs --------------------------------------------------------------------------------
    def get_last_pipeline_run(self) -> PipelineRun | None:
        """The last pipeline run it started, or None."""
        from ..experiments import Experiment
        from .run import PipelineRun

        self._refresh()
        if self.last_run_id is None:
            return None
        return PipelineRun(Experiment(self.workspace, self.experiment_name), self.last_run_id)

    def next_fire_time(self, now: float | None = None) -> float | None:
        """When the scheduler will next fire it (epoch seconds; a time in the past means at
        once), or None for a data-change schedule (or a recurrence it cannot read here)."""
        try:
            return due_time(self._row)
        except MlwsError:
            return None

    def as_dict(self) -> dict[str, Any]:
        """What ``mlws schedule show --json`` prints."""
        rec = self._row["recurrence"]  # as stored: shown even where it cannot be read
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "pipeline_id": self.pipeline_id,
            "pipeline_endpoint_id": self.pipeline_endpoint_id,
            "experiment_name": self.experiment_name,
            "recurrence": None if rec is None else json.loads(rec),
            "datastore": self.datastore_name,
            "path_on_datastore": self.path_on_datastore,
            "polling_interval": self.polling_interval,
            "pipeline_parameters": self.pipeline_parameters,
            "last_fire": self._row["last_fire"],
            "next_fire": self.next_fire_time(),
            "last_run_id": self.last_run_id,
            "last_error": self._row["last_error"],
        }


def _with_watched_path(
    values: dict[str, Any] | None, parameter: str | None, datastore: Any, path: str | None
) -> dict[str, Any] | None:
    """``values`` with the DataPath parameter ``parameter`` (v1's ``data_path_parameter_name``)
    set to the path a data-change schedule watches, ``datastore``'s ``path``: each firing runs
    the pipeline on the files that changed.

    :raises ScheduleError: a parameter name without a watched path (a time schedule)."""
    if parameter is None:
        return values
    if not isinstance(parameter, str) or datastore is None:
        raise ScheduleError(
            "data_path_parameter_name names the DataPath parameter that gets the watched path:"
            " it needs a datastore (and path_on_datastore) to watch"
        )
    watched = {"datastore": getattr(datastore, "name", datastore), "path": path or ""}
    return {**(values or {}), parameter: watched}


def _stored(values: dict[str, Any] | None) -> str:
    """Parameter values as the schedule's row keeps them (a DataPath as ``{"datastore",
    "path"}``, as a pipeline run's definition records it)."""
    from .graph import parameter_value

    return json.dumps({k: parameter_value(v) for k, v in (values or {}).items()})


def _polling(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ScheduleError(f"polling_interval is minutes (> 0), got {str(value)[:40]!r}") from None
    if not (v > 0) or math.isinf(v):
        raise ScheduleError(f"polling_interval is minutes (> 0), got {str(value)[:40]!r}")
    return v


def _endpoint_id(ws: Workspace, ref: str) -> str:
    from .endpoints import PipelineEndpoint

    try:
        return PipelineEndpoint.get(ws, id=ref).id
    except MlwsError:
        return PipelineEndpoint.get(ws, name=ref).id


def _target_spec(ws: Workspace, pipeline_id: str | None, endpoint_id: str | None) -> dict[str, Any]:
    """The frozen definition a schedule would submit now (to check its parameters)."""
    from .endpoints import PipelineEndpoint
    from .published import PublishedPipeline

    if pipeline_id is not None:
        return PublishedPipeline.get(ws, pipeline_id).graph
    return PipelineEndpoint.get(ws, id=_endpoint_id(ws, str(endpoint_id))).get_pipeline().graph


def data_fingerprint(ws: Workspace, datastore: Any, path: str | None) -> str:
    """The fingerprint of the files under ``path`` of the datastore ``datastore`` now
    (``"empty"`` when there are none).

    :raises ScheduleError: no such datastore, or a path outside it.
    """
    from ..datasets import fingerprint as file_hashes
    from ..datasets import resolve_sources, sources_of
    from ..datastores import Datastore
    from ..manifests import canonical_manifest, hash_bytes

    if not isinstance(datastore, str) or not datastore:
        raise ScheduleError(f"datastore is a datastore or its name, got {datastore!r}")
    try:
        store = Datastore.get(ws, datastore)
    except MlwsError as e:
        raise ScheduleError(str(e)) from None
    target = (path or "").strip("/")
    pattern = f"{target}/**" if target else "**"
    try:
        files = resolve_sources(ws, sources_of(None, [(store, pattern)]))
    except MlwsError as e:
        if "matches no file" in str(e):
            return "empty"
        raise ScheduleError(f"cannot watch {datastore}:{target}: {e}") from None
    return hash_bytes(canonical_manifest(file_hashes(files), trusted=True))


def due_time(row: Any) -> float | None:
    """When a time schedule (a catalog row) is next due, in epoch seconds: its first firing
    when it never fired (at once when it has no start time, as v1), else the first firing after
    the last one made. None for a data-change schedule."""
    if row["recurrence"] is None:
        return None
    rec = ScheduleRecurrence.from_dict(json.loads(row["recurrence"]))
    created = _dt(row["created"])
    if row["last_fire"] is None:
        if rec.start_time is None:
            return float(row["created"])
        just_before = rec.start_time - dt.timedelta(microseconds=1)
        return next_fire(rec, just_before, created).timestamp()
    return next_fire(rec, _dt(row["last_fire"]), created).timestamp()
