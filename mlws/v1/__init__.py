"""Azure ML SDK v1 code on mlws: the ``azureml`` import layer and the switch that turns it on.

Layout, and why:

- ``mlws/v1/shim/`` is a plain folder (no ``__init__.py``) holding v1's top-level packages,
  ``azureml`` and ``azureml_user`` (what a ParallelRunStep's entry script imports). That folder
  is the ``sys.path`` entry: adding it exposes those names and nothing else, and the packages
  ship inside mlws (no second distribution to install or keep in step).
- The shim's modules only map v1 names onto mlws objects (``azureml.core.Run`` *is*
  ``mlws.Run``), each imported on first use. The few v1 names mlws has no object for (cloud
  authentication, ACI/AKS deployment settings, the widget, the scoring decorators) are small
  classes in this package (``mlws.v1.cloud``, ``.widgets``, ``.scoring``, ``.workspace``),
  where they are importable and tested as mlws code.
- ``mlws.v1.install`` turns the layer on for the user's own interpreter (``mlws v1 enable``):
  a ``.pth`` file that *appends* the shim folder, so a real azureml-core in site-packages is
  found first. Inside runs mlws puts the folder at the end of ``PYTHONPATH``
  (:func:`mlws.processes.python_path`) and the shim's ``azureml/__init__.py`` steps aside when
  a real ``azureml.core`` is installed in that interpreter.

A ground-floor module: it imports nothing of mlws.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: The folder to put on ``sys.path`` for ``import azureml`` to find the layer.
SHIM_DIR = str(Path(__file__).resolve().parent / "shim")

#: The Azure scope a local workspace reports where v1 code asks for one (``ws.subscription_id``,
#: ``AZUREML_ARM_SUBSCRIPTION`` in a run) and none was given: the all-zero subscription id (a
#: GUID, as code that parses one expects) and a resource group / location named ``local``.
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "local"
LOCAL_LOCATION = "local"


def add_to_sys_path() -> None:
    """Make the layer importable in this process, after everything already on ``sys.path``
    (so a real azureml-core wins): for calls mlws runs in a worker process it did not start
    (joblib's loky workers, Dask workers), where ``PYTHONPATH`` is not ours to set."""
    if SHIM_DIR not in sys.path:
        sys.path.append(SHIM_DIR)


#: The SDK's own distributions, for which the layer stands in: an environment that lists one
#: (v1 samples add ``azureml-defaults`` or ``azureml-sdk`` to nearly every environment) is built
#: without it. Installed, the real azureml-core would win over the layer in the run (as it
#: must, where a user installed it on purpose) and send the run's metrics to a cloud
#: workspace that is not there. Others (``azureml-opendatasets``, AutoML, interpret) are
#: installed as listed.
SDK_PACKAGES = re.compile(
    r"^azureml-(sdk|core|defaults|dataset-runtime|dataprep|telemetry|train|train-core|"
    r"pipeline|pipeline-core|pipeline-steps|widgets|mlflow|inference-server-http)"
    r"(\[[^\]]*\])?\s*([=<>!~;].*)?$",
    re.IGNORECASE,
)


def without_sdk(requirements: list[str]) -> tuple[list[str], list[str]]:
    """``requirements`` split into those to install and the SDK's own (:data:`SDK_PACKAGES`).
    ``azureml-mlflow`` is also how v1 environments get MLflow itself (its dependency): it
    becomes ``mlflow-skinny``, whose tracking mlws serves in runs, and ``filelock``, which
    mlws's MLflow plugin needs there to store artifacts (checked: the using-mlflow/train-remote
    sample's ``log_model`` failed without it)."""
    keep = [r for r in requirements if not SDK_PACKAGES.match(r.strip())]
    sdk = [r for r in requirements if SDK_PACKAGES.match(r.strip())]
    if any(r.strip().lower().startswith("azureml-mlflow") for r in sdk):
        if not any(re.match(r"mlflow(-skinny)?\b", r.strip(), re.IGNORECASE) for r in keep):
            keep.append("mlflow-skinny")
        keep.append("filelock")
    return keep, sdk
