"""``mlws sweep``: a HyperDrive sweep of a script from the command line."""

from __future__ import annotations

from typing import Any

import click

from .common import CONTEXT, key_values, open_workspace, print_json


@click.command("sweep", context_settings={"ignore_unknown_options": True, **CONTEXT})
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--param",
    "params",
    multiple=True,
    required=True,
    metavar="NAME=EXPR(ARGS)",
    help="A hyperparameter and its range: choice, randint, uniform, quniform, loguniform,"
    " qloguniform, normal, qnormal, lognormal, qlognormal (repeatable). Passed as --NAME VALUE.",
)
@click.option("--metric", required=True, help="The primary metric the script logs.")
@click.option(
    "--goal",
    type=click.Choice(["maximize", "minimize"], case_sensitive=False),
    default="maximize",
    show_default=True,
)
@click.option(
    "--sampling",
    type=click.Choice(["random", "grid", "bayesian"], case_sensitive=False),
    default="random",
    show_default=True,
    help="How values are drawn (grid: choice only; bayesian: needs mlws[sweeps]).",
)
@click.option("--seed", type=int, help="Seed of random sampling (default: drawn and recorded).")
@click.option(
    "--max-runs", type=int, default=20, show_default=True, help="At most this many trials."
)
@click.option("--max-concurrent", type=int, default=4, show_default=True, help="Trials at a time.")
@click.option(
    "--max-duration-minutes", type=float, default=10080, show_default=True, help="Stop after."
)
@click.option(
    "--policy",
    default="none",
    show_default=True,
    help="Early termination: none, bandit:slack=0.1,interval=1,delay=0 (or amount=),"
    " median:interval=1,delay=5, truncation:percent=20,interval=1.",
)
@click.option(
    "-e", "--experiment", "exp_name", default="default", show_default=True, help="Experiment name."
)
@click.option(
    "-d", "--source-directory", default=".", show_default=True, help="The script's folder."
)
@click.option("-t", "--target", default="local", show_default=True, help="Compute target.")
@click.option("--tag", "tags", multiple=True, help="Tag key=value of the sweep (repeatable).")
@click.option("--wait", is_flag=True, help="Wait for the sweep to end and show the best trial.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the sweep's run id.")
@click.option("--json", "as_json", is_flag=True, help="Print the sweep as JSON.")
@click.pass_context
def sweep(
    ctx: click.Context,
    script: str,
    args: tuple[str, ...],
    params: tuple[str, ...],
    metric: str,
    goal: str,
    sampling: str,
    seed: int | None,
    max_runs: int,
    max_concurrent: int,
    max_duration_minutes: float,
    policy: str,
    exp_name: str,
    source_directory: str,
    target: str,
    tags: tuple[str, ...],
    wait: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Sweep SCRIPT's hyperparameters: each trial is a child run given --NAME VALUE after ARGS.

    Returns at once; the sweep goes on in the background (``mlws run list --parent ID`` shows
    its trials with their hyperparameters).

    \b
    Example:
      mlws sweep train.py -e demo --param 'lr=uniform(0.001,0.1)' \\
          --param 'bs=choice(16,32)' --metric accuracy --goal maximize \\
          --max-runs 20 --max-concurrent 4 --policy bandit:slack=0.1,interval=1
    """
    from ..compute import target_config
    from ..experiments import Experiment, check_experiment_name
    from ..hyperdrive import (
        BayesianParameterSampling,
        GridParameterSampling,
        HyperDriveConfig,
        RandomParameterSampling,
    )
    from ..hyperdrive.policy import parse_policy
    from ..hyperdrive.sampling import parse_expression
    from ..runconfig import ScriptRunConfig

    # Everything is checked before the experiment is created: bad input changes nothing.
    tag_values = key_values(tags)
    space = dict(parse_expression(p) for p in params)
    cls: Any = {
        "random": RandomParameterSampling,
        "grid": GridParameterSampling,
        "bayesian": BayesianParameterSampling,
    }[sampling.lower()]
    sampler = cls(
        space, {"seed": seed} if seed is not None and cls is RandomParameterSampling else None
    )
    cfg = HyperDriveConfig(
        run_config=ScriptRunConfig(
            source_directory=source_directory,
            script=script,
            arguments=list(args),
            compute_target=target,
        ),
        hyperparameter_sampling=sampler,
        primary_metric_name=metric,
        primary_metric_goal=goal,
        max_total_runs=max_runs,
        max_concurrent_runs=max_concurrent,
        max_duration_minutes=max_duration_minutes,
        policy=parse_policy(policy),
    )
    ws = open_workspace(ctx)
    cfg.run_config.validate()
    check_experiment_name(exp_name)
    if ws.remote is None:  # a remote workspace's server checks its own targets
        target_config(ws, target)
    r = Experiment(ws, exp_name).submit(cfg, tags=tag_values or None)
    if quiet:
        click.echo(r.id)
    elif as_json:
        print_json({"id": r.id, "experiment": exp_name, "status": r.get_status()})
    else:
        click.echo(
            f"Submitted sweep {r.id} (experiment {exp_name}, at most {max_runs} trials,"
            f" {max_concurrent} at a time)"
        )
    if wait:
        details = r.wait_for_completion(raise_on_error=False)
        if details["status"] != "Completed":
            msg = details.get("error", {}).get("error", {}).get("message", "")
            raise click.ClickException(f"sweep {r.id} ended {details['status']}: {msg}")
        best = r.get_children_sorted_by_primary_metric(top=1, discard_no_metric=True)
        if best and not quiet and not as_json:
            b = best[0]
            click.echo(
                f"Best trial {b['run_id']}: {metric} = {b['best_primary_metric']}"
                f" with {b['hyperparameters']}"
            )
