"""``azureml.train.hyperdrive.sampling`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "GridParameterSampling": "mlws.hyperdrive:GridParameterSampling",
        "RandomParameterSampling": "mlws.hyperdrive:RandomParameterSampling",
        "BayesianParameterSampling": "mlws.hyperdrive:BayesianParameterSampling",
    },
    unavailable="needs mlws's HyperDrive (mlws.hyperdrive), which this mlws does not have yet",
)
