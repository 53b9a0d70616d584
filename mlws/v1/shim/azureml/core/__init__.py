"""``azureml.core`` (v1): the workspace, experiments, runs, environments, models, services; each name is the mlws object of the same name (``Workspace`` accepts v1's constructor too)."""

from mlws.v1.names import lazy_exports

#: The SDK version v1 code sees (v1's last azureml-core, marked as mlws's layer).
VERSION = "1.61.0+mlws"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Workspace": "mlws.v1.workspace:V1Workspace",
        "Experiment": "mlws.v1.experiment:V1Experiment",
        "Run": "mlws.runs:Run",
        "ScriptRun": "mlws.runs:Run",
        "Environment": "mlws.v1.environment:V1Environment",
        "ScriptRunConfig": "mlws.v1.runconfig:V1ScriptRunConfig",
        "RunConfiguration": "mlws.v1.runconfig:V1RunConfiguration",
        "ComputeTarget": "mlws.compute:ComputeTarget",
        "Dataset": "mlws.datasets:Dataset",
        "Datastore": "mlws.datastores:Datastore",
        "Model": "mlws.v1.serving:V1Model",
        "Webservice": "mlws.serving.service:Webservice",
        "Keyvault": "mlws.keyvault:Keyvault",
    },
)
