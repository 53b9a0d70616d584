"""``azureml.core.experiment`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"Experiment": "mlws.v1.experiment:V1Experiment"},
)
