"""Models served as local HTTP scoring services (Azure ML v1's LocalWebservice).

``service.py`` holds the API (``Model.deploy``, ``Webservice``), ``supervisor.py`` the detached
process that keeps a service's replicas alive, ``replica.py`` the scoring server itself. The
API is imported on first use: a replica (``python -m mlws.serving.replica``) needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["DeployConfiguration", "InferenceConfig", "LocalWebservice", "Webservice", "deploy"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'mlws.serving' has no attribute {name!r}")
    from . import service

    return getattr(service, name)


if TYPE_CHECKING:
    from .service import DeployConfiguration, InferenceConfig, LocalWebservice, Webservice, deploy
