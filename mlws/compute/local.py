"""The ``local`` compute target: subprocesses on this machine, limited by run slots.

A slot is an exclusive file lock, so no daemon is needed and a crashed supervisor frees its slot
(the OS drops its locks). Slot files live in the workspace's ``locks/slots/<machine id>/``: every
user of the workspace on one machine shares the limit (a per-user folder would give each HOME its
own slots), while on a shared folder each machine's ``local`` target still has its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserErrorException
from ..locks import try_lock
from . import target_config

if TYPE_CHECKING:
    from ..workspace import Workspace


def max_concurrent_runs(ws: Workspace) -> int:
    _, config = target_config(ws, "local")
    value = config.get("max_concurrent_runs")
    return int(value) if value else max(1, os.cpu_count() or 1)


def configure(ws: Workspace, max_concurrent_runs: int) -> None:
    """Set how many runs the ``local`` target runs at once (others wait ``Queued``)."""
    if not isinstance(max_concurrent_runs, int) or max_concurrent_runs < 1:
        raise UserErrorException(
            f"max_concurrent_runs must be a whole number >= 1, got {max_concurrent_runs!r}"
        )
    _, config = target_config(ws, "local")
    config["max_concurrent_runs"] = max_concurrent_runs
    with ws.catalog.write() as conn:
        conn.execute(
            "UPDATE compute_targets SET config = ? WHERE name = 'local'", (json.dumps(config),)
        )


@contextlib.contextmanager
def slot(
    ws: Workspace,
    keep_waiting: Callable[[], bool],
    poll_s: float = 0.1,
    may_start: Callable[[], bool] = lambda: True,
) -> Iterator[int | None]:
    """Hold one of the target's slots; yields its index, or ``None`` if ``keep_waiting()``
    returned false (e.g. the run was canceled while queued)."""
    folder = ws.path / "locks" / "slots" / machine_id()
    with hold_slot(
        folder,
        lambda: [f"local-{i}" for i in range(max_concurrent_runs(ws))],
        keep_waiting,
        poll_s,
        may_start,
    ) as name:
        yield None if name is None else int(name.rsplit("-", 1)[1])


def machine_id() -> str:
    """This machine's stable id (systemd's ``/etc/machine-id``), or its host name without one."""
    for f in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(f).read_text().strip()
        except OSError:
            continue
        if value.isalnum():
            return value
    return "host-" + "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())


@contextlib.contextmanager
def hold_slot(
    folder: Path,
    names: Callable[[], list[str]],
    keep_waiting: Callable[[], bool],
    poll_s: float = 0.1,
    may_start: Callable[[], bool] = lambda: True,
) -> Iterator[str | None]:
    """Hold the first free one of the lock files ``folder/<name>.lock`` (``names()`` is asked
    again on every poll, so a changed limit applies at once); yields its name, or ``None`` once
    ``keep_waiting()`` is false. Shared by every target type that has slots."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        # may_start keeps queued runs in submission order: only the oldest waiter takes a slot.
        for name in names() if may_start() else []:
            fd = try_lock(folder / f"{name}.lock")
            if fd is None:
                continue
            try:
                yield name
            finally:
                os.close(fd)  # drops the lock
            return
        if not keep_waiting():
            yield None
            return
        time.sleep(poll_s)
