"""Docs that can't drift: every CLI command is in the README, and the README's commands run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from mlws.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "mlws"):
    # list_commands/get_command: the root group imports each noun's module on first use
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        full = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, full)
        else:
            yield full, cmd


def test_every_command_is_documented_and_has_an_example():
    for full, cmd in _commands(cli):
        assert f"`{full}" in README, f"{full} is missing from README.md"
        assert "Example:" in (cmd.help or ""), f"{full} has no Example: in its help"


def test_first_screen_shape():
    first = README.split("---")[0]
    assert "make demo" in first and "make test" in first
    assert first.count("$ mlws") >= 3


_VOLATILE = re.compile(r"\d{4}-\d\d-\d\d|_\d{10}_[0-9a-f]{8}|r2=|^\s*-+(\s+-+)*\s*$")


@pytest.mark.parametrize("block", range(len(re.findall(r"```console\n", README))))
def test_readme_console_block_runs(tmp_path, block):
    """Each ```console block of the README, run from the repository's root in a new workspace,
    prints what the README shows."""
    text = re.findall(r"```console\n(.*?)```", README, re.S)[block]
    commands, expected = [], []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        else:
            expected.append(line)
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLWS_WORKSPACE": str(tmp_path / "readme-ws"),
    }
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr
    actual = out.stdout.splitlines()
    for line in expected:
        if line.strip() and not _VOLATILE.search(line):
            # column widths may move with the values; compare the words
            assert any(line.split() == a.split() for a in actual), (
                f"README line not produced: {line!r}\n{out.stdout}"
            )
