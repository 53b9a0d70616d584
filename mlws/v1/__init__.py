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


#: What some of the SDK's packages brought that v1 scripts use, and mlws's counterpart needs
#: in the run: MLflow itself (``azureml-mlflow``'s dependency; mlws's MLflow plugin stores
#: artifacts under a ``filelock``: the using-mlflow/train-remote sample's ``log_model`` failed
#: without it) and the dataset runtime (``dataset.to_pandas_dataframe()`` in the run: mlws's
#: tabular datasets read with pandas and pyarrow; the train-with-datasets sample failed
#: without them).
SDK_BRINGS: dict[str, tuple[str, ...]] = {
    "mlflow": ("mlflow-skinny", "filelock"),
    "dataset-runtime": ("pandas", "pyarrow"),
    "dataprep": ("pandas", "pyarrow"),
    "defaults": ("pandas", "pyarrow"),
    "sdk": ("pandas", "pyarrow"),
}


def without_sdk(requirements: list[str]) -> tuple[list[str], list[str]]:
    """``requirements`` split into those to install and the SDK's own (:data:`SDK_PACKAGES`);
    the first also holds what the SDK's brought that the run needs (:data:`SDK_BRINGS`),
    where not listed already."""
    keep = [r for r in requirements if not SDK_PACKAGES.match(r.strip())]
    sdk = [r for r in requirements if SDK_PACKAGES.match(r.strip())]
    listed = {re.split(r"[\[=<>!~; ]", r.strip(), maxsplit=1)[0].lower() for r in keep}
    for r in sdk:
        for package in SDK_BRINGS.get(SDK_PACKAGES.match(r.strip()).group(1).lower(), ()):
            if package not in listed and not (package == "mlflow-skinny" and "mlflow" in listed):
                keep.append(package)
                listed.add(package)
    return keep, sdk
