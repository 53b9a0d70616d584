"""``azureml.telemetry`` (v1): mlws collects no telemetry."""

from mlws.v1.names import lazy_exports, step_aside_for_real_sdk

step_aside_for_real_sdk(__name__)

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"set_diagnostics_collection": "mlws.v1.cloud:set_diagnostics_collection"},
)
