"""Issue 10 hardening of the key vault: first use by many processes at once, and what runs and
services can read."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlws import Workspace
from mlws.keyvault import key_path

WRITERS = 8


def _set_one(path: str, index: int, barrier, results) -> None:  # noqa: ANN001 - mp objects
    """A child: open the workspace, wait for the others, store one secret, report success."""
    try:
        ws = Workspace(path)
        kv = ws.get_default_keyvault()
        barrier.wait(timeout=30)
        kv.set_secret(f"s{index}", f"value-{index}")
        results.put((index, "ok"))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which asserts
        results.put((index, f"{type(e).__name__}: {e}"))


def test_concurrent_first_use_makes_one_key(tmp_path: Path) -> None:
    """8 processes store a secret on a new workspace at once: every secret reported stored is
    readable afterwards, and a later set works (one key, and the sentinel agrees with it)."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = tmp_path / f"ws{round_}"
        Workspace.create(path).close()
        barrier = ctx.Barrier(WRITERS)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_set_one, args=(str(path), i, barrier, results))
            for i in range(WRITERS)
        ]
        for p in procs:
            p.start()
        reported = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        stored = [i for i, outcome in reported.items() if outcome == "ok"]
        assert len(stored) == WRITERS, reported
        with Workspace(path) as ws:
            kv = ws.get_default_keyvault()
            for i in stored:
                assert kv.get_secret(f"s{i}") == f"value-{i}", f"round {round_}"
            kv.set_secret("later", "x")
            assert kv.get_secret("later") == "x"
        assert key_path_count(path) == 1


def key_path_count(path: Path) -> int:
    """How many key files (and no temp files) the key folder holds for that workspace."""
    with Workspace(path) as ws:
        folder = key_path(ws.id).parent
        return sum(1 for f in folder.iterdir() if ws.id in f.name or f.name.startswith(".tmp"))


def test_concurrent_first_use_from_the_cli(tmp_path: Path) -> None:
    """The reported shape: ``mlws secret set`` from 8 real CLI processes on a new workspace."""
    path = tmp_path / "ws-cli"
    Workspace.create(path).close()
    env = {**os.environ, "MLWS_WORKSPACE": str(path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mlws.cli", "secret", "set", f"c{i}", "--value", f"v{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(WRITERS)
    ]
    codes = [p.wait(timeout=120) for p in procs]
    errors = [p.stderr.read().decode() for p in procs if p.returncode]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    ok = [i for i, rc in enumerate(codes) if rc == 0]
    assert ok == list(range(WRITERS)), errors
    with Workspace(path) as ws:
        kv = ws.get_default_keyvault()
        assert kv.get_secrets([f"c{i}" for i in ok]) == {f"c{i}": f"v{i}" for i in ok}


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLWS_KEYVAULT_KEY", raising=False)


# -- what a run can read ----------------------------------------------------------------------------
RUN_SCRIPT = """\
import json, os
from mlws import Run
from mlws.errors import MlwsError

run = Run.get_context()
seen = {"key_in_env": "MLWS_KEYVAULT_KEY" in os.environ}
seen["plain"] = run.get_secret("db-password") == "hunter2"
seen["both"] = run.get_secrets(["db-password", "api-token"]) == {
    "db-password": "hunter2", "api-token": "t0k"}
for name in ("datastore-box-private-key", "compute-gpu-private-key"):
    try:
        run.get_secret(name)
        seen[name] = "read"
    except MlwsError as e:
        seen[name] = str(e)
try:
    run.get_secret("no-such")
except MlwsError as e:
    seen["missing"] = str(e)
os.makedirs("outputs", exist_ok=True)
with open("outputs/seen.json", "w") as f:
    json.dump(seen, f)
"""


@pytest.mark.timeout(90)
def test_a_local_run_gets_no_key_and_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    from mlws import Experiment, ScriptRunConfig

    monkeypatch.setenv("MLWS_KEYVAULT_KEY", Fernet.generate_key().decode())
    with Workspace.create(tmp_path / "ws") as ws:
        ws.get_default_keyvault().set_secrets(
            {
                "db-password": "hunter2",
                "api-token": "t0k",
                "datastore-box-private-key": "PRIVATE-KEY-1",
                "compute-gpu-private-key": "PRIVATE-KEY-2",
            }
        )
        src = tmp_path / "src"
        src.mkdir()
        (src / "probe.py").write_text(RUN_SCRIPT)
        run = Experiment(ws, "kv").submit(ScriptRunConfig(str(src), "probe.py"))
        run.wait_for_completion(timeout=60)
        assert run.get_status() == "Completed", "".join(run.iter_log())
        out = tmp_path / "seen"
        run.download_file("outputs/seen.json", str(out))
        seen = json.loads(out.read_text())
    assert seen["key_in_env"] is False
    assert seen["plain"] is True and seen["both"] is True
    assert "credentials" in seen["datastore-box-private-key"]
    assert "credentials" in seen["compute-gpu-private-key"]
    assert "no-such" in seen["missing"]


def _sees_the_key(_item: object) -> bool:
    import os

    return "MLWS_KEYVAULT_KEY" in os.environ


def test_callables_on_a_dask_cluster_get_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_parallel's children run inside the Dask workers of a cluster mlws started: they
    never see the key either (the cluster process is started without it)."""
    from cryptography.fernet import Fernet

    from mlws import Experiment
    from mlws.compute import AmlCompute, ComputeTarget
    from mlws.functions import get_result, run_parallel

    monkeypatch.setenv("MLWS_KEYVAULT_KEY", Fernet.generate_key().decode())
    with Workspace.create(tmp_path / "ws") as ws:
        cpu = ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(max_nodes=1))
        try:
            parent = run_parallel(Experiment(ws, "kv"), _sees_the_key, [1], compute_target="cpu")
            assert parent.get_status() == "Completed"
            (child,) = parent.get_children()
            assert get_result(child) is False
        finally:
            cpu.stop()
