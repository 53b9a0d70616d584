"""``azureml.pipeline.core`` (v1): mlws's pipelines (``mlws.pipelines``)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Pipeline": "mlws.pipelines:Pipeline",
        "PipelineData": "mlws.pipelines:PipelineData",
        "PipelineParameter": "mlws.pipelines:PipelineParameter",
        "PublishedPipeline": "mlws.pipelines:PublishedPipeline",
        "PipelineEndpoint": "mlws.pipelines:PipelineEndpoint",
        "PipelineRun": "mlws.pipelines:PipelineRun",
        "StepRun": "mlws.pipelines:StepRun",
        "Schedule": "mlws.pipelines:Schedule",
        "ScheduleRecurrence": "mlws.pipelines:ScheduleRecurrence",
        "StepSequence": "mlws.pipelines:StepSequence",
        "TrainingOutput": "mlws.pipelines:TrainingOutput",
        "PipelineDataset": "mlws.pipelines:PipelineDataset",
        "PortDataReference": "mlws.pipelines:PortDataReference",
        "OutputPortBinding": "mlws.pipelines:OutputPortBinding",
        "InputPortBinding": "mlws.pipelines:InputPortBinding",
    },
    unavailable="not in mlws yet: its pipelines have Pipeline, PythonScriptStep, CommandStep, PipelineData, PipelineParameter, PipelineRun, StepRun, PublishedPipeline, PipelineEndpoint, Schedule and (in azureml.pipeline.steps) ParallelRunStep",
)
