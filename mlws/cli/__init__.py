"""The ``mlws`` command line: a thin layer over the library.

Each command finds the workspace, calls one library function and renders the result (a table, or
JSON with ``--json``). Library errors (:class:`mlws.errors.MlwsError`) become one ``Error: ...``
line and exit status 1.

Each noun has its own module (``mlws run ...`` in ``runs.py``, ``mlws model ...`` in ``models.py``,
shared helpers in ``common.py``); this one holds only the root group, the error edge and the
table of commands. A noun's module is imported when its command is used, so ``mlws --help`` and
``mlws run list`` do not pay for ``mlws dataset``'s imports (pyarrow's format list, 170 ms).
"""

from __future__ import annotations

import errno
import importlib
import os
from typing import Any

import click

from .. import __version__
from ..errors import MlwsError
from .common import CONTEXT

#: command name -> "module:attribute" under mlws.cli, imported on first use.
COMMANDS = {
    "compute": "compute:compute",
    "dataset": "datasets:dataset",
    "datastore": "datastores:datastore",
    "environment": "environments:environment",
    "experiment": "experiments:experiment",
    "fsck": "maintenance:fsck_cmd",
    "gc": "maintenance:gc_cmd",
    "login": "remote:login",
    "model": "models:model",
    "pipeline": "pipelines:pipeline",
    "pipeline-endpoint": "pipelines:pipeline_endpoint",
    "remote": "remote:remote",
    "run": "runs:run",
    "schedule": "schedules:schedule",
    "secret": "keyvault:secret",
    "serve": "serve:serve",
    "service": "services:service",
    "studio": "studio:studio",
    "sweep": "sweeps:sweep",
    "v1": "v1:v1",
    "workspace": "workspace:workspace",
}


class _Group(click.Group):
    """The root group: finds each noun's command in :data:`COMMANDS`, importing its module on
    first use, and turns every library error raised below into a one-line ``Error:`` and exit 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, attr = where.partition(":")
        command: click.Command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlwsError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            # A path the user gave that the system refuses (too long, not a folder, no
            # permission, a read-only share, a full disk): their situation, not a bug. An
            # OSError about no path, of another kind, keeps its traceback.
            user_side = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)
            if e.filename is None and e.errno not in user_side:
                raise
            raise click.ClickException(_os_error_line(e)) from None


def _os_error_line(e: OSError) -> str:
    def shown(name: Any) -> str:
        text = os.fsdecode(name) if isinstance(name, (str, bytes)) else str(name)
        return repr(text) if len(text) <= 80 else f"{text[:60]!r}... ({len(text)} characters)"

    if e.filename is None:
        return e.strerror or type(e).__name__
    where = shown(e.filename) + (f" -> {shown(e.filename2)}" if e.filename2 else "")
    return f"{e.strerror or type(e).__name__}: {where}"


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="mlws")
@click.option(
    "-w",
    "--workspace",
    type=click.Path(),
    envvar=None,
    help="Workspace folder or server URL (default: discovered, see README).",
)
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """mlws: the Azure ML v1 workspace on your own disk.

    \b
    Example:
      mlws run submit train.py -e demo -- --alpha 0.5
      mlws run list -e demo --sort-by metric:r2
    """
    ctx.obj = {"workspace": workspace}
