"""``mlws v1 enable | disable | status``: the ``azureml`` layer in the user's own Python
environment, for their drivers and notebooks (runs get it without this, see :mod:`mlws.v1`).

Enabling writes ``mlws-azureml-v1.pth`` into the interpreter's site-packages: a ``.pth`` line
naming a folder *appends* it to ``sys.path`` at start-up, after site-packages itself, so the
layer can never shadow a real azureml-core installed there. Enabling refuses while one is
there (the layer would only be a trap if it were uninstalled later without notice).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import V1LayerError
from . import SHIM_DIR

#: The file ``enable`` writes into site-packages.
PTH_NAME = "mlws-azureml-v1.pth"


@dataclass
class LayerStatus:
    """Where the layer stands in one site-packages folder."""

    site_packages: Path
    enabled: bool
    real_sdk: Path | None  # a real azureml-core's package folder, if one is installed there

    @property
    def summary(self) -> str:
        """One line: enabled, disabled or the real azureml-core present."""
        if self.real_sdk is not None:
            return f"real azureml-core installed ({self.real_sdk}); mlws's layer stays off" + (
                f" (remove the stale {PTH_NAME})" if self.enabled else ""
            )
        state = "enabled" if self.enabled else "disabled"
        return f"{state} in {self.site_packages}"


#: Names the folder ``enable``/``disable``/``status`` act on instead of this interpreter's
#: site-packages (documented in the README; the tests point it at a temp folder, so no test
#: ever changes the interpreter that runs them).
SITE_ENV = "MLWS_V1_SITE_PACKAGES"


def site_packages() -> Path:
    """The active interpreter's site-packages (``sysconfig``'s ``purelib``), or the folder
    ``MLWS_V1_SITE_PACKAGES`` names."""
    return Path(os.environ.get(SITE_ENV) or sysconfig.get_paths()["purelib"])


def real_azureml_core(site: Path) -> Path | None:
    """A real ``azureml/core`` package in ``site`` (azureml-core installed), or ``None``."""
    core = site / "azureml" / "core"
    return core if (core / "__init__.py").is_file() else None


def status(site: str | os.PathLike[str] | None = None) -> LayerStatus:
    """Whether the layer is enabled in ``site`` (default: the active interpreter's
    site-packages) and whether a real azureml-core is installed there (by default: anywhere
    on this interpreter's path, the user's site-packages included)."""
    if site is not None:
        folder = Path(site)
        return LayerStatus(folder, (folder / PTH_NAME).is_file(), real_azureml_core(folder))
    folder = site_packages()
    real = real_azureml_core(folder)
    for entry in sys.path:
        if real is None and entry and os.path.abspath(entry) != SHIM_DIR:
            real = real_azureml_core(Path(entry))
    return LayerStatus(folder, (folder / PTH_NAME).is_file(), real)


def enable(site: str | os.PathLike[str] | None = None) -> LayerStatus:
    """Turn the layer on in ``site`` (default: the active interpreter's site-packages).

    :raises V1LayerError: a real azureml-core is installed there (nothing is written), or the
        folder is missing or not writable.
    """
    st = status(site)
    if st.real_sdk is not None:
        raise V1LayerError(
            f"a real azureml-core is installed in {st.site_packages} ({st.real_sdk}); it is used"
            " as is and mlws's azureml layer is not enabled (pip uninstall azureml-core first to"
            " use mlws's)"
        )
    if not st.site_packages.is_dir():
        raise V1LayerError(f"no site-packages folder at {st.site_packages}")
    target = st.site_packages / PTH_NAME
    from ..dirs import write_atomic

    try:
        write_atomic(target, SHIM_DIR + "\n", 0o644)
    except OSError as e:
        raise V1LayerError(
            f"cannot write to {st.site_packages} ({e.strerror or e}); use a virtual environment"
            " you own, or run as the owner of this Python"
        ) from None
    return status(st.site_packages)


def disable(site: str | os.PathLike[str] | None = None) -> LayerStatus:
    """Turn the layer off in ``site``; nothing happens if it was off.

    :raises V1LayerError: the folder is not writable.
    """
    folder = Path(site) if site is not None else site_packages()
    try:
        (folder / PTH_NAME).unlink(missing_ok=True)
    except OSError as e:
        raise V1LayerError(f"cannot remove {folder / PTH_NAME} ({e.strerror or e})") from None
    return status(folder)
