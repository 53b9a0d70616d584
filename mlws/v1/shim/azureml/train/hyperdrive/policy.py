"""``azureml.train.hyperdrive.policy`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "BanditPolicy": "mlws.hyperdrive:BanditPolicy",
        "MedianStoppingPolicy": "mlws.hyperdrive:MedianStoppingPolicy",
        "TruncationSelectionPolicy": "mlws.hyperdrive:TruncationSelectionPolicy",
        "NoTerminationPolicy": "mlws.hyperdrive:NoTerminationPolicy",
    },
    unavailable="needs mlws's HyperDrive (mlws.hyperdrive), which this mlws does not have yet",
)
