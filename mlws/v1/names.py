"""Plumbing of the ``azureml`` layer: lazy re-exports, once-only notes, missing-name errors.

Every shim module maps v1 names to ``"module:attribute"`` strings and imports the target on
first use (PEP 562), so ``import azureml.core`` costs little more than ``import mlws`` (issue
12's budget: 50 ms) and a run that only logs metrics never imports the serving or Dask code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

_noted: set[str] = set()


def note_once(key: str, message: str) -> None:
    """Print ``message`` to stderr the first time ``key`` is noted in this process: a
    cloud-only argument is accepted but changes nothing here, and v1 code that passes it on
    every call must not fill the log with the same line."""
    if key in _noted:
        return
    _noted.add(key)
    print(f"mlws: {message}", file=sys.stderr)


def note_cloud_args(what: str, **args: Any) -> None:
    """One note naming the cloud-only arguments given to ``what`` (those not ``None``)."""
    given = sorted(k for k, v in args.items() if v is not None and v is not False)
    if given:
        note_once(
            f"{what}:{','.join(given)}",
            f"{what}: {', '.join(given)} only matter in Azure; ignored by mlws",
        )


def lazy_exports(
    module_name: str,
    names: dict[str, str],
    missing: dict[str, str] | None = None,
    unavailable: str | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for a shim module re-exporting ``names``
    (``{"Run": "mlws.runs:Run"}``).

    ``missing``: v1 names mlws does not have, each with the sentence saying why and what to use
    instead; asking for one raises ``ImportError`` with it (``from m import X`` shows that
    sentence; an ``AttributeError`` would become Python's bare "cannot import name").
    ``unavailable``: the sentence for a name whose mlws module (or attribute) is not in this
    mlws yet (a wing still being built, e.g. ``mlws.hyperdrive``).
    """
    module = sys.modules[module_name]
    missing = missing or {}

    def not_here(name: str, why: str) -> ImportError:
        return ImportError(f"{module_name}.{name}: {why}", name=module_name)

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            if name in missing:
                raise not_here(name, missing[name])
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        target, _, attr = where.partition(":")
        try:
            found = importlib.import_module(target)
            value = getattr(found, attr) if attr else found
        except (ModuleNotFoundError, AttributeError) as e:
            gone = isinstance(e, AttributeError) or (
                e.name is not None and (target == e.name or target.startswith(e.name + "."))
            )
            if not gone or unavailable is None:
                raise
            raise not_here(name, unavailable) from None
        setattr(module, name, value)  # looked up once
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *names})

    return __getattr__, __dir__, sorted(names)


def step_aside_for_real_sdk(module_name: str) -> None:
    """Refuse to load the layer's ``module_name`` when the real azureml-core is what
    ``azureml.core`` resolves to: its objects are not mlws's, and a v1 name half real, half
    mlws would fail in confusing ways. (Seen when a real azureml-core comes first on
    ``sys.path`` and an ``azureml`` distribution it needs, e.g. azureml-widgets, is missing.)

    :raises ImportError: naming the distribution to install.
    """
    import importlib.util
    import os

    from . import SHIM_DIR

    spec = importlib.util.find_spec("azureml.core")
    origin = os.path.abspath(spec.origin) if spec and spec.origin else ""
    if spec is not None and not origin.startswith(SHIM_DIR + os.sep):
        top = module_name.split(".")[1]
        raise ImportError(
            f"{module_name}: the real azureml-core is installed in this Python ({origin}), so "
            f"mlws's azureml layer steps aside; install the matching azureml-{top} package too, "
            "or uninstall azureml-core to use mlws's layer",
            name=module_name,
        )
