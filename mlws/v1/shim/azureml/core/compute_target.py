"""``azureml.core.compute_target`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ComputeTarget": "mlws.compute:ComputeTarget",
        "ComputeTargetException": "mlws.errors:ComputeTargetException",
    },
)
