"""``azureml.core.model`` (v1): the model registry and ``InferenceConfig``."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"Model": "mlws.v1.serving:V1Model", "InferenceConfig": "mlws.serving.service:InferenceConfig"},
)
