"""``python -m mlws``: the same as the ``mlws`` command (as ``python -m sqlite_utils`` is)."""

from .cli import cli

cli(prog_name="mlws")
