"""``azureml.core.environment`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Environment": "mlws.environments:Environment",
        "CondaDependencies": "mlws.environments:CondaDependencies",
        "PythonSection": "mlws.environments:PythonSection",
    },
    missing={
        "DockerSection": "not in mlws yet (issue 12 section 2: Docker and v1 environment semantics)"
    },
)
