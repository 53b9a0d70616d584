"""``azureml.train.hyperdrive.parameter_expressions`` (v1)."""

from mlws.v1.names import lazy_exports

#: v1's parameter expressions, each mlws's own; ``azureml.train.hyperdrive`` exports them too.
EXPRESSIONS = {
    name: f"mlws.hyperdrive:{name}"
    for name in (
        "choice",
        "randint",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "normal",
        "qnormal",
        "lognormal",
        "qlognormal",
    )
}

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    EXPRESSIONS,
    unavailable="needs mlws's HyperDrive (mlws.hyperdrive), which this mlws does not have yet",
)
