"""``mlws experiment ...``: experiments and their run counts."""

from __future__ import annotations

import click

from .common import CONTEXT, open_workspace, print_json, table, when


@click.group(context_settings=CONTEXT)
def experiment() -> None:
    """List experiments."""


@experiment.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def experiment_list(ctx: click.Context, as_json: bool) -> None:
    """List experiments with their run counts.

    \b
    Example:
      mlws experiment list
    """
    from ..experiments import experiment_summaries

    rows = experiment_summaries(open_workspace(ctx))
    if as_json:
        print_json([dict(r) for r in rows])
    else:
        table(
            [[r["name"], r["runs"], when(r["last_run"]), when(r["created"])] for r in rows],
            ["experiment", "runs", "last run", "created"],
        )
