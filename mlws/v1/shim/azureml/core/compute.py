"""``azureml.core.compute`` (v1): ``AmlCompute`` is a Dask cluster, ``RemoteCompute`` ssh hosts."""

from mlws.v1.names import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ComputeTarget": "mlws.compute:ComputeTarget",
        "AmlCompute": "mlws.compute.dask:AmlCompute",
        "RemoteCompute": "mlws.compute.ssh:RemoteCompute",
        "ComputeTargetException": "mlws.errors:ComputeTargetException",
    },
    missing={
        "AksCompute": "Azure Kubernetes clusters do not exist locally; serve with LocalWebservice, compute with AmlCompute (Dask) or RemoteCompute (ssh)",
        "ComputeInstance": "a compute instance is an Azure VM; this machine is the 'local' target",
        "DatabricksCompute": "Databricks is Azure-only",
        "HDInsightCompute": "HDInsight is Azure-only",
        "SynapseCompute": "Synapse is Azure-only",
        "KubernetesCompute": "Kubernetes compute is Azure-only; use AmlCompute (Dask) or RemoteCompute (ssh)",
    },
)
