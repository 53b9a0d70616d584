"""``mlws environment ...``: registered environments and their builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import CONTEXT, key_values, open_workspace, print_json, spinner, table


@click.group(context_settings=CONTEXT)
def environment() -> None:
    """Register, inspect and build environments."""


@environment.command("create")
@click.argument("name")
@click.option(
    "-r", "--requirements", type=click.Path(), help="A pip requirements file (managed environment)."
)
@click.option(
    "--conda-file", type=click.Path(), help="A conda environment.yml; its pip part is installed."
)
@click.option(
    "--pip",
    "pip_packages",
    multiple=True,
    help="A pip requirement (repeatable; managed environment).",
)
@click.option(
    "--python-version", help="Python version of a managed environment (needs pythonX.Y on PATH)."
)
@click.option(
    "--interpreter", type=click.Path(), help="Use this interpreter as it is (user-managed)."
)
@click.option(
    "--env",
    "variables",
    multiple=True,
    help="Environment variable KEY=VALUE for runs (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def environment_create(
    ctx: click.Context,
    name: str,
    requirements: str | None,
    conda_file: str | None,
    pip_packages: tuple[str, ...],
    python_version: str | None,
    interpreter: str | None,
    variables: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register environment NAME (a new version when its definition changed).

    \b
    Example:
      mlws environment create sklearn -r requirements.txt
      mlws environment create tab --pip tabulate --pip six
    """
    from ..environments import CondaDependencies, Environment

    if requirements and conda_file:
        raise click.UsageError("give --requirements or --conda-file, not both")
    if requirements:
        env = Environment.from_pip_requirements(name, requirements)
    elif conda_file:
        env = Environment.from_conda_specification(name, conda_file)
    else:
        env = Environment(name)
    if pip_packages or python_version:
        env.python.user_managed_dependencies = False
        deps = (
            env.python.conda_dependencies if (requirements or conda_file) else CondaDependencies()
        )
        for p in pip_packages:
            deps.add_pip_package(p)
        if python_version:
            deps.python_version = python_version
        env.python.conda_dependencies = deps
    if interpreter:
        if env.managed:
            raise click.UsageError(
                "--interpreter is for user-managed environments; drop the package options"
            )
        env.python.interpreter_path = str(Path(interpreter).absolute())
    env.environment_variables = key_values(variables)
    env.register(open_workspace(ctx))
    if as_json:
        print_json(env.to_dict())
    else:
        kind = "managed" if env.managed else "user-managed"
        click.echo(f"Registered environment {env.name!r} version {env.version} ({kind})")


@environment.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def environment_list(ctx: click.Context, as_json: bool) -> None:
    """List registered environments (latest versions).

    \b
    Example:
      mlws environment list
    """
    from ..environments import Environment

    envs = Environment.list(open_workspace(ctx))
    if as_json:
        print_json([e.to_dict() for e in envs.values()])
        return
    rows = []
    for e in envs.values():
        deps = e.python.conda_dependencies
        what = (
            ", ".join(deps.pip_packages)
            if e.managed
            else (e.python.interpreter_path or "current interpreter")
        )
        rows.append([e.name, e.version, "managed" if e.managed else "user-managed", what])
    table(rows, ["environment", "version", "kind", "packages / interpreter"])


@environment.command("show")
@click.argument("name")
@click.option("--version", "version", help="A version (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def environment_show(ctx: click.Context, name: str, version: str | None, as_json: bool) -> None:
    """Show an environment's definition and where it is built on this machine (a table;
    its stored JSON form with --json).

    \b
    Example:
      mlws environment show sklearn
      mlws environment show sklearn --json
    """
    from ..environments import Environment, envs_dir

    ws = open_workspace(ctx)
    env = Environment.get(ws, name, version)
    data = env.to_dict()
    if env.managed:
        built = envs_dir() / env.spec_hash()
        data["build"] = {
            "specHash": env.spec_hash(),
            "path": str(built),
            "built": (built / ".mlws-complete").exists(),
        }
    if as_json:
        print_json(data)
        return
    python = data["python"]
    deps = python["condaDependencies"]
    rows: list[list[Any]] = [
        ["name", data["name"]],
        ["version", data["version"]],
        ["kind", "managed" if env.managed else "user-managed"],
    ]
    if env.managed:
        rows.append(["python", deps["python"] or "the current interpreter's"])
        rows += [["pip", p] for p in deps["pip"]]
        rows += [["conda", p] for p in deps["conda"]]
        rows += [["pip option", o] for o in deps["pipOptions"]]
        if python["systemSitePackages"]:
            rows.append(["system site packages", "yes"])
    else:
        rows.append(["interpreter", python["interpreterPath"] or "the current interpreter"])
    rows += [[f"env {k}", v] for k, v in data["environmentVariables"].items()]
    if "build" in data:
        rows.append(["built", "yes" if data["build"]["built"] else "no (mlws environment build)"])
        rows.append(["build path", data["build"]["path"]])
    table(rows, ["field", "value"])


@environment.command("build")
@click.argument("name")
@click.option("--version", "version", help="A version (default: the latest).")
@click.pass_context
def environment_build(ctx: click.Context, name: str, version: str | None) -> None:
    """Build environment NAME on this machine now (runs reuse it), printing its interpreter.

    \b
    Example:
      mlws environment build sklearn
    """
    from ..environments import Environment

    ws = open_workspace(ctx)
    env = Environment.get(ws, name, version)
    with spinner(f"Building environment {name!r} version {env.version}") as log:
        python = env.build(ws, log=log)
    click.echo(f"Environment {name!r} version {env.version}: {python}")
