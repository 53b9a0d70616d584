"""``azureml.train.hyperdrive.run`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "HyperDriveRun": "mlws.hyperdrive:HyperDriveRun",
        "PrimaryMetricGoal": "mlws.hyperdrive:PrimaryMetricGoal",
    },
    unavailable="needs mlws's HyperDrive (mlws.hyperdrive), which this mlws does not have yet",
)
