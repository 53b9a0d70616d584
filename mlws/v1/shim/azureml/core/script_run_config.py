"""``azureml.core.script_run_config`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"ScriptRunConfig": "mlws.v1.runconfig:V1ScriptRunConfig"},
)
