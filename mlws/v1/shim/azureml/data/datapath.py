"""``azureml.data.datapath`` (v1): a ``DataPath`` is mlws's ``DataReference``."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "DataPath": "mlws.datastores:DataReference",
        "DataPathComputeBinding": "mlws.v1.data:DataPathComputeBinding",
    },
)
