"""``azureml.widgets`` (v1): ``RunDetails(run).show()``, live in a terminal or Jupyter."""

from mlws.v1.names import lazy_exports, step_aside_for_real_sdk

step_aside_for_real_sdk(__name__)

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"RunDetails": "mlws.v1.widgets:RunDetails"},
)
