"""``azureml.core.authentication`` (v1): accepted; there is nothing to log in to."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "AbstractAuthentication": "mlws.v1.cloud:AbstractAuthentication",
        "InteractiveLoginAuthentication": "mlws.v1.cloud:InteractiveLoginAuthentication",
        "ServicePrincipalAuthentication": "mlws.v1.cloud:ServicePrincipalAuthentication",
        "MsiAuthentication": "mlws.v1.cloud:MsiAuthentication",
        "AzureCliAuthentication": "mlws.v1.cloud:AzureCliAuthentication",
    },
)
