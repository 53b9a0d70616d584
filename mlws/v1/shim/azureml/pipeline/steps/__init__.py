"""``azureml.pipeline.steps`` (v1): mlws's pipeline steps (``mlws.pipeline``)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "PythonScriptStep": "mlws.pipeline:PythonScriptStep",
        "CommandStep": "mlws.pipeline:CommandStep",
        "HyperDriveStep": "mlws.pipeline:HyperDriveStep",
        "ParallelRunStep": "mlws.pipeline:ParallelRunStep",
        "ParallelRunConfig": "mlws.pipeline:ParallelRunConfig",
        "EstimatorStep": "mlws.pipeline:EstimatorStep",
        "DataTransferStep": "mlws.pipeline:DataTransferStep",
        "DatabricksStep": "mlws.pipeline:DatabricksStep",
        "MpiStep": "mlws.pipeline:MpiStep",
        "AutoMLStep": "mlws.pipeline:AutoMLStep",
    },
    unavailable="not in mlws yet: its pipelines have Pipeline, PythonScriptStep, CommandStep, PipelineData, PipelineParameter, PipelineRun and StepRun; published pipelines, endpoints, schedules and ParallelRunStep come later (issue 13)",
)
