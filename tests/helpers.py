"""Helpers shared by the tests (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def lazy_import(name: str):  # noqa: ANN201 - a module
    """The top-level module ``name``, imported on its first public attribute use: every xdist
    worker collects every test file, and MLflow's import alone is ~2.5 s of CPU. The calling test
    module is skipped where ``name`` is not installed.

    Not ``importlib.util.LazyLoader``: its module loads on *any* attribute, and pytest's
    collection looks up ``_mock_name`` and ``__wrapped__`` on every module-level name."""
    import importlib
    import importlib.util
    import sys
    import types

    import pytest

    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed", allow_module_level=True)

    class LazyModule(types.ModuleType):
        def __getattr__(self, attr: str):  # noqa: ANN204 - only for names the proxy lacks
            if attr.startswith("_"):  # pytest's probing; the tests use public names only
                raise AttributeError(attr)
            return getattr(importlib.import_module(name), attr)

    return LazyModule(name)


def wait_until(cond: Callable[[], T], timeout: float = 15.0, what: str = "") -> T:
    """Poll ``cond`` until it returns something truthy (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def one_error_line(result) -> str:  # noqa: ANN001 - a click.testing.Result
    """A CLI failure must be exactly one ``Error: ...`` line with exit status 1."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


#: A script waiting on a gate file exits with code 9 after this long; far above any deadline.
SCRIPT_GIVE_UP_S = 45

#: Prepended to test scripts: ``wait_gate(path)`` blocks until the test creates ``path``;
#: ``write_pid(path, pid=None)`` publishes a pid atomically for the test to read.
SCRIPT_PRELUDE = f"""\
import os, sys, time

def wait_gate(path):
    deadline = time.monotonic() + {SCRIPT_GIVE_UP_S}
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            print("gate never opened", flush=True)
            sys.exit(9)
        time.sleep(0.01)

def write_pid(path, pid=None):
    tmp = f"{{path}}.{{os.getpid()}}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid or os.getpid()))
    os.replace(tmp, path)
"""


def kill_run_processes(ws) -> None:  # noqa: ANN001 - a Workspace
    """Kill the supervisors, then the script process groups, that a test's runs left running
    (supervisors first, so none records anything after its script is killed)."""
    import os
    import signal

    from mlws.runs import process_alive

    me = os.getpid()
    rows = ws.catalog.query("SELECT supervisor_pid, supervisor_start, pid, pid_start FROM runs")
    for r in rows:
        if r["supervisor_pid"] and process_alive(r["supervisor_pid"], r["supervisor_start"]):
            try:
                os.kill(r["supervisor_pid"], signal.SIGKILL)
            except OSError:
                pass
    for r in rows:
        if r["pid"] and r["pid"] != me and process_alive(r["pid"], r["pid_start"]):
            try:
                os.killpg(r["pid"], signal.SIGKILL)
            except OSError:
                pass


def processes_of_test(home) -> list:  # noqa: ANN001 - a Path
    """Live processes (other than pytest's own helpers) whose environment has this test's HOME:
    supervisors, clusters, workers, replicas and scripts all inherit it."""
    import os

    import psutil

    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "ppid", "status", "environ", "cmdline"]):
        info = p.info
        if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (info["environ"] or {}).get("HOME") != str(home):
            continue
        cmd = " ".join(info["cmdline"] or [])
        if info["ppid"] == me and ("resource_tracker" in cmd or "loky" in cmd):
            continue  # pytest's own multiprocessing helpers, shared by every test
        found.append(p)
    return found


def write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def tree(root: Path, prune: Path | None = None) -> dict[str, str]:
    """Every file and link under ``root`` (links not followed): relative path -> content;
    ``prune``, a folder under ``root``, is left out."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        if prune is not None and Path(dirpath) == prune.parent:
            dirnames[:] = [d for d in dirnames if d != prune.name]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_text()
            else:
                out[rel] = "<dir>"
    return out


def workspace_fingerprint(ws_path: Path) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """What a failed command must leave untouched: a hash of every catalog table's rows, and the
    workspace's file tree (paths and sizes; the SQLite journal files excluded, since reads touch
    them). Read with plain sqlite3, so taking it changes nothing and runs no migration."""
    import hashlib
    import sqlite3

    ws_path = Path(ws_path)
    conn = sqlite3.connect(f"file:{ws_path / 'mlws.db'}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        digests = {}
        for t in tables:
            h = hashlib.sha256()
            for row in conn.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
                h.update(repr(tuple(row)).encode())
            digests[t] = h.hexdigest()
    finally:
        conn.close()
    files = sorted(
        (p.relative_to(ws_path).as_posix(), p.stat().st_size if p.is_file() else -1)
        for p in ws_path.rglob("*")
        if not p.name.startswith("mlws.db") and p.name != "catalog.lock"
    )
    return digests, files


def invoke(*args: str, cwd: Path | None = None, input: str | bytes | None = None):  # noqa: ANN201, A002 - a click Result
    """``mlws ARGS`` in-process (click's CliRunner), from folder ``cwd`` if given; exceptions
    other than click's propagate, so a traceback fails the test."""
    from click.testing import CliRunner

    from mlws.cli import cli

    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, input=input)
    finally:
        os.chdir(old)


# -- runs ------------------------------------------------------------------------------------------
def make_source(
    tmp_path: Path, body: str, name: str = "src", prelude: str = SCRIPT_PRELUDE
) -> Path:
    """A source folder ``tmp_path/name`` holding ``train.py``: ``prelude`` (``wait_gate``,
    ``write_pid``) then the dedented ``body``."""
    import textwrap

    src = tmp_path / name
    src.mkdir()
    (src / "train.py").write_text(prelude + textwrap.dedent(body))
    return src


def submit(ws, src: Path, *args: object, exp: str = "exp", target: str | None = None, **kwargs):  # noqa: ANN001, ANN201 - a Workspace in, a Run out
    """Submit ``src/train.py`` with ``args`` (as strings) to experiment ``exp``; ``target``:
    a compute target (default: local); ``kwargs`` go to ``ScriptRunConfig``."""
    from mlws import Experiment, ScriptRunConfig

    if target is not None:
        kwargs["compute_target"] = target
    cfg = ScriptRunConfig(
        source_directory=str(src), script="train.py", arguments=[str(a) for a in args], **kwargs
    )
    return Experiment(ws, exp).submit(cfg)


def wait_status(run, statuses: tuple[str, ...] | str, timeout: float = 20.0) -> str:  # noqa: ANN001 - a Run
    """Wait until ``run`` reaches one of ``statuses``; returns the status reached."""
    wanted = (statuses,) if isinstance(statuses, str) else statuses
    return wait_until(
        lambda: (s := run.get_status()) in wanted and s, timeout, f"run {run.id} to reach {wanted}"
    )


def driver_log(run) -> str:  # noqa: ANN001 - a Run
    """The run's driver log, or (where the run failed before it had one) its error and files."""
    import json

    if "logs/driver.log" in run.get_file_names():
        return run._read_file_text("logs/driver.log")
    return json.dumps({"error": run.get_details().get("error"), "files": run.get_file_names()})


#: An unchanged Azure ML v1 training script (issue 12): whatever the target, the run must find
#: the ``azureml`` layer by itself. It prints where ``azureml`` came from.
V1_TRAIN = """\
import os
import azureml
from azureml.core import Run

run = Run.get_context()
run.log("accuracy", 0.91)
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as f:
    f.write("weights")
print("azureml from", list(azureml.__path__))
"""


def assert_a_sweep_runs_on(ws, tmp_path: Path, target: str) -> None:  # noqa: ANN001 - a Workspace
    """A two-trial HyperDrive sweep on ``target``: both trials Completed there, the best found."""
    from mlws import Experiment, ScriptRunConfig
    from mlws.hyperdrive import GridParameterSampling, HyperDriveConfig, choice

    src = tmp_path / "sweep"
    src.mkdir()
    (src / "train.py").write_text(
        "import sys\nfrom mlws import Run\n"
        "Run.get_context().log('acc', float(sys.argv[sys.argv.index('--x') + 1]))\n"
    )
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(str(src), "train.py", compute_target=target),
        hyperparameter_sampling=GridParameterSampling({"--x": choice(0.2, 0.8)}),
        primary_metric_name="acc",
        primary_metric_goal="maximize",
        max_total_runs=2,
        max_concurrent_runs=2,
    )
    sweep = Experiment(ws, "sweep").submit(config)
    assert sweep.wait_for_completion(timeout=90, raise_on_error=False)["status"] == "Completed"
    trials = sweep.get_children()
    assert sorted(t.get_status() for t in trials) == ["Completed", "Completed"]
    assert {t.get_details()["target"] for t in trials} == {target}
    best = sweep.get_best_run_by_primary_metric()
    assert best is not None and best.get_metrics() == {"acc": 0.8}


def assert_a_pipeline_runs_on(ws, tmp_path: Path, target: str) -> None:  # noqa: ANN001 - a Workspace
    """A two-step pipeline on ``target``: the first step writes PipelineData there, the second
    reads it (a read-only copy) and logs what it found; both Completed on ``target``."""
    from mlws import Experiment
    from mlws.pipelines import Pipeline, PipelineData, PythonScriptStep

    src = tmp_path / "pipe"
    src.mkdir()
    (src / "write.py").write_text(
        "import os, sys\nos.makedirs(sys.argv[1], exist_ok=True)\n"
        "open(os.path.join(sys.argv[1], 'n.txt'), 'w').write('7')\n"
    )
    (src / "read.py").write_text(
        "import os, sys\nfrom mlws import Run\n"
        "n = int(open(os.path.join(sys.argv[1], 'n.txt')).read())\n"
        "Run.get_context().log('n', n)\n"
        "Run.get_context().log('same', int(os.environ['AZUREML_DATAREFERENCE_d'] == sys.argv[1]))\n"
    )
    d = PipelineData("d")
    write_step = PythonScriptStep(
        "write.py", arguments=[d], outputs=[d], compute_target=target, source_directory=str(src)
    )
    read_step = PythonScriptStep(
        "read.py", arguments=[d], inputs=[d], compute_target=target, source_directory=str(src)
    )
    assert Pipeline(ws, [read_step]).steps == [write_step, read_step]
    run = Experiment(ws, "pipe").submit(Pipeline(ws, [read_step]), regenerate_outputs=True)
    details = run.wait_for_completion(show_output=False, timeout_seconds=90, raise_on_error=False)
    steps = run.get_steps()
    assert details["status"] == "Completed", [s.get_details() for s in steps]
    assert {s.get_details()["target"] for s in steps} == {target}
    assert run.find_step_run("read.py")[0].get_metrics() == {"n": 7, "same": 1}


def run_v1_driver(project: Path, workspace_name: str, timeout: float = 120):  # noqa: ANN201 - a CompletedProcess
    """Run ``project/driver.py`` as a user runs a v1 driver: mlws's ``azureml`` layer on
    ``PYTHONPATH`` and the workspace found through ``.azureml/config.json`` (written here, naming
    ``workspace_name``), not through ``MLWS_WORKSPACE``."""
    import json

    (project / ".azureml").mkdir(parents=True, exist_ok=True)
    (project / ".azureml" / "config.json").write_text(
        json.dumps(
            {
                "subscription_id": "0000-sub",
                "resource_group": "rg",
                "workspace_name": workspace_name,
            }
        )
    )
    return run_driver(project, timeout, keep_workspace=False)


def run_driver(project: Path, timeout: float = 120, keep_workspace: bool = True):  # noqa: ANN201 - a CompletedProcess
    """Run ``project/driver.py`` with mlws's ``azureml`` layer on ``PYTHONPATH``; the workspace
    is ``MLWS_WORKSPACE`` as the test has it, unless not ``keep_workspace``."""
    import subprocess
    import sys

    from mlws.processes import python_path

    env = {**os.environ, "PYTHONPATH": python_path(os.environ.get("PYTHONPATH"))}
    if not keep_workspace:
        env.pop("MLWS_WORKSPACE", None)
    return subprocess.run(
        [sys.executable, "driver.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- mlws serve --------------------------------------------------------------------------------
class Server:
    """A real ``mlws serve`` subprocess (see :func:`start_server`): its ``proc``, ``url`` and
    the lines it printed so far."""

    def __init__(self, proc, url: str, lines: list[str]) -> None:  # noqa: ANN001 - a Popen
        self.proc = proc
        self.url = url
        self.lines = lines

    def api(
        self, method: str, path: str, token: str | None = None, body=None, raw: bytes | None = None
    ):  # noqa: ANN001, ANN201 - JSON in, (status, JSON or bytes) out
        """One request to ``/api/v1`` + ``path``; returns ``(status, parsed JSON)`` (bytes
        for a non-JSON answer)."""
        import json
        import urllib.error
        import urllib.request

        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + "/api/v1" + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                status, payload, ctype = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, payload, ctype = e.code, e.read(), e.headers.get("content-type", "")
        return status, (json.loads(payload) if "json" in ctype else payload)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM by pid, then wait (SIGKILL if it does not end); returns the exit status."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.lines += [ln.rstrip("\n") for ln in self.proc.stdout]
        return self.proc.returncode


def server_token(ws_path: Path, name: str, role: str = "contributor") -> str:
    """A new token of user ``name`` with ``role`` on the workspace at ``ws_path`` (the CLI)."""
    result = invoke("-w", str(ws_path), "serve", "token", "create", name, "--role", role)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()[-1]


def start_server(*args: str, timeout: float = 20.0) -> Server:
    """Start ``python ARGS`` (``-m mlws.server WS ...`` or ``-m mlws -w WS serve ...``, with
    ``--port 0``) and wait for its ``Serving ... at URL`` line."""
    import re
    import select
    import subprocess
    import sys

    from mlws.processes import python_path

    env = {**os.environ, "PYTHONPATH": python_path(os.environ.get("PYTHONPATH"))}
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line.rstrip("\n"))
            m = re.search(r" at (https?://\S+) \(pid", line)
            if m:
                return Server(proc, m.group(1), lines)
        elif proc.poll() is not None:
            break
    proc.kill()
    proc.wait(5)
    raise AssertionError(f"the server did not start: {lines}")


@contextlib.contextmanager
def served_workspace(root: Path, *server_args: str):  # noqa: ANN201 - (Server, ws path, tokens)
    """A new workspace under ``root`` with a token per role, served by a real ``mlws serve``
    (free port) with a HOME of its own under ``root`` (a module fixture's HOME is not the
    per-test one), stopped (and checked to exit 0) at the end."""
    import pytest

    from mlws import Workspace

    ws_path = root / "ws"
    with pytest.MonkeyPatch.context() as mp:
        (root / "home").mkdir()
        mp.setenv("HOME", str(root / "home"))
        for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            mp.delenv(var, raising=False)
        Workspace.create(ws_path, _remember_name=False).close()
        tokens = {role: server_token(ws_path, role, role) for role in ROLES}
        server = start_server("-m", "mlws.server", str(ws_path), "--port", "0", *server_args)
        try:
            yield server, ws_path, tokens
        finally:
            assert server.stop() == 0, server.lines


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` in ``folder``: a self-signed certificate for ``localhost``, valid
    for a day (a TLS server's, and its own CA bundle)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


#: The roles of ``mlws serve``'s users.
ROLES = ("reader", "contributor", "owner")


def bulk_runs(ws, experiment: str, n: int, start: int = 1) -> None:  # noqa: ANN001 - a Workspace
    """``n`` finished runs with a metric each, written straight into the catalog (a 100k-run
    experiment in a second, instead of minutes of real runs)."""
    now = time.time()
    rows = [
        (f"{experiment}_bulk_{i}", experiment, f"{experiment}_bulk_{i}", i, now + i, now + i)
        for i in range(start, start + n)
    ]
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO runs (id, experiment, root_id, number, type, status, created, start_time,"
            " end_time) VALUES (?, ?, ?, ?, 'interactive', 'Completed', ?, ?, ?+1)",
            [(*r, r[-1]) for r in rows],
        )
        conn.execute(
            "INSERT INTO metric_summary (run_seq, name, kind, last_value, count)"
            " SELECT seq, 'acc', 'scalar', number % 1000, 1 FROM runs"
            " WHERE experiment = ? AND number >= ?",
            (experiment, start),
        )
