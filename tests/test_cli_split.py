"""The CLI is one module per noun, imported when its command is used (issue 11)."""

import subprocess
import sys

import click

from mlws.cli import COMMANDS, cli


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\nfrom mlws.cli import cli\n"
        f"try:\n    cli({argv!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('MODS:' + ','.join(m for m in sys.modules if m.startswith('mlws')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MODS:")][-1]
    return set(line[len("MODS:") :].split(","))


def test_help_loads_no_library_module():
    loaded = _modules_after(["--help"])
    library = {
        m for m in loaded if not m.startswith("mlws.cli") and m not in ("mlws", "mlws.errors")
    }
    assert library == set()


def test_a_command_loads_only_its_own_noun(tmp_path):
    from mlws import Workspace

    Workspace.create(tmp_path / "ws").close()
    loaded = _modules_after(["-w", str(tmp_path / "ws"), "experiment", "list"])
    assert "mlws.cli.experiments" in loaded
    assert not {"mlws.cli.datasets", "mlws.cli.runs", "mlws.cli.services"} & loaded


def test_every_listed_command_resolves():
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        assert isinstance(cli.get_command(ctx, name), click.Command), name
    assert cli.get_command(ctx, "nope") is None
    model = cli.get_command(ctx, "model")
    assert "deploy" in model.list_commands(click.Context(model))


def test_dataset_formats_match_the_library():
    from mlws.cli.datasets import FORMATS
    from mlws.tabular import FORMATS as LIBRARY_FORMATS

    assert FORMATS == LIBRARY_FORMATS
