"""The scheduler: the long-lived process that fires a workspace's schedules
(``mlws schedule run``; what a schedule is, and when it is due, is :mod:`.schedules`).

Each :meth:`Scheduler.tick` looks at every active schedule once: a time schedule whose next
firing (computed from the last firing actually made, so missed slots collapse into one) is not
in the future fires; a data-change schedule whose polling interval has passed has its path's
fingerprint taken, and fires when it changed. A firing submits the schedule's published
pipeline (or its endpoint's default version) and records the firing with its run or its
error whatever happens, so a failing schedule is not retried at every tick. One scheduler per
workspace (a lock in ``locks/``), so nothing fires twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError
from .published import ACTIVE
from .schedules import data_fingerprint, due_time

if TYPE_CHECKING:
    from ..workspace import Workspace


class Scheduler:
    """Fires due schedules (``mlws schedule run``). :meth:`tick` makes one pass at a given
    time (tests drive it with their own clock); :meth:`run` loops until stopped. One scheduler
    per workspace at a time (a lock in ``locks/``), so nothing fires twice.

    ``log(line)`` gets a line per firing and per problem.
    """

    def __init__(
        self,
        workspace: Workspace,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
    ) -> None:
        self.workspace = workspace
        self.clock = clock
        self.log = log
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        """Take the workspace's scheduler lock.

        :raises MlwsError: another scheduler holds it.
        """
        from ..locks import try_lock

        self.workspace.catalog.require_writer()
        fd = try_lock(self.workspace.path / "locks" / "scheduler.lock")
        if fd is None:
            raise MlwsError("another scheduler (`mlws schedule run`) runs for this workspace")
        self._lock_fd = fd

    def release(self) -> None:
        """Let another scheduler run."""
        import os

        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def tick(self, now: float | None = None) -> list[tuple[str, str]]:
        """Fire every active schedule due at ``now`` (default: the clock); returns
        ``(schedule id, run id or "error: ...")`` for each firing."""
        now = self.clock() if now is None else now
        fired: list[tuple[str, str]] = []
        for row in self.workspace.catalog.query(
            f"SELECT * FROM schedules WHERE status = '{ACTIVE}' ORDER BY created, rowid"
        ):
            if row["recurrence"] is not None:
                try:
                    due = due_time(row)
                except MlwsError as e:  # e.g. its time zone left this machine's tz database
                    if row["last_error"] != str(e):
                        self._record(row["id"], {"last_error": str(e)})
                        self.log(f"schedule {row['name']!r}: {e}")
                    continue
                if due is not None and due <= now:
                    fired.append((row["id"], self.fire(row, now, {"last_fire": now})))
                continue
            if (row["last_poll"] or 0) + float(row["polling_interval"] or 5) * 60 > now:
                continue
            try:
                fp = data_fingerprint(self.workspace, row["datastore"], row["path_on_datastore"])
            except MlwsError as e:
                self._record(row["id"], {"last_poll": now, "last_error": str(e)})
                self.log(f"schedule {row['name']!r}: {e}")
                continue
            if fp != row["data_fingerprint"]:
                changes = {"last_poll": now, "data_fingerprint": fp, "last_fire": now}
                fired.append((row["id"], self.fire(row, now, changes)))
            else:
                self._record(row["id"], {"last_poll": now})
        return fired

    def fire(self, row: Any, now: float, changes: dict[str, Any]) -> str:
        """Submit the schedule's pipeline; records the firing (and its run or its error) in
        ``changes`` whatever happens, so a failing schedule is not retried at every tick."""
        from ..experiments import Experiment
        from .endpoints import PipelineEndpoint
        from .published import PublishedPipeline

        ws = self.workspace
        target: Any
        try:
            if row["pipeline_id"] is not None:
                target = PublishedPipeline.get(ws, row["pipeline_id"])
            else:
                target = PipelineEndpoint.get(ws, id=row["pipeline_endpoint_id"])
            cosf = row["continue_on_step_failure"]
            kwargs: dict[str, Any] = {}
            if cosf is not None and row["pipeline_id"] is not None:
                kwargs["continue_on_step_failure"] = bool(cosf)
            values = json.loads(row["pipeline_parameters"])
            target.check(values)  # a disabled pipeline must not create the experiment
            run = Experiment(ws, row["experiment_name"]).submit(
                target,
                pipeline_parameters=values,
                properties={"azureml.scheduleid": row["id"]},
                **kwargs,
            )
        except (MlwsError, OSError) as e:  # the scheduler goes on with the other schedules
            self._record(row["id"], {**changes, "last_error": str(e)})
            self.log(f"schedule {row['name']!r} could not submit its pipeline: {e}")
            return f"error: {e}"
        self._record(row["id"], {**changes, "last_run_id": run.id, "last_error": None})
        self.log(f"schedule {row['name']!r} fired: pipeline run {run.id}")
        return run.id

    def _record(self, sid: str, changes: dict[str, Any]) -> None:
        with self.workspace.catalog.write() as conn:
            conn.execute(
                f"UPDATE schedules SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                [*changes.values(), sid],
            )

    def next_wake(self, now: float) -> float:
        """Seconds until something may be due (at most 60: schedules created or changed
        meanwhile are seen within a minute)."""
        soonest = now + 60
        for row in self.workspace.catalog.query(
            f"SELECT * FROM schedules WHERE status = '{ACTIVE}'"
        ):
            if row["recurrence"] is not None:
                try:
                    t = due_time(row)
                except MlwsError:
                    continue  # tick() records why
            else:
                t = (row["last_poll"] or 0) + float(row["polling_interval"] or 5) * 60
            if t is not None:
                soonest = min(soonest, t)
        return max(0.0, soonest - now)

    def run(self, stop: threading.Event, max_wait: float = 1.0) -> None:
        """Fire due schedules until ``stop`` is set; waits at most ``max_wait`` seconds at a
        time, so new schedules are seen soon.

        :raises MlwsError: another scheduler runs for this workspace.
        """
        self.acquire()
        try:
            while not stop.is_set():
                self.tick()
                stop.wait(min(max_wait, self.next_wake(self.clock())))
        finally:
            self.release()
