"""v1's deployment names where mlws's own defaults differ: services deployed through the v1
names keep v1's key defaults. v1's local service (Docker) has no keys at all, and
``Model.deploy`` without a deployment configuration deploys to ACI, whose keys are off unless
``auth_enabled=True``; mlws's own API keeps keys on by default. Either way the service binds
127.0.0.1 unless ``host`` says otherwise. (``AciWebservice``/``AksWebservice``:
:mod:`mlws.v1.cloud`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..models import Model
from ..serving.service import Webservice

if TYPE_CHECKING:
    from ..serving.service import DeployConfiguration, InferenceConfig
    from ..workspace import Workspace


class V1LocalWebservice(Webservice):
    """v1's ``LocalWebservice``: ``LocalWebservice(ws, name)`` is the deployed service;
    :meth:`deploy_configuration` has keys off unless ``auth_enabled=True``."""

    @staticmethod
    def deploy_configuration(  # type: ignore[override]
        port: int | None = None, auth_enabled: bool = False, **settings: Any
    ) -> DeployConfiguration:
        """mlws's :meth:`mlws.serving.LocalWebservice.deploy_configuration` (the same
        settings) with v1's default of no keys."""
        from ..serving.service import LocalWebservice as Local

        return Local.deploy_configuration(port, auth_enabled=auth_enabled, **settings)


class V1Model(Model):
    """v1's ``Model``: mlws's, whose :meth:`deploy` without a deployment configuration
    deploys as v1 does to ACI: keys off."""

    @staticmethod
    def deploy(  # type: ignore[override]
        workspace: Workspace,
        name: str,
        models: list[Model],
        inference_config: InferenceConfig | None = None,
        deployment_config: DeployConfiguration | None = None,
        deployment_target: Any = None,
        overwrite: bool = False,
        show_output: bool = False,
        **_azure: Any,
    ) -> Webservice:
        """Serve ``models`` as the local service ``name`` (see :meth:`mlws.Model.deploy`);
        with no ``deployment_config``, v1's default (ACI) as a local service: no keys."""
        if deployment_config is None:
            from .cloud import AciWebservice

            deployment_config = AciWebservice.deploy_configuration()
        service = Model.deploy(
            workspace, name, models, inference_config, deployment_config, overwrite=overwrite
        )
        if show_output:
            service.wait_for_deployment(show_output=True)
        return service
