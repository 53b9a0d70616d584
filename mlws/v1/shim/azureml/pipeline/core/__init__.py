"""``azureml.pipeline.core`` (v1): mlws's pipelines (``mlws.pipeline``)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Pipeline": "mlws.pipeline:Pipeline",
        "PipelineData": "mlws.pipeline:PipelineData",
        "PipelineParameter": "mlws.pipeline:PipelineParameter",
        "PublishedPipeline": "mlws.pipeline:PublishedPipeline",
        "PipelineEndpoint": "mlws.pipeline:PipelineEndpoint",
        "PipelineRun": "mlws.pipeline:PipelineRun",
        "StepRun": "mlws.pipeline:StepRun",
        "Schedule": "mlws.pipeline:Schedule",
        "ScheduleRecurrence": "mlws.pipeline:ScheduleRecurrence",
        "StepSequence": "mlws.pipeline:StepSequence",
        "TrainingOutput": "mlws.pipeline:TrainingOutput",
        "PipelineDataset": "mlws.pipeline:PipelineDataset",
        "PortDataReference": "mlws.pipeline:PortDataReference",
        "OutputPortBinding": "mlws.pipeline:OutputPortBinding",
        "InputPortBinding": "mlws.pipeline:InputPortBinding",
    },
    unavailable="not in mlws yet: its pipelines have Pipeline, PythonScriptStep, CommandStep, PipelineData, PipelineParameter, PipelineRun and StepRun; published pipelines, endpoints, schedules and ParallelRunStep come later (issue 13)",
)
