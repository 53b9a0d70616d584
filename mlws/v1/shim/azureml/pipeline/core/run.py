"""``azureml.pipeline.core.run`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "PipelineRun": "mlws.pipelines:PipelineRun",
        "StepRun": "mlws.pipelines:StepRun",
    },
)
