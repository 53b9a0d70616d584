"""Startup stays cheap: importing mlws or asking for help loads no heavy module."""

import os
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


def test_a_warm_launchers_imports_are_light():
    """What a launcher imports before forking supervisors: no heavy module (sqlite_utils alone
    was ~0.5 s of CPU in every launcher, which a workspace's runs start again and again)."""
    code = (
        "import importlib\nfrom mlws.compute.launcher import WARM, WARM_LATER\n"
        "for name in WARM + WARM_LATER:\n"
        "    module, _, attr = name.partition(':')\n"
        "    getattr(importlib.import_module(module), attr or '__name__')"
    )
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


#: What a run's ``from mlws import Run; Run.get_context(); run.log(...)`` no longer loads
#: (issue 12: every HyperDrive trial pays it): dataclasses pulls in inspect (~7 ms), prctl's
#: ctypes, tempfile (random, shutil), hashlib (OpenSSL), socket, subprocess, glob.
RUN_PATH_UNUSED = (
    "dataclasses",
    "inspect",
    "ctypes",
    "tempfile",
    "shutil",
    "hashlib",
    "socket",
    "subprocess",
    "glob",
    "mlws.remote.client",
    "sqlite_utils",
    "numpy",
)


def test_a_submitted_runs_get_context_is_light(tmp_path):
    import json

    import mlws

    src = tmp_path / "src"
    src.mkdir()
    (src / "probe.py").write_text(
        "import json, os, sys\n"
        "from mlws import Run\n"
        "run = Run.get_context()\n"
        "run.log('m', 1)\n"
        f"loaded = [m for m in {RUN_PATH_UNUSED!r} if m in sys.modules]\n"
        "from mlws import catalog\n"
        "print('PROBE ' + json.dumps({'loaded': loaded, 'kinds': os.environ.get("
        "catalog.FS_KINDS_ENV), 'mine': [list(k) for k in catalog._fs_kinds]}))\n"
    )
    ws = mlws.Workspace.create(str(tmp_path / "ws"))
    try:
        # A fresh interpreter, as a first run or one not forked warm has (compute.warmstart):
        # a script forked from its supervisor finds what the supervisor imported.
        env = mlws.Environment("fresh")
        env.environment_variables = {"MLWS_WARM_START": "0"}
        run = mlws.Experiment(ws, "e").submit(
            mlws.ScriptRunConfig(str(src), "probe.py", environment=env)
        )
        run.wait_for_completion(raise_on_error=True)
        assert run.get_metrics() == {"m": 1}
        out = tmp_path / "logs"
        run.download_files(prefix="logs", output_directory=str(out))
        text = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
        line = [ln for ln in text.splitlines() if ln.startswith("PROBE ")][-1]
        probe = json.loads(line[len("PROBE ") :])
    finally:
        ws.close()
    assert probe["loaded"] == [], probe
    # The workspace folder's network answer came from the supervisor (no mount-table scan),
    # keyed by this host, the folder's device and real path.
    kinds = json.loads(probe["kinds"])
    folder = os.path.realpath(tmp_path / "ws")
    assert [folder, False] in [[k[2], k[3]] for k in kinds]
    assert [folder, os.stat(folder).st_dev] in probe["mine"]
