"""``azureml.core.run`` (v1): ``Run`` is ``mlws.Run``."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"Run": "mlws.runs:Run"},
)
