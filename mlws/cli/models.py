"""``mlws model ...``: the model registry."""

from __future__ import annotations

import time
from typing import Any

import click

from .common import CONTEXT, key_values, open_workspace, print_json, table


@click.group(context_settings=CONTEXT)
def model() -> None:
    """Register, list, inspect, download and delete models."""


def get_model(ws: Any, ref: str, version: int | None) -> Any:
    """NAME, NAME:VERSION, or NAME with --version."""
    from ..models import Model

    name, sep, v = ref.rpartition(":")
    if sep and v.isdigit():
        if version is not None and int(v) != version:
            raise click.UsageError(f"{ref} and --version {version} disagree")
        return Model(ws, name, version=int(v))
    return Model(ws, ref, version=version)


@model.command("register")
@click.argument("name")
@click.argument("path", required=False)
@click.option(
    "--run", "run_id", help="Register PATH of this run's files (default outputs/model.pkl)."
)
@click.option("--tag", "tags", multiple=True, help="Tag key=value (repeatable).")
@click.option("--property", "properties", multiple=True, help="Property key=value (repeatable).")
@click.option("--description", help="What the model is.")
@click.option("--framework", help="e.g. ScikitLearn, PyTorch, TensorFlow, Onnx.")
@click.option("--framework-version", help="The framework's version.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def model_register(
    ctx: click.Context,
    name: str,
    path: str | None,
    run_id: str | None,
    tags: tuple[str, ...],
    properties: tuple[str, ...],
    description: str | None,
    framework: str | None,
    framework_version: str | None,
    as_json: bool,
) -> None:
    """Register PATH (a file or folder on disk, or of a run with --run) as the next version
    of model NAME.

    \b
    Example:
      mlws model register iris outputs/model.pkl --tag stage=dev
      mlws model register iris outputs/model.pkl --run train_1700000000_ab12cd34
    """
    from ..models import Model

    ws = open_workspace(ctx)
    kwargs = {
        "tags": key_values(tags),
        "properties": key_values(properties),
        "description": description,
        "model_framework": framework,
        "model_framework_version": framework_version,
    }
    if run_id:
        m = ws.get_run(run_id).register_model(name, path or "outputs/model.pkl", **kwargs)
    else:
        if not path:
            raise click.UsageError("give PATH (a file or folder), or --run RUN_ID")
        m = Model.register(ws, path, name, **kwargs)
    if as_json:
        print_json(m.serialize())
    else:
        click.echo(f"Registered model {m.name} version {m.version} ({m.path})")


@model.command("list")
@click.option("--name", help="Only versions of this model.")
@click.option("--tag", "tags", multiple=True, help="key or key=value (repeatable).")
@click.option("--run", "run_id", help="Only models registered from this run.")
@click.option("--latest", is_flag=True, help="Only each model's newest version.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def model_list(
    ctx: click.Context,
    name: str | None,
    tags: tuple[str, ...],
    run_id: str | None,
    latest: bool,
    as_json: bool,
) -> None:
    """List registered models (newest version first within a name).

    \b
    Example:
      mlws model list --latest
      mlws model list --name iris --tag stage=prod
    """
    from ..models import Model

    wanted = [t.split("=", 1) if "=" in t else t for t in tags]
    models = Model.list(open_workspace(ctx), name=name, tags=wanted, run_id=run_id, latest=latest)
    if as_json:
        print_json([m.serialize() for m in models])
        return
    rows = [
        [
            m.name,
            m.version,
            m.path,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(m.created_time)),
            m.run_id or "",
            ", ".join(f"{k}={v}" for k, v in m.tags.items()),
        ]
        for m in models
    ]
    table(rows, ["model", "version", "path", "registered", "run", "tags"])


@model.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--version", type=int, help="A version (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def model_show(ctx: click.Context, ref: str, version: int | None, as_json: bool) -> None:
    """Show a model version: files, tags, properties, lineage.

    \b
    Example:
      mlws model show iris
      mlws model show iris:2 --json
    """
    m = get_model(open_workspace(ctx), ref, version)
    data = {**m.serialize(), "files": m.get_file_names()}
    if as_json:
        print_json(data)
        return
    click.echo(f"{m.id}  ({m.path})")
    for label, value in (
        ("description", m.description),
        ("framework", " ".join(x for x in (m.model_framework, m.model_framework_version) if x)),
        ("run", m.run_id and f"{m.run_id} (experiment {m.experiment_name})"),
        ("registered", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_time))),
    ):
        if value:
            click.echo(f"  {label}: {value}")
    for label, values in (("tags", m.tags), ("properties", m.properties)):
        if values:
            click.echo(f"  {label}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    click.echo("  files:")
    for f in data["files"]:
        click.echo(f"    {f}")


@model.command("download")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--version", type=int, help="A version (default: the latest).")
@click.option(
    "-o", "--output", "target", default=".", show_default=True, help="Folder to write to."
)
@click.option("--exist-ok", is_flag=True, help="Overwrite files that are there.")
@click.pass_context
def model_download(
    ctx: click.Context, ref: str, version: int | None, target: str, exist_ok: bool
) -> None:
    """Copy a model version's files into a folder.

    \b
    Example:
      mlws model download iris:2 -o ./model
    """
    path = get_model(open_workspace(ctx), ref, version).download(target, exist_ok=exist_ok)
    click.echo(path)


@model.command("delete")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--version", type=int, help="A version (default: the latest).")
@click.pass_context
def model_delete(ctx: click.Context, ref: str, version: int | None) -> None:
    """Delete a model version (refused while a service uses it).

    \b
    Example:
      mlws model delete iris:1
    """
    m = get_model(open_workspace(ctx), ref, version)
    m.delete()
    click.echo(f"Deleted model {m.id}")


# ``mlws model deploy`` makes a service; it lives with the other service commands.
from .services import model_deploy  # noqa: E402

model.add_command(model_deploy)
