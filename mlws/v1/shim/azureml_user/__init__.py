"""``azureml_user`` (v1): what a ParallelRunStep's entry script imports (``.parallel_run``)."""
