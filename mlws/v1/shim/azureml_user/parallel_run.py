"""``azureml_user.parallel_run`` (v1): ``EntryScript`` for ParallelRunStep entry scripts
(``mlws.pipelines.parallel_worker``)."""

from mlws.pipelines.parallel_worker import EntryScript

__all__ = ["EntryScript"]
