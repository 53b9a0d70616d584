"""``python -m mlws.cli``: the same as the ``mlws`` command."""

from . import cli

cli(prog_name="mlws")
