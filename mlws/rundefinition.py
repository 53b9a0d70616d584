"""What a run was defined with, read back from its recorded definition (v1's
``run.get_environment()``); a base class of :class:`mlws.runs.Run`.

The definition is recorded at submission (``runDefinition`` in ``run.get_details()``); these
calls only read it, so they answer the same for a finished run, on any machine that has the
workspace.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from .environments import Environment


class RunDefinition:
    """The run's recorded definition (the base class of :class:`mlws.runs.Run`)."""

    # Provided by Run.
    id: str
    _row: sqlite3.Row

    def get_environment(self) -> Environment:
        """The environment the run was submitted with (v1): an :class:`~mlws.Environment`, or
        v1's ``azureml.core.Environment`` for one defined through the v1 names (it has a
        ``docker`` section).

        :raises UserErrorException: the run was not submitted with an environment (an
            interactive run, a child run, a pipeline).
        """
        from .environments import Environment
        from .errors import UserErrorException
        from .v1.environment import V1Environment

        row: Any = self._row
        definition = json.loads(row["definition"]) if row["definition"] else {}
        data = definition.get("environment")
        if not isinstance(data, dict):
            raise UserErrorException(
                f"run {self.id} was not submitted with an environment (only submitted scripts"
                " and commands have one)"
            )
        return (V1Environment if "docker" in data else Environment).from_dict(data)
