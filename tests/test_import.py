"""Startup stays cheap: importing mlws or asking for help loads no heavy module."""

import subprocess
import sys

HEAVY = ("joblib", "numpy", "pandas", "pyarrow", "starlette", "sqlite_utils", "dask", "yaml")


def _loaded(code: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    probe = f"{code}\nimport sys\nprint('LOADED:' + ','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    last = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED:")][-1]
    return [m for m in last[len("LOADED:") :].split(",") if m]


def test_import_mlws_is_light():
    assert _loaded("import mlws") == []


def test_cli_help_is_light():
    code = "from mlws.cli import cli\ntry:\n    cli(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass"
    assert _loaded(code) == []


def test_opening_a_workspace_and_logging_is_light(tmp_path):
    code = (
        f"import mlws\nws = mlws.Workspace.create({str(tmp_path / 'w')!r})\nws.close()\n"
        f"ws = mlws.Workspace({str(tmp_path / 'w')!r})\n"
        "run = mlws.Experiment(ws, 'e').start_logging()\nrun.log('m', 1)\nrun.complete()"
    )
    # creating the workspace applies migrations (sqlite_utils); that is the only heavy import
    loaded = _loaded(code)
    assert "numpy" not in loaded or "sqlite_utils" in loaded
    code_open_only = (
        f"import mlws\nws = mlws.Workspace({str(tmp_path / 'w')!r})\n"
        "run = mlws.Experiment(ws, 'e').start_logging()\nrun.log('m', 1)\nrun.complete()"
    )
    assert _loaded(code_open_only) == []
    # What every run's Run.get_context() pays (a sweep's trial, bench 13): a folder path never
    # imports the remote client (http.client, email, ssl), nor secrets/hmac or uuid/platform.
    light = ("mlws.remote.client", "http.client", "ssl", "secrets", "uuid", "platform")
    assert _loaded(code_open_only, light) == []


def test_python_dash_m_mlws_is_the_cli(tmp_path):
    """``python -m mlws`` works like the ``mlws`` command (a new user's first try, issue 11)."""
    out = subprocess.run(
        [sys.executable, "-m", "mlws", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("mlws")
    bad = subprocess.run(
        [sys.executable, "-m", "mlws", "-w", str(tmp_path / "nope"), "workspace", "show"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("Error: "), bad.stderr
