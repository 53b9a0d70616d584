"""v1's curated environments (``Environment.get(ws, "AzureML-sklearn-1.5")``) as local ones.

Azure ML serves these as prebuilt Docker images; here each name maps to a managed environment
with the same Python packages in pip-installable CPU builds, registered in the workspace under
that name the first time it is asked for (a note says so) and built by the first run that uses
it. GPU builds become CPU ones (runs here use the CPU); PyTorch is 2.13.0, the CPU build pip
installs from this machine's disk, whatever version the name says (other versions pull a
multi-GB CUDA build; checked: the pytorch-1.10 name built in 60 s and ran ``torch 2.13.0+cpu``).
Only names listed here resolve; others are not found, as in v1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .names import note_once

if TYPE_CHECKING:
    from ..environments import Environment
    from ..workspace import Workspace

_SKLEARN_15 = ("scikit-learn==1.5.*", "numpy", "pandas", "scipy", "joblib")
_TORCH = ("torch==2.13.0", "numpy", "pandas")

#: Curated name -> pip requirements of its local equivalent. The names are those v1's samples
#: use most (Azure/MachineLearningNotebooks, the v1 docs); an empty list is v1's minimal
#: environment: nothing beyond Python, so it runs on the submitting interpreter.
CURATED: dict[str, tuple[str, ...]] = {
    "AzureML-sklearn-1.5": _SKLEARN_15,
    "AzureML-sklearn-1.5-ubuntu22.04-py39-cpu": _SKLEARN_15,
    # numpy<2: these were built against numpy 1's C API (checked: 1.1.3 with numpy 1.26 here)
    "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu": (
        "scikit-learn==1.1.*",
        "numpy<2",
        "pandas",
        "scipy",
    ),
    "AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu": _TORCH,
    "AzureML-pytorch-1.13-ubuntu20.04-py38-cuda11.7-gpu": _TORCH,
    "AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu": _TORCH,
    "AzureML-lightgbm-3.3-ubuntu20.04-py38-cpu": (
        "lightgbm==3.3.*",
        "scikit-learn",
        "numpy<2",
        "pandas",
    ),
    "AzureML-Tutorial": ("scikit-learn", "numpy", "pandas", "matplotlib"),
    "AzureML-Minimal": (),
}

#: Versions of a curated package that differ from the name's (no build of it for this Python,
#: or a GPU build), said in the note.
_SUBSTITUTES = {
    "AzureML-sklearn-1.0-ubuntu20.04-py38-cpu": "scikit-learn 1.1 (1.0 has no build for this Python)",
    "AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu": "torch 2.13.0 CPU for PyTorch 1.10 GPU",
    "AzureML-pytorch-1.13-ubuntu20.04-py38-cuda11.7-gpu": "torch 2.13.0 CPU for PyTorch 1.13 GPU",
    "AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu": "torch 2.13.0 CPU for PyTorch 1.13 GPU",
}


def curated_environment(
    workspace: Workspace, name: str, version: str | int | None = None
) -> Environment | None:
    """Register the local equivalent of v1's curated environment ``name`` in ``workspace``
    and return it, or None when ``name`` is not one mlws knows. Any ``version`` gives it:
    the local equivalent has one version. Names match whatever their case (v1's own samples
    ask for ``azureml-sklearn-1.5``); the environment has the curated spelling."""
    name = next((c for c in CURATED if c.lower() == str(name).lower()), name)
    requirements = CURATED.get(name)
    if requirements is None:
        return None
    from .environment import V1Environment

    env = V1Environment(name)
    env.environment_variables = {}
    for r in requirements:
        env.python.conda_dependencies.add_pip_package(r)
    instead = f"; {_SUBSTITUTES[name]}" if name in _SUBSTITUTES else ""
    what = ", ".join(requirements) if requirements else "no packages (the submitting Python)"
    note_once(
        f"curated:{name}",
        f"{name} is an Azure ML curated environment: here a local one with {what}{instead},"
        " built on first use" + ("" if version is None else f" (version {version} asked for)"),
    )
    return env.register(workspace)
