"""v1's ``azureml.core.Experiment``: mlws's :class:`~mlws.experiments.Experiment`, whose
``start_logging`` makes the run's outputs folder as v1's does.

v1's interactive run tracks an outputs folder (``outputs=None``: ``./outputs``; ``False``:
none) and makes it; v1's own first-experiment tutorial (``tutorials/create-first-ml-experiment``)
saves its models into it straight away. mlws's own ``start_logging`` leaves the current folder
alone (mlws starts interactive runs for callables and offline scripts too), so only the v1 name
makes it. Files written there are not collected when the run ends: ``run.upload_file`` them (as
the tutorial does).
"""

from __future__ import annotations

import os
from typing import Any

from ..experiments import Experiment


class V1Experiment(Experiment):
    """An experiment whose :meth:`start_logging` makes the outputs folder (v1)."""

    def start_logging(self, *args: Any, outputs: Any = None, **kwargs: Any) -> Any:
        """As :meth:`mlws.Experiment.start_logging`; first makes ``outputs`` (``./outputs``
        when None; nothing when False) if it is missing, as v1 does."""
        if outputs is not False:
            os.makedirs("outputs" if outputs in (None, True) else str(outputs), exist_ok=True)
        return super().start_logging(*args, outputs=None, **kwargs)
