"""``azureml.contrib.services`` (v1): what scoring scripts import."""
