"""``azureml.data.output_dataset_config`` (v1)."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "OutputFileDatasetConfig": "mlws.rundata:OutputFileDatasetConfig",
        "OutputDatasetConfig": "mlws.rundata:OutputFileDatasetConfig",
    },
)
