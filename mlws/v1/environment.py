"""v1's ``azureml.core.Environment``: mlws's :class:`~mlws.environments.Environment` with v1's
defaults, where mlws's own differ.

- ``python.user_managed_dependencies`` starts False, as in v1: packages set in
  ``python.conda_dependencies`` are built into the run's environment (mlws's own default, True,
  would ignore them and run on the submitting interpreter). An environment that declares no
  package still runs on the submitting interpreter: there is nothing to build, and a bare
  virtualenv would only hide the packages the driver's Python has.
- A pinned Python (``python=3.8``, v1's defaults pin one) that this machine lacks is noted in
  the build log and the environment built with this Python (conda would have fetched it).
- ``environment_variables`` starts as v1's ``{"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}``; ``docker``
  is v1's ``DockerSection``.
- ``Environment.get(ws, "AzureML-...")`` resolves v1's curated environment names
  (:mod:`mlws.v1.curated`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..environments import Environment

if TYPE_CHECKING:
    from ..workspace import Workspace


class DockerSection:
    """``env.docker`` (v1): whether and from which image a run's container is built. Runs
    ask for Docker with ``enabled = True`` (or ``DockerConfiguration(use_docker=True)``);
    see :mod:`mlws.compute.docker` for what mlws does with it."""

    def __init__(self) -> None:
        from .cloud import DEFAULT_CPU_IMAGE

        self.enabled = False
        self.base_image: str | None = DEFAULT_CPU_IMAGE
        self.base_dockerfile: str | None = None
        self.build_context: Any = None
        self.base_image_registry: Any = None
        self.shm_size: str | None = None
        self.shared_volumes = True
        self.arguments: list[str] = []
        self.gpu_support = False
        self.platform: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The section in v1's camelCase field names (only what a local run can use)."""
        return {
            "enabled": bool(self.enabled),
            "baseImage": self.base_image,
            "baseDockerfile": self.base_dockerfile,
            "shmSize": self.shm_size,
            "arguments": list(self.arguments),
        }


def declares_packages(env: Environment) -> bool:
    """Whether ``env`` names any package to install (pip beyond the SDK's own, which the layer
    stands in for, or conda beyond Python and pip)."""
    from ..environments import IMPLICIT_CONDA
    from . import without_sdk

    deps = env.python.conda_dependencies
    _with_sdk, sdk = without_sdk(deps.pip_packages)
    own = [p for p in deps.pip_packages if p not in sdk]  # not what the SDK brought
    return bool(own) or any(not IMPLICIT_CONDA.match(p) for p in deps.conda_packages)


class V1Environment(Environment):
    """An environment with v1's defaults (see the module docstring): conda dependencies set on
    it are built, one that declares no package runs on the submitting interpreter."""

    def __init__(self, name: str, **azure_kwargs: Any) -> None:
        super().__init__(name, **azure_kwargs)
        self.python.user_managed_dependencies = False
        self.python.exact_python_version = False
        self.environment_variables = {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}  # v1's, checked
        self.docker = DockerSection()

    @property
    def managed(self) -> bool:
        """Built by mlws: not user-managed, and some package is declared."""
        return not self.python.user_managed_dependencies and declares_packages(self)

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`mlws.Environment.to_dict`, with v1's ``docker`` section."""
        return {**super().to_dict(), "docker": self.docker.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> V1Environment:
        """As :meth:`mlws.Environment.from_dict`; a stored ``docker`` section is kept."""
        env = super().from_dict(data)
        assert isinstance(env, V1Environment)
        docker = data.get("docker") or {}
        env.docker.enabled = bool(docker.get("enabled", False))
        env.docker.base_image = docker.get("baseImage", env.docker.base_image)
        env.docker.base_dockerfile = docker.get("baseDockerfile")
        env.docker.shm_size = docker.get("shmSize")
        env.docker.arguments = list(docker.get("arguments") or [])
        return env

    @classmethod
    def get(  # type: ignore[override]
        cls,
        workspace: Workspace,
        name: str,
        version: str | int | None = None,
        label: Any = None,
    ) -> V1Environment:
        """A registered environment, or one of v1's curated ones by name (``AzureML-...``),
        made on first use (see :mod:`mlws.v1.curated`).

        :raises EnvironmentNotFound: neither registered nor curated.
        """
        from ..errors import EnvironmentNotFound
        from .curated import curated_environment

        try:
            env = super().get(workspace, name, version, label)
        except EnvironmentNotFound:
            curated = curated_environment(workspace, name, version)
            if curated is None:
                raise
            env = super().get(workspace, curated.name)
        assert isinstance(env, V1Environment)
        return env

    @classmethod
    def list(cls, workspace: Workspace) -> dict[str, V1Environment]:  # type: ignore[override]
        """The latest version of every registered environment, by name."""
        return {n: cls.get(workspace, n) for n in Environment.list(workspace)}
