"""The studio: web pages over a workspace (experiments, runs tables, run pages with live metric
charts and logs, run comparison, sweeps, registries), served by ``mlws studio`` on this machine
and by ``mlws serve`` at ``/`` behind a sign-in (``signin``).

Server-rendered Jinja2 pages whose URLs also answer JSON; charts drawn by a vendored uPlot
(``static/uplot``, MIT, its licence kept); live runs over server-sent events; no asset comes
from the internet. ``data`` computes what run pages show, ``registry`` what the models, services, datasets,
pipelines and compute pages show, ``sweeps`` a HyperDrive sweep's view, ``tryit`` a service's
"try it" call, ``app`` serves it, ``downsample`` keeps long series to ~2,000 points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["studio_app"]


def studio_app(ws: Any, **kwargs: Any) -> Starlette:
    """The studio's starlette application for workspace ``ws`` (see :func:`mlws.studio.app.studio_app`)."""
    from .app import studio_app as build

    return build(ws, **kwargs)
