"""``azureml.core.webservice`` (v1): local services; ``AciWebservice`` and ``AksWebservice`` deploy locally too, with a note."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Webservice": "mlws.serving.service:Webservice",
        "LocalWebservice": "mlws.v1.serving:V1LocalWebservice",
        "AciWebservice": "mlws.v1.cloud:AciWebservice",
        "AksWebservice": "mlws.v1.cloud:AksWebservice",
    },
)
