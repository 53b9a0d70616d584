"""``azureml.contrib.services.aml_request`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {"rawhttp": "mlws.v1.scoring:rawhttp", "AMLRequest": "mlws.v1.scoring:AMLRequest"},
)
