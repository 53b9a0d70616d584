"""``azureml.core.runconfig`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "RunConfiguration": "mlws.v1.runconfig:V1RunConfiguration",
        "CondaDependencies": "mlws.environments:CondaDependencies",
        "DEFAULT_CPU_IMAGE": "mlws.v1.cloud:DEFAULT_CPU_IMAGE",
        "DEFAULT_GPU_IMAGE": "mlws.v1.cloud:DEFAULT_GPU_IMAGE",
        "DockerConfiguration": "mlws.runconfig:DockerConfiguration",
        "MpiConfiguration": "mlws.distributed:MpiConfiguration",
        "PyTorchConfiguration": "mlws.distributed:PyTorchConfiguration",
        "TensorflowConfiguration": "mlws.distributed:TensorflowConfiguration",
    },
)
