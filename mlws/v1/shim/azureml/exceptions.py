"""``azureml.exceptions`` (v1): the v1 names of mlws's errors (``AzureMLException`` is ``MlwsError``, the base of all)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "AzureMLException": "mlws.errors:MlwsError",
        "UserErrorException": "mlws.errors:UserErrorException",
        "ComputeTargetException": "mlws.errors:ComputeTargetException",
        "WebserviceException": "mlws.errors:WebserviceException",
        "ActivityFailedException": "mlws.errors:ActivityFailedException",
        "ModelNotFoundException": "mlws.errors:ModelNotFound",
        "ModelPathNotFoundException": "mlws.errors:ModelNotFound",
        "WorkspaceException": "mlws.errors:WorkspaceNotFound",
        "ProjectSystemException": "mlws.errors:InvalidWorkspace",
        "RunConfigurationException": "mlws.errors:RunConfigError",
        "SnapshotException": "mlws.errors:SnapshotError",
        "ExperimentExecutionException": "mlws.errors:ActivityFailedException",
        "TrainingException": "mlws.errors:ActivityFailedException",
        "RunEnvironmentException": "mlws.errors:EnvironmentBuildError",
        "AuthenticationException": "mlws.errors:AuthenticationException",
        "ServiceException": "mlws.errors:ServiceException",
    },
)
