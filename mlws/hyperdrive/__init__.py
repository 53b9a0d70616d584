"""HyperDrive sweeps (v1's ``azureml.train.hyperdrive``): sample hyperparameters, run each set as
a child run of a ``hyperdrive`` parent, stop poor trials early, find the best.

One module per concept: :mod:`.sampling` (parameter expressions and Grid/Random/Bayesian
sampling), :mod:`.policy` (early termination), :mod:`.config` (``HyperDriveConfig``,
``PrimaryMetricGoal``), :mod:`.controller` (the detached process that drives a sweep) and
:mod:`.run` (``HyperDriveRun``). Names are imported on first use (PEP 562), so importing the
package costs nothing until a sweep is built.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HyperDriveConfig": "config",
    "PrimaryMetricGoal": "config",
    "HyperDriveRun": "run",
    "GridParameterSampling": "sampling",
    "RandomParameterSampling": "sampling",
    "BayesianParameterSampling": "sampling",
    "BanditPolicy": "policy",
    "MedianStoppingPolicy": "policy",
    "TruncationSelectionPolicy": "policy",
    "NoTerminationPolicy": "policy",
    "choice": "sampling",
    "randint": "sampling",
    "uniform": "sampling",
    "quniform": "sampling",
    "loguniform": "sampling",
    "qloguniform": "sampling",
    "normal": "sampling",
    "qnormal": "sampling",
    "lognormal": "sampling",
    "qlognormal": "sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlws.hyperdrive' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
