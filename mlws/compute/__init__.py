"""Compute targets. Issue-2 scope: the built-in ``local`` target and its run slots."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import ComputeTargetException

if TYPE_CHECKING:
    from ..workspace import Workspace


def target_config(ws: Workspace, name: str) -> tuple[str, dict[str, Any]]:
    """``(type, config)`` of a compute target. :raises ComputeTargetException: no such target."""
    row = ws.catalog.one("SELECT type, config FROM compute_targets WHERE name = ?", (name,))
    if row is None:
        known = [r[0] for r in ws.catalog.query("SELECT name FROM compute_targets ORDER BY name")]
        raise ComputeTargetException(
            f"no compute target named {name!r} in workspace {ws.name!r}; known targets: {', '.join(known)}"
        )
    return row[0], json.loads(row[1] or "{}")
