"""``azureml.train.hyperdrive`` (v1): mlws's HyperDrive (``mlws.hyperdrive``)."""

from mlws.v1.names import lazy_exports

from .parameter_expressions import EXPRESSIONS

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "HyperDriveConfig": "mlws.hyperdrive:HyperDriveConfig",
        "HyperDriveRun": "mlws.hyperdrive:HyperDriveRun",
        "PrimaryMetricGoal": "mlws.hyperdrive:PrimaryMetricGoal",
        "GridParameterSampling": "mlws.hyperdrive:GridParameterSampling",
        "RandomParameterSampling": "mlws.hyperdrive:RandomParameterSampling",
        "BayesianParameterSampling": "mlws.hyperdrive:BayesianParameterSampling",
        "BanditPolicy": "mlws.hyperdrive:BanditPolicy",
        "MedianStoppingPolicy": "mlws.hyperdrive:MedianStoppingPolicy",
        "TruncationSelectionPolicy": "mlws.hyperdrive:TruncationSelectionPolicy",
        "NoTerminationPolicy": "mlws.hyperdrive:NoTerminationPolicy",
        **EXPRESSIONS,
    },
    unavailable="needs mlws's HyperDrive (mlws.hyperdrive), which this mlws does not have yet",
)
