"""``mlws v1 ...``: mlws's ``azureml`` layer (Azure ML SDK v1 names) in this Python."""

from __future__ import annotations

from typing import Any

import click

from .common import CONTEXT, print_json

_SITE = click.option(
    "--site-packages",
    "site",
    type=click.Path(file_okay=False),
    default=None,
    help="The site-packages folder to change (default: this Python's).",
)


@click.group(context_settings=CONTEXT)
def v1() -> None:
    """Run unchanged Azure ML v1 code: the azureml import layer in this Python."""


def _show(st: Any) -> None:
    click.echo(st.summary)


@v1.command("enable")
@_SITE
def v1_enable(site: str | None) -> None:
    """Make `import azureml.core` work in this Python (mlws's layer, after site-packages).

    Refuses when a real azureml-core is installed here: that one is used as is.

    \b
    Example:
      mlws v1 enable
      python driver.py   # from azureml.core import Workspace, Experiment, ...
    """
    from ..v1 import install

    _show(install.enable(site))


@v1.command("disable")
@_SITE
def v1_disable(site: str | None) -> None:
    """Turn mlws's azureml layer off in this Python again.

    \b
    Example:
      mlws v1 disable
    """
    from ..v1 import install

    _show(install.disable(site))


@v1.command("status")
@_SITE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def v1_status(site: str | None, as_json: bool) -> None:
    """Say whether the layer is enabled here, or a real azureml-core is installed.

    \b
    Example:
      mlws v1 status
    """
    from ..v1 import install

    st = install.status(site)
    if as_json:
        print_json(
            {
                "site_packages": str(st.site_packages),
                "enabled": st.enabled,
                "real_azureml_core": str(st.real_sdk) if st.real_sdk else None,
            }
        )
    else:
        _show(st)
