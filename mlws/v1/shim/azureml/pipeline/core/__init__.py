"""``azureml.pipeline.core`` (v1): mlws's pipelines, when they exist."""

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
    unavailable="mlws has no pipelines yet (SPEC.md section 13, the pipeline issue); until then submit each step as its own run with Experiment.submit(ScriptRunConfig(...))",
)
