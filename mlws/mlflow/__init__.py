"""MLflow code records into mlws: a tracking store, an artifact repository and a model registry
store, found by MLflow through the entry points in ``pyproject.toml`` for URIs such as
``mlws:///abs/path/to/workspace`` (``mlws:`` alone: the workspace mlws finds by its usual
discovery). Install with the ``mlws[mlflow]`` extra.

MLflow is imported only inside this package, and nothing else in mlws imports it, so mlws
without MLflow pays nothing for it.

- :mod:`mlws.mlflow.uris`: tracking and artifact URIs, the open workspaces, MLflow's errors;
- :mod:`mlws.mlflow.entities`: mlws rows as MLflow's entities (runs, experiments, metrics);
- :mod:`mlws.mlflow.store`: ``MlwsTrackingStore`` (experiments, runs, params, metrics, tags,
  ``search_runs``);
- :mod:`mlws.mlflow.logged_models`: MLflow 3's logged models, kept inside their run;
- :mod:`mlws.mlflow.artifacts`: ``MlwsArtifactRepository`` (a run's files);
- :mod:`mlws.mlflow.registry`: ``MlwsModelRegistryStore`` (mlws model versions).
"""

# MLflow first, whichever module of this package is imported first: importing MLflow loads the
# plugins its entry points name, this package's among them, and a module of it half-way through
# importing MLflow itself would be found partial there ("Failure attempting to register store
# for scheme mlws"), leaving the mlws: scheme unregistered in that process.
import mlflow  # noqa: E402, F401
