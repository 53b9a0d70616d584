"""``azureml.data`` (v1): datasets and run outputs."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "FileDataset": "mlws.datasets:FileDataset",
        "TabularDataset": "mlws.tabular:TabularDataset",
        "DataType": "mlws.datatypes:DataType",
        "OutputFileDatasetConfig": "mlws.rundata:OutputFileDatasetConfig",
    },
)
