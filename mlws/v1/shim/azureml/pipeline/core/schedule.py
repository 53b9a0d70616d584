"""``azureml.pipeline.core.schedule`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Schedule": "mlws.pipelines:Schedule",
        "ScheduleRecurrence": "mlws.pipelines:ScheduleRecurrence",
    },
    unavailable="not in mlws yet: its pipelines have Pipeline, PythonScriptStep, CommandStep, PipelineData, PipelineParameter, PipelineRun, StepRun, PublishedPipeline, PipelineEndpoint, Schedule and (in azureml.pipeline.steps) ParallelRunStep",
)
