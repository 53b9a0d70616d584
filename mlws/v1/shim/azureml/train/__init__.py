"""``azureml.train`` (v1): ``azureml.train.hyperdrive`` is mlws's HyperDrive."""

from mlws.v1.names import step_aside_for_real_sdk

step_aside_for_real_sdk(__name__)
