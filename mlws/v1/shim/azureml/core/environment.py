"""``azureml.core.environment`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Environment": "mlws.v1.environment:V1Environment",
        "CondaDependencies": "mlws.environments:CondaDependencies",
        "PythonSection": "mlws.environments:PythonSection",
        "DockerSection": "mlws.v1.environment:DockerSection",
        "DEFAULT_CPU_IMAGE": "mlws.v1.cloud:DEFAULT_CPU_IMAGE",
        "DEFAULT_GPU_IMAGE": "mlws.v1.cloud:DEFAULT_GPU_IMAGE",
    },
)
