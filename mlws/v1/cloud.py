"""v1 names that only mean something in Azure: accepted, so unchanged v1 code runs, and mapped
onto what mlws does locally, with a one-line note (once per process) where they change nothing.

- the authentication classes: nothing to log in to; ``get_authentication_header()`` answers an
  empty bearer token;
- ``AciWebservice`` and ``AksWebservice``: their ``deploy_configuration`` deploys a local
  service (``LocalWebservice``) with v1's key default of each (ACI off, AKS on);
- ``DEFAULT_CPU_IMAGE`` and ``DEFAULT_GPU_IMAGE``: the image names, as strings.
"""

from __future__ import annotations

from typing import Any

from .names import note_cloud_args, note_once

#: v1's default base images (``azureml.core.runconfig``): a run asking for Docker without naming
#: an image gets the CPU one (``mlws.compute.docker``).
DEFAULT_CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"


class AbstractAuthentication:
    """Base of v1's authentication classes: mlws works on this machine, so there is nothing
    to log in to; constructing one notes that once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        note_once(
            "auth",
            f"{type(self).__name__}: mlws works on this machine; no login happens or is needed",
        )

    def get_authentication_header(self) -> dict[str, str]:
        """v1's bearer header; empty, as mlws needs none."""
        return {"Authorization": "Bearer "}


class InteractiveLoginAuthentication(AbstractAuthentication):
    """v1's browser login: accepted; nothing to log in to."""


class ServicePrincipalAuthentication(AbstractAuthentication):
    """v1's service-principal login: accepted; nothing to log in to."""


class MsiAuthentication(AbstractAuthentication):
    """v1's managed-identity login: accepted; nothing to log in to."""


class AzureCliAuthentication(AbstractAuthentication):
    """v1's ``az login`` credentials: accepted; nothing to log in to."""


def _local_config(kind: str, auth_default: bool, auth_enabled: bool | None, **cloud: Any) -> Any:
    from ..serving import LocalWebservice

    note_once(
        f"deploy:{kind}",
        f"{kind}.deploy_configuration: deployed as a local service on this machine (127.0.0.1)",
    )
    note_cloud_args(f"{kind}.deploy_configuration", **cloud)
    return LocalWebservice.deploy_configuration(
        auth_enabled=auth_default if auth_enabled is None else bool(auth_enabled)
    )


class AciWebservice:
    """v1's Azure Container Instances target: here a local service (keys off, as v1's ACI)."""

    @staticmethod
    def deploy_configuration(
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        location: str | None = None,
        auth_enabled: bool | None = None,
        ssl_enabled: bool | None = None,
        enable_app_insights: bool | None = None,
        dns_name_label: str | None = None,
        **cloud: Any,
    ) -> Any:
        """A ``LocalWebservice`` configuration; the container settings are noted and ignored."""
        return _local_config(
            "AciWebservice",
            False,
            auth_enabled,
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            location=location,
            ssl_enabled=ssl_enabled,
            enable_app_insights=enable_app_insights,
            dns_name_label=dns_name_label,
            **cloud,
        )


class AksWebservice:
    """v1's Kubernetes target: here a local service (keys on, as v1's AKS)."""

    @staticmethod
    def deploy_configuration(
        autoscale_enabled: bool | None = None,
        autoscale_min_replicas: int | None = None,
        autoscale_max_replicas: int | None = None,
        auth_enabled: bool | None = None,
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        enable_app_insights: bool | None = None,
        num_replicas: int | None = None,
        **cloud: Any,
    ) -> Any:
        """A ``LocalWebservice`` configuration; the cluster settings are noted and ignored."""
        return _local_config(
            "AksWebservice",
            True,
            auth_enabled,
            autoscale_enabled=autoscale_enabled,
            autoscale_min_replicas=autoscale_min_replicas,
            autoscale_max_replicas=autoscale_max_replicas,
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            enable_app_insights=enable_app_insights,
            num_replicas=num_replicas,
            **cloud,
        )


def set_diagnostics_collection(send_diagnostics: bool = True, **_kwargs: Any) -> None:
    """v1's telemetry switch (``azureml.telemetry``): mlws sends nothing anywhere, so this
    does nothing and says so once."""
    note_once("telemetry", "set_diagnostics_collection: mlws collects no telemetry; nothing to set")
