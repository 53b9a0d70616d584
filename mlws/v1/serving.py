"""v1's deployment names where mlws's own defaults differ: services deployed through the v1
names keep v1's key defaults. v1's local service (Docker) has no keys at all, and
``Model.deploy`` without a deployment configuration deploys to ACI, whose keys are off unless
``auth_enabled=True``; mlws's own API keeps keys on by default. Either way the service binds
127.0.0.1 unless ``host`` says otherwise. (``AciWebservice``/``AksWebservice``:
:mod:`mlws.v1.cloud`.)

As v1's ``LocalWebservice``, a service deployed with its ``deploy_configuration`` (and
``LocalWebservice(ws, name)``) answers ``get_keys()``, ``regen_key()`` and ``get_token()`` with
``NotImplementedError('Local web services do not support auth keys.')`` -- unless keys were
asked for (``auth_enabled=True``, which v1's local service does not have).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..models import Model
from ..serving.service import DeployConfiguration, Webservice

if TYPE_CHECKING:
    from ..serving.service import InferenceConfig
    from ..workspace import Workspace

#: v1's words (``azureml.core.webservice.local``).
NO_KEYS = "Local web services do not support auth keys."


class V1LocalDeployConfiguration(DeployConfiguration):
    """What v1's ``LocalWebservice.deploy_configuration`` returns: mlws's settings, marked so
    that ``Model.deploy`` returns a :class:`V1LocalWebservice`."""


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

        config = Local.deploy_configuration(port, auth_enabled=auth_enabled, **settings)
        return V1LocalDeployConfiguration(
            **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        )

    def _no_keys(self) -> None:
        """v1's local service has no keys: raise as it does (when none were asked for)."""
        if not self.config.get("authEnabled", True):
            raise NotImplementedError(NO_KEYS)

    def get_keys(self) -> tuple[str | None, str | None]:
        """:raises NotImplementedError: as v1, the service has no keys (``auth_enabled``
        left off); otherwise ``(primary, secondary)``."""
        self._refresh()
        self._no_keys()
        return super().get_keys()

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """:raises NotImplementedError: as v1, the service has no keys; otherwise as
        :meth:`mlws.serving.Webservice.regen_key`."""
        self._no_keys()
        super().regen_key(key, set_key)

    def get_token(self) -> Any:
        """:raises NotImplementedError: always (v1's local service has no tokens)."""
        raise NotImplementedError(NO_KEYS)

    def run(self, input_data: Any) -> Any:
        """Score ``input_data`` (see :meth:`mlws.serving.Webservice.run`), with the key when
        the service has one."""
        return Webservice(self.workspace, self.name).run(input_data)


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
        if isinstance(deployment_config, V1LocalDeployConfiguration):
            service = V1LocalWebservice(workspace, name)
        if show_output:
            service.wait_for_deployment(show_output=True)
        return service
