"""``azureml.pipeline.steps`` (v1): mlws's pipeline steps (``mlws.pipelines``)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "PythonScriptStep": "mlws.pipelines:PythonScriptStep",
        "CommandStep": "mlws.pipelines:CommandStep",
        "HyperDriveStep": "mlws.pipelines:HyperDriveStep",
        "HyperDriveStepRun": "mlws.pipelines:HyperDriveStepRun",
        "ParallelRunStep": "mlws.pipelines:ParallelRunStep",
        "ParallelRunConfig": "mlws.pipelines:ParallelRunConfig",
        "EstimatorStep": "mlws.pipelines:EstimatorStep",
        "DataTransferStep": "mlws.pipelines:DataTransferStep",
        "DatabricksStep": "mlws.pipelines:DatabricksStep",
        "MpiStep": "mlws.pipelines:MpiStep",
        "AutoMLStep": "mlws.pipelines:AutoMLStep",
    },
    unavailable="not in mlws yet: its pipeline steps are PythonScriptStep, CommandStep, HyperDriveStep and ParallelRunStep (with ParallelRunConfig)",
)
