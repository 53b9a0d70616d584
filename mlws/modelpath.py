"""Where a registered model's files are for a scoring script or a run: v1's
``Model.get_model_path``.

Inside a deployment the files are under ``AZUREML_MODEL_DIR``; elsewhere under
``./azureml-models/<name>/<version>``, downloaded there from the workspace when missing. In a
run on an ``ssh`` host the workspace is at home: the run's supervising process sends the
model's files there (:mod:`mlws.compute.hostmodels`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelNotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from .workspace import Workspace

#: Set in a process whose workspace is not where its models are (a ParallelRunStep worker on
#: an ssh host): ``fetcher(name, version)`` puts the model under ``./azureml-models/<name>/
#: <version>`` (or raises ModelNotFound); tried when the model is not there yet.
fetcher: Callable[[str, int | None], None] | None = None


def model_path(
    model_name: str, version: int | None = None, workspace: Workspace | None = None
) -> str:
    """The path of model ``model_name`` (``version``, else the newest found): see the module
    docstring for where it is looked for.

    :raises ModelNotFound: found nowhere.
    """
    from .models import Model, check_model_name

    check_model_name(model_name)
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    roots = []
    if model_dir:
        roots.append(Path(model_dir))
    roots.append(Path("azureml-models"))
    for root in roots:
        found = _find_in(root, model_name, version)
        if found is not None:
            return str(found)
    if fetcher is not None and workspace is None:
        fetcher(model_name, version)
        found = _find_in(Path("azureml-models"), model_name, version)
        if found is not None:
            return str(found)
    if os.environ.get("MLWS_MODELS_FROM_HOME") and (
        workspace is None or str(workspace.path) == os.environ.get("MLWS_WORKSPACE")
    ):
        # A script on an ssh host: its run's catalog there (the workspace it has: v1 scripts
        # pass run.experiment.workspace) has no models; home sends them.
        from .compute.hostmodels import ask_home

        found = _find_in(Path(ask_home(model_name, version)), model_name, version)
        if found is not None:
            return str(found)
    ws = workspace
    if ws is None and os.environ.get("MLWS_RUN_ID"):
        from .runs import Run

        ws = Run.get_context().workspace
    if ws is None:
        raise ModelNotFound(
            f"model {model_name!r} is not under {' or '.join(str(r) for r in roots)};"
            " pass _workspace= to download it"
        )
    model = Model(ws, model_name, version=version)
    return model.download(Path("azureml-models") / model.name / str(model.version), exist_ok=True)


def _find_in(root: Path, name: str, version: int | None) -> Path | None:
    """A deployed or downloaded model: ``root/<name>/<version>/<path>`` (several models), or
    ``root`` itself when it is ``.../<name>/<version>`` (a single model's folder)."""
    candidates = []
    if root.name.isdigit() and root.parent.name == name:
        if version is None or int(root.name) == int(version):
            candidates.append(root)
    base = root / name
    if base.is_dir():
        versions = sorted((int(p.name) for p in base.iterdir() if p.name.isdigit()), reverse=True)
        if version is not None:
            versions = [v for v in versions if v == int(version)]
        candidates += [base / str(v) for v in versions[:1]]
    for folder in candidates:
        items = (
            [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
        )
        if len(items) == 1:
            return items[0]
        if items:
            return folder
    return None
