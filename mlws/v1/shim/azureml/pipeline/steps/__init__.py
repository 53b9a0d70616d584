"""``azureml.pipeline.steps`` (v1): mlws's pipeline steps, when they exist."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "PythonScriptStep": "mlws.pipelines:PythonScriptStep",
        "CommandStep": "mlws.pipelines:CommandStep",
        "HyperDriveStep": "mlws.pipelines:HyperDriveStep",
        "ParallelRunStep": "mlws.pipelines:ParallelRunStep",
        "ParallelRunConfig": "mlws.pipelines:ParallelRunConfig",
        "EstimatorStep": "mlws.pipelines:EstimatorStep",
        "DataTransferStep": "mlws.pipelines:DataTransferStep",
        "DatabricksStep": "mlws.pipelines:DatabricksStep",
        "MpiStep": "mlws.pipelines:MpiStep",
        "AutoMLStep": "mlws.pipelines:AutoMLStep",
    },
    unavailable="mlws has no pipelines yet (SPEC.md section 13, the pipeline issue); until then submit each step as its own run with Experiment.submit(ScriptRunConfig(...))",
)
