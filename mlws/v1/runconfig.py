"""v1's ``RunConfiguration`` and ``ScriptRunConfig``: mlws's, with v1's default environment.

In v1 a new run configuration holds an environment object, so v1 code changes it in place
(``run_config.environment.python.conda_dependencies = ...``) or passes
``RunConfiguration(conda_dependencies=...)``; mlws's own starts with none (the submitting
Python). Here a new one holds a v1 environment (:class:`~mlws.v1.environment.V1Environment`):
it declares no package, so it still runs on the submitting Python until packages are set on it.
"""

from __future__ import annotations

from typing import Any

from ..runconfig import RunConfiguration, ScriptRunConfig
from .environment import V1Environment


class V1RunConfiguration(RunConfiguration):
    """A run configuration whose ``environment`` is a v1 environment to change in place;
    ``conda_dependencies`` sets its packages (v1's argument)."""

    def __init__(
        self,
        script: str | None = None,
        arguments: list[Any] | None = None,
        framework: str = "Python",
        communicator: str = "None",
        conda_dependencies: Any = None,
        command: list[str] | str | None = None,
        **azure_kwargs: Any,
    ) -> None:
        super().__init__(script, arguments, framework, communicator, command, **azure_kwargs)
        # "default" is mlws's name for the submitting Python's environment (runs list none)
        self.environment = V1Environment("default")
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies


class V1ScriptRunConfig(ScriptRunConfig):
    """mlws's :class:`~mlws.runconfig.ScriptRunConfig` whose own run configuration (when none
    is given) is a :class:`V1RunConfiguration`."""

    def __init__(
        self,
        source_directory: str = ".",
        script: str | None = None,
        arguments: list[Any] | None = None,
        run_config: RunConfiguration | None = None,
        compute_target: Any = None,
        environment: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            source_directory,
            script,
            arguments,
            run_config if run_config is not None else V1RunConfiguration(),
            compute_target,
            environment,
            **kwargs,
        )
