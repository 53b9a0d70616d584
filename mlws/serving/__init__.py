"""Models served as local HTTP scoring services (Azure ML v1's LocalWebservice).

``service.py`` holds the API (``Model.deploy``, ``Webservice``), ``supervisor.py`` the detached
process that keeps a service's replicas alive, ``replica.py`` the scoring server itself.
"""

from .service import DeployConfiguration, InferenceConfig, LocalWebservice, Webservice, deploy

__all__ = ["DeployConfiguration", "InferenceConfig", "LocalWebservice", "Webservice", "deploy"]
