"""``azureml.pipeline.core.schedule`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Schedule": "mlws.pipelines:Schedule",
        "ScheduleRecurrence": "mlws.pipelines:ScheduleRecurrence",
    },
    unavailable="mlws has no pipelines yet (SPEC.md section 13, the pipeline issue); until then submit each step as its own run with Experiment.submit(ScriptRunConfig(...))",
)
