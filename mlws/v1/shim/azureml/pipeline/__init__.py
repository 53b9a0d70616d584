"""``azureml.pipeline`` (v1): re-exports mlws's pipelines (``mlws.pipelines``)."""

from mlws.v1.names import step_aside_for_real_sdk

step_aside_for_real_sdk(__name__)
