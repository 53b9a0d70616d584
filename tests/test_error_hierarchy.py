"""One error hierarchy: every MlwsError subclass lives in mlws/errors.py (STYLE, Errors)."""

from __future__ import annotations

import importlib
import pkgutil

import mlws
from mlws.errors import MlwsError


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_mlws_error_is_defined_in_errors_py() -> None:
    for info in pkgutil.walk_packages(mlws.__path__, "mlws."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI when imported
        importlib.import_module(info.name)
    elsewhere = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in _subclasses(MlwsError)
        if c.__module__.startswith("mlws.") and c.__module__ != "mlws.errors"
    )
    assert elsewhere == []


def test_moved_errors_still_import_from_their_modules() -> None:
    from mlws import errors
    from mlws.datasets import DatasetNotFound
    from mlws.environments import EnvironmentBuildError, EnvironmentNotFound
    from mlws.keyvault import KeyvaultKeyError, SecretNotFound

    assert DatasetNotFound is errors.DatasetNotFound
    assert EnvironmentBuildError is errors.EnvironmentBuildError
    assert EnvironmentNotFound is errors.EnvironmentNotFound
    assert KeyvaultKeyError is errors.KeyvaultKeyError
    assert SecretNotFound is errors.SecretNotFound
