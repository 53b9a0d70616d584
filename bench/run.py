"""The benchmark suite: mlws against its peer, MLflow 3.x with a SQLite store, in one run.

    make bench            # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --only 1,3 --keep

1. Makes sure ``bench/.mlflow-venv`` exists with ``mlflow`` and ``scikit-learn`` (``pip install``,
   about a minute the first time).
2. Runs each benchmark for mlws (``bench/mlws_cases.py`` with this interpreter) and then for
   MLflow (``bench/mlflow_cases.py`` with the MLflow venv's interpreter), each case in its own
   process, with HOME and every work folder under ``bench/.work/`` (removed at the end unless
   ``--keep``).
3. Writes ``bench/RESULTS.md``: a table of both figures, their ratio, the target and pass/fail.
   With ``--only N --merge`` it updates just benchmark N's rows, method note and details in the
   existing file and says in its machine section when N was re-run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MLFLOW_VENV = BENCH / ".mlflow-venv"
MLFLOW_PY = MLFLOW_VENV / "bin" / "python"
WORK = BENCH / ".work"
RESULT_MARK = "@@RESULT "
CASE_TIMEOUT_S = 600

sys.path.insert(0, str(BENCH))
from common import make_dataset  # noqa: E402


def say(msg: str) -> None:
    print(msg, flush=True)


# -- the peer's venv -------------------------------------------------------------------------------
def mlflow_version() -> str | None:
    if not MLFLOW_PY.exists():
        return None
    r = subprocess.run(
        [str(MLFLOW_PY), "-c", "import mlflow, sklearn; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_mlflow_venv() -> str:
    version = mlflow_version()
    if version:
        say(f"MLflow {version} is installed in {MLFLOW_VENV.relative_to(ROOT)}")
        return version
    say(
        f"Creating {MLFLOW_VENV.relative_to(ROOT)} and installing mlflow + scikit-learn (about a minute)..."
    )
    t0 = time.perf_counter()
    if not MLFLOW_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLFLOW_VENV)], check=True)
    subprocess.run(
        [str(MLFLOW_PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True
    )
    subprocess.run(
        [str(MLFLOW_PY), "-m", "pip", "install", "--quiet", "mlflow", "scikit-learn"], check=True
    )
    version = mlflow_version()
    if not version:
        raise SystemExit(f"mlflow does not import in {MLFLOW_VENV} after installing it")
    say(f"MLflow {version} installed in {time.perf_counter() - t0:.0f} s")
    return version


DVC_VENV = BENCH / ".dvc-venv"
DVC_BIN = DVC_VENV / "bin" / "dvc"


def ensure_dvc_venv() -> str | None:
    """``bench/.dvc-venv`` with DVC (the peer of benchmark 14a), made on first use; the path of
    its ``dvc``, or None when it cannot be installed (the row then says so)."""
    if not DVC_BIN.exists():
        say(f"Creating {DVC_VENV.relative_to(ROOT)} and installing dvc (about a minute)...")
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(DVC_VENV)], check=True)
            py = str(DVC_VENV / "bin" / "python")
            subprocess.run([py, "-m", "pip", "install", "--quiet", "dvc"], check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            say(f"  could not install dvc: {e}")
            return None
    r = subprocess.run([str(DVC_BIN), "--version"], capture_output=True, text=True)
    return str(DVC_BIN) if r.returncode == 0 else None


# -- running cases ---------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    """The environment of every case: nothing of the user's home, workspace or tracking server."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "MLWS_", "AZUREML_", "MLFLOW_", "PYTHON"))
        and k != "VIRTUAL_ENV"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    return env


class Runner:
    def __init__(self, work: Path, with_mlflow: bool) -> None:
        self.work = work
        self.with_mlflow = with_mlflow
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)

    def env(self, side: str) -> dict[str, str]:
        env = _clean_env()
        env["HOME"] = str(self.home)
        env["TMPDIR"] = str(self.work / "tmp")
        (self.work / "tmp").mkdir(exist_ok=True)
        # Package downloads (benchmark 7 builds an environment) stay here too, not in the
        # user's uv/pip caches, whatever UV_CACHE_DIR / PIP_CACHE_DIR the caller has set.
        env["UV_CACHE_DIR"] = str(self.work / "cache" / "uv")
        env["PIP_CACHE_DIR"] = str(self.work / "cache" / "pip")
        if side == "mlws":
            # Any workspace discovery lands here, never in the real home.
            env["MLWS_WORKSPACE"] = str(self.work / "mlws" / "default-ws")
            # This checkout's mlws, not the venv's editable install, which may be another
            # checkout's (a worktree's bench timed main's code); runs inherit it.
            env["PYTHONPATH"] = str(BENCH.parent)
            # The editable install has no compiled .pyc; let Python write them under .work, as a
            # normal install would have them (the timed start-ups follow a warm-up run).
            env["PYTHONPYCACHEPREFIX"] = str(self.work / "pycache")
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # pip compiled MLflow; keep bench/ free of caches
        return env

    def run(self, side: str, case: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if side == "mlflow" and not self.with_mlflow:
            return {"error": "skipped (--no-mlflow)"}
        py = sys.executable if side == "mlws" else str(MLFLOW_PY)
        script = BENCH / f"{side}_cases.py"
        folder = self.work / side
        argv = [py, str(script), case, str(folder), json.dumps(params or {})]
        say(f"  [{side}] {case}")
        t0 = time.perf_counter()
        result: dict[str, Any] | None = None
        log = self.logs / f"{side}-{case}.log"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                argv,
                cwd=folder if folder.exists() else self.work,
                env=self.env(side),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    if line.startswith(RESULT_MARK):
                        result = json.loads(line[len(RESULT_MARK) :])
                    else:
                        print(line, end="", flush=True)
                proc.wait(timeout=CASE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0 or result is None:
            tail = _tail(log)
            say(f"  [{side}] {case} FAILED (exit {proc.returncode}):\n{tail}")
            return {"error": (tail.strip().splitlines() or ["no output"])[-1]}
        say(f"  [{side}] {case} done in {elapsed:.1f} s")
        return result


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + ln for ln in text[-lines:])


# -- the benchmarks ----------------------------------------------------------------------------------
# Each returns rows: (id, benchmark, mlws value, MLflow value, unit, better, target, target check).
Row = dict[str, Any]


def row(
    id_: str,
    name: str,
    mlws: Any,
    peer: Any,
    unit: str,
    better: str,
    target: str = "—",
    ok: Callable[[float], bool] | None = None,
    peer_note: str = "",
    mlws_note: str = "",
) -> Row:
    return {
        "id": id_,
        "name": name,
        "mlws": mlws,
        "peer": peer,
        "unit": unit,
        "better": better,
        "target": target,
        "ok": ok,
        "peer_note": peer_note,
        "mlws_note": mlws_note,
    }


def _get(d: Any, *keys: str) -> Any:
    """A figure from a case result, or the case's error as a string."""
    if isinstance(d, dict) and "error" in d:
        return f"error: {d['error']}"
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def bench_log(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "log")
    f = r.run("mlflow", "log", {"calls": 2000})
    ctx["log"] = (m, f)
    return [
        row(
            "1a",
            "`run.log` in a submitted script, 100k scalars (log + flush) vs MLflow `log_metric`",
            _get(m, "rate"),
            _get(f, "log_metric_rate"),
            "metrics/s",
            "high",
            "≥ 100,000/s",
            lambda v: v >= 100_000,
        ),
        row(
            "1b",
            "same mlws figure vs MLflow `log_batch` (100k in batches of 1,000)",
            _get(m, "rate"),
            _get(f, "log_batch_rate"),
            "metrics/s",
            "high",
            "≥ 100,000/s",
            lambda v: v >= 100_000,
        ),
    ]


def bench_runs(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "runs", {"n": 1000})
    f = r.run("mlflow", "runs", {"n": 1000})
    ctx["runs"] = (m, f)
    return [
        row(
            "2",
            "1,000 runs, each 5 properties + 3 metrics + 2 tags",
            _get(m, "seconds"),
            _get(f, "seconds"),
            "s",
            "low",
            "≤ 2 s",
            lambda v: v <= 2.0,
        )
    ]


def bench_query(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    rows = []
    if "runs" not in ctx:  # the 1k query reads the runs of benchmark 2
        bench_runs(r, ctx)
    m1 = r.run("mlws", "query_1k")
    f1 = r.run("mlflow", "query_1k")
    m100 = r.run("mlws", "query_100k", {"n": 100_000})
    ctx["query"] = (m1, f1, m100)
    na = "not measured¹"
    rows.append(
        row(
            "3a",
            "filter (tag k=v, 10% match) + sort by metric, 1,000 runs: all 100 matches",
            _get(m1, "ms"),
            _get(f1, "ms"),
            "ms",
            "low",
            "≤ 20 ms",
            lambda v: v <= 20,
        )
    )
    rows.append(
        row(
            "3b",
            "same, 100,000 runs: all 10,000 matches",
            _get(m100, "tag10", "ms"),
            na,
            "ms",
            "low",
            "≤ 200 ms",
            lambda v: v <= 200,
        )
    )
    rows.append(
        row(
            "3c",
            "stress: 100,000 runs, tag matching 50%: all 50,000 matches",
            _get(m100, "tag50", "ms"),
            na,
            "ms",
            "low",
            "≤ 200 ms",
            lambda v: v <= 200,
        )
    )
    rows.append(
        row(
            "3d",
            "100,000 runs, tag k=v (10%), top 100 (`limit=100`)",
            _get(m100, "tag10_top100", "ms"),
            na,
            "ms",
            "low",
            "≤ 200 ms",
            lambda v: v <= 200,
        )
    )
    return rows


def bench_startup(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "startup")
    f = r.run("mlflow", "startup")
    ctx["startup"] = (m, f)
    help_m = _get(m, "help_s")
    if help_m is None and isinstance(m, dict) and m.get("help_error"):
        help_m = f"failed: {m['help_error']}"
    return [
        row(
            "4a",
            "fresh process → open workspace, one run, one metric, complete (median of 5)",
            _get(m, "run_s"),
            _get(f, "run_s"),
            "s",
            "low",
            "≤ 0.3 s",
            lambda v: v <= 0.3,
        ),
        row(
            "4b",
            "`mlws --help` vs `mlflow --help` (median of 5)",
            help_m,
            _get(f, "help_s"),
            "s",
            "low",
            "≤ 0.3 s",
            lambda v: v <= 0.3,
        ),
        row(
            "4c",
            "`python -c 'import mlws'` vs `import mlflow` (median of 5)",
            _get(m, "import_s"),
            _get(f, "import_s"),
            "s",
            "low",
        ),
    ]


def bench_submit(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "submit")
    f = r.run("mlflow", "submit")
    ctx["submit"] = (m, f)
    return [
        row(
            "5",
            "submit → Completed, trivial script on `local` (median of 5) vs `mlflow.projects.run` (local env)",
            _get(m, "s"),
            _get(f, "s"),
            "s",
            "low",
            "≤ 1 s",
            lambda v: v <= 1.0,
        )
    ]


def bench_snapshot(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    data = r.work / "data"
    if not data.exists():
        say("  making the data set: 10,000 files of 10 kB random bytes (100 MB)")
        t0 = time.perf_counter()
        make_dataset(data)
        say(f"  made in {time.perf_counter() - t0:.1f} s")
    m = r.run("mlws", "snapshot", {"data": str(data)})
    ma = r.run("mlws", "artifacts", {"data": str(data)})
    fa = r.run("mlflow", "artifacts", {"data": str(data)})
    ctx["snapshot"] = (m, ma, fa)
    na = "no equivalent²"
    rows = [
        row(
            "6a",
            "snapshot of 10,000 files / 100 MB, first time",
            _get(m, "first", "s"),
            na,
            "s",
            "low",
        ),
        row(
            "6b",
            "same snapshot again, unchanged (median of 3)",
            _get(m, "unchanged", "s"),
            na,
            "s",
            "low",
            "≤ 0.2 s",
            lambda v: v <= 0.2,
        ),
        row(
            "6c",
            "new bytes stored by the unchanged snapshot",
            _get(m, "unchanged", "new_bytes"),
            na,
            "bytes",
            "low",
            "0 bytes",
            lambda v: v == 0,
        ),
    ]
    m2, f2 = _get(ma, "run2", "disk_bytes"), _get(fa, "run2", "disk_bytes")
    rows.append(
        row(
            "6d",
            "disk used after storing the same 100 MB as artifacts of two runs (`upload_folder` vs `log_artifacts`)",
            _mb(m2),
            _mb(f2),
            "MB",
            "low",
            "stored once (< 1.1× one copy)",
            _stored_once(ma),
        )
    )
    rows.append(
        row(
            "6e",
            "time to store those 100 MB / 10,000 files for the first run (`upload_folder` vs `log_artifacts`)",
            _get(ma, "run1", "s"),
            _get(fa, "run1", "s"),
            "s",
            "low",
        )
    )
    return rows


def _mb(v: Any) -> Any:
    return v / 1e6 if isinstance(v, (int, float)) else v


def _stored_once(result: Any) -> Callable[[float], bool]:
    def check(_: float) -> bool:
        one = result["run1"]["disk_bytes"] - result["empty_bytes"]
        two = result["run2"]["disk_bytes"] - result["empty_bytes"]
        return two < 1.1 * one

    return check


def bench_env(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "env", {"reps": 20})
    ctx["env"] = m
    na = "no equivalent³"
    return [
        row(
            "7a",
            "environment cache hit: `resolve(env)` of an already built managed env (median of 20)",
            _get(m, "hit_ms"),
            na,
            "ms",
            "low",
            "≤ 50 ms",
            lambda v: v <= 50,
        ),
        row(
            "7b",
            "same via the registry: `Environment.get(ws, name)` + `resolve` (median of 20)",
            _get(m, "get_ms"),
            na,
            "ms",
            "low",
        ),
        row(
            "7c",
            "one-time build of that env (`six` + runtime packages, uv, empty download cache)",
            _get(m, "build_s"),
            na,
            "s",
            "low",
        ),
    ]


def bench_fan(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m2 = r.run("mlws", "fan", {"n": 200, "workers": 2})
    m4 = r.run("mlws", "fan", {"n": 200, "workers": 4})
    ctx["fan"] = (m2, m4)
    na = "no equivalent⁴"
    return [
        row(
            "8a",
            "200 tiny callables as tracked child runs, `run_parallel(..., max_concurrent=2)`, incl. starting the workers",
            _get(m2, "rate"),
            na,
            "runs/s",
            "high",
            "report",
        ),
        row(
            "8b",
            "same, `max_concurrent=4`",
            _get(m4, "rate"),
            na,
            "runs/s",
            "high",
            "report",
        ),
    ]


def bench_compute(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "compute", {"reps": 5})
    ctx["compute"] = m
    local = _get(m, "local", "ms")

    def vs_local(key: str) -> str:
        ratio = _get(m, key, "ratio")
        return f"{ratio:.1f}× local" if isinstance(ratio, (int, float)) else ""

    return [
        row(
            "9a",
            "submit → Completed, trivial script, per compute target (median of 5, one process): `local`",
            local,
            None,
            "ms",
            "low",
        ),
        row(
            "9b",
            "same on `ssh`: one host, a loopback sshd on 127.0.0.1",
            _get(m, "ssh", "ms"),
            None,
            "ms",
            "low",
            mlws_note=vs_local("ssh"),
        ),
        row(
            "9c",
            "same on `dask`: local cluster, `min_nodes=1, max_nodes=1`",
            _get(m, "dask", "ms"),
            None,
            "ms",
            "low",
            mlws_note=vs_local("dask"),
        ),
    ]


SERVING_RATIO = 5  # the target of 10a: mlws at least this many times MLflow's requests/s


def bench_serving(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    # One model for both servers, trained once; the same load generators for both: wrk (the
    # figures of 10a-10c) and bench/loadgen.py run by this interpreter (10f).
    params = {
        "model_dir": str(r.work / "serving-model"),
        "loadgen_python": sys.executable,
        "clients": 4,
        "warmup": 1.0,
        "duration": 5.0,
        "rounds": 3,
        "deploys": 3,
    }
    model = r.run("mlws", "serving_model", params)
    if "error" in model:
        m = f = model
    else:
        m = r.run("mlws", "serving", params)
        f = r.run("mlflow", "serving", params)
    ctx["serving"] = (model, m, f)
    peer_rps = _get(f, "w1", "rps")

    def five_times(v: float) -> bool:
        if not isinstance(peer_rps, (int, float)):
            raise ValueError("no MLflow figure to compare with")
        return v >= SERVING_RATIO * peer_rps

    split = _get(f, "w1_split", "rps")
    return [
        row(
            "10a",
            "requests/s, iris LogisticRegression, 4 keep-alive clients (wrk): mlws 2 replicas vs"
            ' `mlflow models serve` 1 worker (`{"inputs": [[...]]}`, its fastest payload)',
            _get(m, "r2", "rps"),
            peer_rps,
            "req/s",
            "high",
            f"≥ {SERVING_RATIO}× MLflow"
            + (
                f" (≥ {SERVING_RATIO * peer_rps:,.0f} req/s)"
                if isinstance(peer_rps, (int, float))
                else ""
            ),
            five_times,
            peer_note=f"{split:,.0f} req/s with `dataframe_split`"
            if isinstance(split, (int, float))
            else "",
        ),
        row(
            "10b",
            "p99 latency, same load (median of 3 rounds)",
            _get(m, "r2", "p99_ms"),
            _get(f, "w1", "p99_ms"),
            "ms",
            "low",
            "≤ 5 ms",
            lambda v: v <= 5.0,
        ),
        row(
            "10c",
            "p50 latency, same load",
            _get(m, "r2", "p50_ms"),
            _get(f, "w1", "p50_ms"),
            "ms",
            "low",
        ),
        row(
            "10d",
            "deploy → first 200 from the scoring URI: `Model.deploy` (2 replicas) vs starting"
            " `mlflow models serve` (median of 3)",
            _get(m, "deploy_first_s"),
            _get(f, "deploy_first_s"),
            "s",
            "low",
            "≤ 1.5 s",
            lambda v: v <= 1.5,
        ),
        row(
            "10e",
            "memory per replica (mlws) / serving process (MLflow, uvicorn): RSS after the load",
            _mb(_get(m, "rss_per_replica")),
            _mb(_get(f, "rss_per_worker")),
            "MB",
            "low",
            "report",
        ),
        row(
            "10f",
            "as 10a with the Python load generator (`bench/loadgen.py`: 4 client processes, each"
            " an `http.client` connection; one round), whose clients use 4-5× the CPU of wrk's",
            _get(m, "r2_python", "rps"),
            _get(f, "w1_python", "rps"),
            "req/s",
            "high",
        ),
        row(
            "10g",
            "p50 latency, one keep-alive client calling in turn (200 calls, 2 replicas; a Nagle /"
            " delayed-ACK stall would show as ~40 ms)",
            _get(m, "r2_sequential", "p50_ms"),
            "not measured",
            "ms",
            "low",
            "< 5 ms",
            lambda v: v < 5.0,
        ),
    ]


def bench_dataset(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    # The case makes its own 10,000 files × 100 kB (1 GB) under its work folder and removes them.
    m = r.run("mlws", "dataset", {"files": 10_000, "size": 100_000})
    ctx["dataset"] = m
    na = "no equivalent"
    mb_s = _get(m, "first", "mb_s")
    return [
        row(
            "11a",
            "register a file dataset of 10,000 files / 1 GB: first fingerprint (every file hashed)",
            _get(m, "first", "s"),
            na,
            "s",
            "low",
            mlws_note=f"{mb_s:,.0f} MB/s" if isinstance(mb_s, (int, float)) else "",
        ),
        row(
            "11b",
            "same dataset, no change: `has_changed()` → False (stat cache, no file read; median of 3)",
            _get(m, "unchanged", "s"),
            na,
            "s",
            "low",
            "≤ 0.3 s",
            lambda v: v <= 0.3,
        ),
        row(
            "11c",
            "one byte of one file changed (same size, new mtime): `changes()` names just that file",
            _get(m, "one_change", "s"),
            na,
            "s",
            "low",
        ),
    ]


def bench_tabular(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    # The case makes its own 1,000,000-row CSV under its work folder and removes it.
    m = r.run("mlws", "tabular", {"rows": 1_000_000})
    ctx["tabular"] = m
    na = "no equivalent"
    theirs = _get(m, "pandas", "s")
    return [
        row(
            "12a",
            "`to_pandas_dataframe()` of a registered tabular dataset: one CSV, 1,000,000 rows ×"
            " 8 columns (median of 3)",
            _get(m, "mlws", "s"),
            na,
            "s",
            "low",
            mlws_note=f"`pandas.read_csv`: {fmt(theirs, 's')}" if theirs is not None else "",
        ),
        row(
            "12b",
            "`pandas.read_csv` time ÷ `to_pandas_dataframe()` time, same file, same process"
            " (above 1: mlws is faster); the two frames are equal",
            _get(m, "ratio"),
            na,
            "×",
            "high",
        ),
        row(
            "12c",
            "registering that dataset (definition + fingerprint: the file hashed once)",
            _get(m, "register_s"),
            na,
            "s",
            "low",
        ),
    ]


def bench_sweep(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    # Both sides in one process (the mlws interpreter has Optuna through mlws[sweeps]).
    m = r.run("mlws", "sweep", {"trials": 100})
    ctx["sweep"] = m
    na = "no equivalent"
    theirs = _get(m, "optuna_per_trial_s")
    return [
        row(
            "13a",
            "sweep of 100 trials of a script that only logs its metric, 2 at a time: wall time ×"
            " 2 ÷ 100 per trial, each a tracked child run (Optuna: the same script as subprocesses,"
            " `n_jobs=2`)",
            _get(m, "mlws_per_trial_s"),
            na,
            "s",
            "low",
            mlws_note=f"Optuna's loop: {fmt(theirs, 's')}" if theirs is not None else "",
        ),
        row(
            "13b",
            "that time per trial ÷ Optuna's own loop's",
            _get(m, "ratio"),
            na,
            "×",
            "low",
            "≤ 1.5×",
            lambda v: v <= 1.5,
        ),
        row(
            "13c",
            "time per trial beyond the bare script (python start-up + script, run alone)",
            _get(m, "mlws_overhead_s"),
            na,
            "s",
            "low",
        ),
    ]


def bench_pipeline(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    # DVC in its own venv, timed from the mlws case (its CLI, as a user runs it).
    dvc = ensure_dvc_venv()
    dvc_version = (
        subprocess.run([dvc, "--version"], capture_output=True, text=True).stdout.strip()
        if dvc
        else None
    )
    m = r.run("mlws", "pipeline_noop", {"steps": 10, "dvc": dvc})
    f = r.run("mlws", "pipeline_fanout", {"steps": 20})
    p = r.run("mlws", "prs_throughput", {"rows": 1_000_000})
    ctx["pipeline"] = (m, f, dvc_version, p)
    na = "no equivalent"
    return [
        row(
            "14a",
            "no-op re-run of a 10-step linear pipeline (every step reused): submit → Completed"
            " (median of 5) vs `dvc repro` of the same 10 stages",
            _get(m, "noop_s"),
            _get(m, "dvc_noop_s") if dvc else "error: dvc not installed",
            "s",
            "low",
            "≤ 0.3 s",
            lambda v: v <= 0.3,
            peer_note=f"DVC {dvc_version}'s `dvc repro`, not MLflow" if dvc else "",
        ),
        row(
            "14b",
            "`dvc repro` time ÷ that time (above 1: mlws is faster)",
            _get(m, "ratio"),
            na,
            "×",
            "high",
            "≥ 3×",
            lambda v: v >= 3,
        ),
        row(
            "14c",
            "fan-out: 20 independent trivial steps on `local` with 2 slots, submit → Completed",
            _get(f, "steps_per_s"),
            na,
            "steps/s",
            "high",
        ),
        row(
            "14d",
            "slot time per step not spent running a step (wall × 2 − Σ step runs' Running → ended)"
            " ÷ 20: the controller's and the run machinery's overhead",
            _get(f, "overhead_s"),
            na,
            "s",
            "low",
            "≤ 50 ms",
            lambda v: v <= 0.05,
        ),
        row(
            "14e",
            "wall × 2 ÷ 20 per step beyond the bare script (python start-up + script, run alone)",
            _get(f, "per_step_beyond_bare_s"),
            na,
            "s",
            "low",
        ),
        row(
            "14f",
            "ParallelRunStep over a 1,000,000-row CSV, 2 workers, mini-batches of 10,000 rows:"
            " rows/s, submit → Completed (median of 3), every mini-batch tracked",
            _get(p, "prs_rows_per_s"),
            na,
            "rows/s",
            "high",
            mlws_note=(
                f"`joblib.Parallel(n_jobs=2)` loop: {fmt(_get(p, 'plain_rows_per_s'), 'rows/s')}"
                if isinstance(_get(p, "plain_rows_per_s"), (int, float))
                else ""
            ),
        ),
        row(
            "14g",
            "that rate ÷ the plain `joblib.Parallel` loop's over the same mini-batches (read_csv,"
            " score, write in order), same run",
            _get(p, "ratio"),
            na,
            "×",
            "high",
            "≥ 0.8×",
            lambda v: v >= 0.8,
        ),
    ]


def bench_v1_import(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "v1_import", {"runs": 5})
    ctx["v1_import"] = m
    na = "no equivalent"
    return [
        row(
            "15a",
            "`import azureml.core` inside a run, over `import mlws` before it in the same script"
            " (the v1 layer; median of 5 runs)",
            _get(m, "azureml_s"),
            na,
            "s",
            "low",
            "≤ 50 ms",
            lambda v: v <= 0.050,
            mlws_note=(
                f"`import mlws` itself: {fmt(_get(m, 'mlws_s'), 's')}"
                if _get(m, "mlws_s") is not None
                else ""
            ),
        ),
    ]


#: MLflow's side of 17d measures this many runs (about 0.2 s each over HTTP here) and the
#: table shows its time scaled to 1,000; mlws does all 1,000.
SERVER_PEER_RUNS = 200


def bench_server(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run("mlws", "server", {"n_log": 100_000, "n_each": 50_000, "batches_each": 20})
    f = r.run(
        "mlflow",
        "server",
        {"calls": 100, "n_log": 20_000, "batches_each": 20, "runs": SERVER_PEER_RUNS},
    )
    mu = r.run("mlws", "server_upload", {"files": 10_000})
    fu = r.run("mlflow", "server_upload", {"files": 10_000})
    ctx["server"] = (m, f, mu, fu)
    best = max(
        (v for v in (_get(f, "log_metric_rate"), _get(f, "log_batch_rate")) if _num(v)),
        default=None,
    )
    eight_peer = _get(f, "eight_batches", "rate")
    peer_runs = _get(f, "runs_s")
    if _num(peer_runs):
        peer_runs = peer_runs * 1000 / SERVER_PEER_RUNS

    def times(peer: Any, k: float) -> Callable[[float], bool]:
        def ok(v: float) -> bool:
            if not _num(peer):
                raise ValueError("no MLflow figure to compare with")
            return v >= k * peer

        return ok

    return [
        row(
            "17a",
            "metrics/s from one remote client: mlws `run.log` ×100,000 until flushed (stored) vs"
            " MLflow `log_metric` over HTTP",
            _get(m, "one_rate"),
            _get(f, "log_metric_rate"),
            "metrics/s",
            "high",
            "≥ 100,000/s",
            lambda v: v >= 100_000,
        ),
        row(
            "17b",
            "same mlws figure vs MLflow `log_batch` (batches of 1,000) over HTTP",
            _get(m, "one_rate"),
            _get(f, "log_batch_rate"),
            "metrics/s",
            "high",
            "≥ 20× MLflow's best",
            times(best, 20),
        ),
        row(
            "17c",
            "8 concurrent client processes, aggregate: mlws `run.log` ×50,000 each vs MLflow"
            " `log_batch` of 1,000 ×20 each",
            _get(m, "eight", "rate"),
            eight_peer,
            "metrics/s",
            "high",
            "≥ 10× MLflow",
            times(eight_peer, 10),
        ),
        row(
            "17d",
            "p99 per request, 8 concurrent clients each sending 20 batches of 1,000 metrics"
            " (mlws `POST /runs/{id}/metrics`, MLflow `log_batch`)",
            _get(m, "eight_batches", "p99_ms"),
            _get(f, "eight_batches", "p99_ms"),
            "ms",
            "low",
        ),
        row(
            "17e",
            "1,000 runs × (5 properties, 3 metrics, 2 tags) from one remote client",
            _get(m, "runs_s"),
            peer_runs,
            "s",
            "low",
            "≤ 3 s",
            lambda v: v <= 3.0,
            peer_note=f"{SERVER_PEER_RUNS} runs measured, scaled to 1,000",
        ),
        row(
            "17f",
            "fresh process → first stored metric on the remote workspace (median of 5)",
            _get(m, "first_s"),
            _get(f, "first_s"),
            "s",
            "low",
            "≤ 0.3 s",
            lambda v: v <= 0.3,
        ),
        row(
            "17g",
            "upload 100 MB in 10,000 files, first time: `run.upload_folder` vs MLflow"
            " `log_artifacts` through the server",
            _get(mu, "upload_first_s"),
            _get(fu, "upload_first_s"),
            "s",
            "low",
            "report",
        ),
        row(
            "17h",
            "the same folder again, unchanged (to a second run)",
            _get(mu, "upload_again_s"),
            _get(fu, "upload_again_s"),
            "s",
            "low",
            "report",
        ),
    ]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def bench_serving_pyfunc(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    # The model of 10, saved once as an MLflow model by the mlws side; MLflow serves that folder.
    params = {
        "model_dir": str(r.work / "serving-model"),
        "pyfunc_dir": str(r.work / "pyfunc-model"),
        "deploys": 3,
        "calls": 500,
    }
    model = r.run("mlws", "serving_model", params)
    m = model if "error" in model else r.run("mlws", "serving_pyfunc", params)
    f = m if "error" in m else r.run("mlflow", "serving_pyfunc", params)
    ctx["serving_pyfunc"] = (m, f)
    azure = _get(m, "azure", "p50_ms")
    return [
        row(
            "19a",
            "p50 latency, one keep-alive client calling in turn (500 calls), an MLflow pyfunc model"
            ' (iris, `{"inputs": [[...]]}`): `Model.deploy` with no scoring script, 1 replica, vs'
            " `mlflow models serve` 1 worker",
            _get(m, "inputs", "p50_ms"),
            _get(f, "inputs", "p50_ms"),
            "ms",
            "low",
            mlws_note=f'{azure:.1f} ms with Azure\'s `{{"data": [[...]]}}`'
            if isinstance(azure, (int, float))
            else "",
        ),
        row(
            "19b",
            "deploy → first 200 of that model: `Model.deploy` (1 replica, loads the pyfunc) vs"
            " starting `mlflow models serve` (median of 3)",
            _get(m, "deploy_first_s"),
            _get(f, "deploy_first_s"),
            "s",
            "low",
        ),
    ]


def rest_rows(m: Any, f: Any) -> list[Row]:
    """Bench 16f..: a stock ``MlflowClient`` over HTTP, ``mlws serve`` vs ``mlflow server``
    (SQLite store); the issue's goal is ≥ 10×."""

    def ten(key: str, better: str) -> Callable[[float], bool]:
        peer = _get(f, key)
        if not _num(peer):
            return lambda v: False
        return (lambda v: v >= 10 * peer) if better == "high" else (lambda v: 10 * v <= peer)

    over = "a stock `MlflowClient` over HTTP: `mlws serve` vs `mlflow server` (SQLite)"
    return [
        row(
            "16f",
            f"`log_metric` ×2,000, one client; {over}",
            _get(m, "log_metric_rate"),
            _get(f, "log_metric_rate"),
            "metrics/s",
            "high",
            "≥ 10× MLflow",
            ten("log_metric_rate", "high"),
        ),
        row(
            "16g",
            f"`log_batch` of 10,000 metrics (MLflow's client sends 10 requests); {over}",
            _get(m, "log_batch_s"),
            _get(f, "log_batch_s"),
            "s",
            "low",
            "≥ 10× MLflow",
            ten("log_batch_s", "low"),
        ),
        row(
            "16h",
            f"200 runs, each `create_run` + `log_batch` (5 params, 3 metrics, 2 tags) +"
            f" `set_terminated`; {over}",
            _get(m, "runs_s"),
            _get(f, "runs_s"),
            "s",
            "low",
            "≥ 10× MLflow",
            ten("runs_s", "low"),
        ),
        row(
            "16i",
            f"`search_runs` over 1,000 runs (median of 5); {over}",
            _get(m, "search_s"),
            _get(f, "search_s"),
            "s",
            "low",
            "≥ 10× MLflow",
            ten("search_s", "low"),
        ),
        row(
            "16l",
            "16g's 10 `log-batch` requests as JSON made beforehand, one keep-alive session: the"
            " servers' share, without MLflow's client",
            _get(m, "raw_log_batch_s"),
            _get(f, "raw_log_batch_s"),
            "s",
            "low",
            "≥ 10× MLflow",
            ten("raw_log_batch_s", "low"),
        ),
        row(
            "16m",
            "16i's `runs/search` request, the answer received, not parsed (median of 5): the"
            " servers' share, without MLflow's client",
            _get(m, "raw_search_s"),
            _get(f, "raw_search_s"),
            "s",
            "low",
            "≥ 10× MLflow",
            ten("raw_search_s", "low"),
        ),
    ]


def bench_mlflow(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    ml = r.run("mlws", "mlflow_log", {"calls": 10_000})
    fl = r.run("mlflow", "mlflow_log", {"calls": 10_000})
    ms_ = r.run("mlws", "mlflow_search", {"n": 1000})
    fs = r.run("mlflow", "mlflow_search", {"n": 1000})
    mr = r.run("mlws", "mlflow_rest", {"runs": 200})
    fr = r.run("mlflow", "mlflow_rest", {"runs": 200})
    ctx["mlflow_plugin"] = (ml, fl, ms_, fs)
    ctx["mlflow_rest"] = (mr, fr)

    def times_better(peer: Any, better: str) -> Callable[[float], bool]:
        """The target is a ratio to the peer's figure of the same run (≥ 20×)."""
        if not isinstance(peer, (int, float)):
            return lambda v: False
        return (lambda v: v >= 20 * peer) if better == "high" else (lambda v: 20 * v <= peer)

    return [
        row(
            "16a",
            "`mlflow.log_metric` ×10,000 in one run: through the mlws plugin (`mlws:///ws`) vs"
            " MLflow's SQLite store",
            _get(ml, "fluent_rate"),
            _get(fl, "fluent_rate"),
            "metrics/s",
            "high",
            "≥ 20× MLflow",
            times_better(_get(fl, "fluent_rate"), "high"),
        ),
        row(
            "16b",
            "same, `MlflowClient.log_metric` on one client (no per-call client of the fluent API)",
            _get(ml, "client_rate"),
            _get(fl, "client_rate"),
            "metrics/s",
            "high",
            "≥ 20× MLflow",
            times_better(_get(fl, "client_rate"), "high"),
        ),
        row(
            "16c",
            "`mlflow.search_runs` over 1,000 runs (all of them, as a pandas DataFrame)",
            _get(ms_, "all_s"),
            _get(fs, "all_s"),
            "s",
            "low",
            "≥ 20× MLflow",
            times_better(_get(fs, "all_s"), "low"),
        ),
        row(
            "16d",
            "`MlflowClient.search_runs` over the same 1,000 runs (`Run` objects, no DataFrame)",
            _get(ms_, "client_all_s"),
            _get(fs, "client_all_s"),
            "s",
            "low",
            "≥ 20× MLflow",
            times_better(_get(fs, "client_all_s"), "low"),
        ),
        row(
            "16e",
            "`mlflow.search_runs`, 1,000 runs, `tags.k = 'v'` (10%) by `metrics.acc DESC`",
            _get(ms_, "filtered_s"),
            _get(fs, "filtered_s"),
            "s",
            "low",
            "≥ 20× MLflow",
            times_better(_get(fs, "filtered_s"), "low"),
        ),
        row(
            "16j",
            "16c's search, the tracking store's `search_runs` timed alone (no MLflow client code,"
            " no DataFrame)",
            _get(ms_, "store_all_s"),
            _get(fs, "store_all_s"),
            "s",
            "low",
            "≥ 20× MLflow",
            times_better(_get(fs, "store_all_s"), "low"),
        ),
        row(
            "16k",
            "16e's search, the tracking store's `search_runs` timed alone",
            _get(ms_, "store_filtered_s"),
            _get(fs, "store_filtered_s"),
            "s",
            "low",
            "≥ 20× MLflow",
            times_better(_get(fs, "store_filtered_s"), "low"),
        ),
        *rest_rows(mr, fr),
    ]


def bench_studio(r: Runner, ctx: dict[str, Any]) -> list[Row]:
    m = r.run(
        "mlws",
        "studio",
        {"n": 100_000, "steps_per_run": 90, "long_steps": 1_000_000, "mid_steps": 20_000},
    )
    f = r.run("mlflow", "studio", {"n": 1000, "steps_per_run": 90, "long_steps": 20_000})
    ctx["studio"] = (m, f)
    peer_at = "at 1,000 runs: `runs/search`"
    return [
        row(
            "18a",
            "runs page, first 100 of 100,000 runs sorted by a metric: whole HTML page (`mlws studio`)"
            " vs MLflow UI's `runs/search` call (100 by a metric) at 1,000 runs⁵",
            _get(m, "runs_html", "full_ms"),
            _get(f, "search", "full_ms"),
            "ms",
            "low",
            "≤ 300 ms",
            lambda v: v <= 300,
        ),
        row(
            "18b",
            "same, time to first byte",
            _get(m, "runs_html", "ttfb_ms"),
            _get(f, "search", "ttfb_ms"),
            "ms",
            "low",
            "≤ 300 ms",
            lambda v: v <= 300,
            peer_note=peer_at,
        ),
        row(
            "18c",
            "same runs page as JSON (`.json`), whole answer",
            _get(m, "runs_json", "full_ms"),
            _get(f, "search", "full_ms"),
            "ms",
            "low",
        ),
        row(
            "18d",
            "run page with a 1,000,000-step metric (chart downsampled on the server), whole page vs"
            " MLflow's `metrics/get-history` of a 20,000-step metric⁵",
            _get(m, "run_long_html", "full_ms"),
            _get(f, "history", "full_ms"),
            "ms",
            "low",
            "report",
        ),
        row(
            "18e",
            "run page with a 20,000-step metric vs MLflow's `get-history` of the same length",
            _get(m, "run_mid_html", "full_ms"),
            _get(f, "history", "full_ms"),
            "ms",
            "low",
            "≤ 500 ms",
            lambda v: v <= 500,
            peer_note=_peer_bulk(f),
        ),
        row(
            "18f",
            "compare page of 100 runs (a 90-step metric each, overlaid), whole HTML page",
            _get(m, "compare_100_html", "full_ms"),
            None,
            "ms",
            "low",
            "≤ 1 s",
            lambda v: v <= 1000,
            peer_note="MLflow's UI compares in the browser: no server page to time",
        ),
        row(
            "18g",
            "time from navigation to the chart of a 100,000-step metric drawn (run page, headless"
            " chromium via Playwright; the page's own mark in the frame that paints it)",
            _get(m, "chart_paint", "ms"),
            None,
            "ms",
            "low",
            "≤ 500 ms",
            lambda v: v <= 500,
        ),
    ]


def _peer_bulk(f: Any) -> str:
    v = _get(f, "bulk_interval", "full_ms")
    return f"its sampled chart call, 320 points: {v:,.0f} ms" if isinstance(v, (int, float)) else ""


BENCHMARKS: dict[str, tuple[str, Callable[[Runner, dict[str, Any]], list[Row]]]] = {
    "1": ("metric logging throughput", bench_log),
    "2": ("creating 1,000 runs", bench_runs),
    "3": ("filter + sort runs", bench_query),
    "4": ("start-up", bench_startup),
    "5": ("submit to Completed", bench_submit),
    "6": ("snapshots and artifact dedup", bench_snapshot),
    "7": ("environment cache hit", bench_env),
    "8": ("callables fanned out as child runs", bench_fan),
    "9": ("submit to Completed per compute target", bench_compute),
    "10": ("serving a model over HTTP", bench_serving),
    "11": ("file dataset fingerprint", bench_dataset),
    "12": ("tabular dataset read vs pandas.read_csv", bench_tabular),
    "13": ("HyperDrive sweep overhead vs Optuna's own loop", bench_sweep),
    "14": ("pipelines: no-op re-run vs dvc repro, fan-out overhead", bench_pipeline),
    "15": ("the azureml import layer inside a run", bench_v1_import),
    "16": ("MLflow code through the mlws plugin vs MLflow's SQLite store", bench_mlflow),
    "17": ("the workspace server over HTTP vs mlflow server", bench_server),
    "18": ("the studio's pages vs MLflow's UI server", bench_studio),
    "19": ("serving an MLflow model without a scoring script", bench_serving_pyfunc),
}


# -- the report ----------------------------------------------------------------------------------
def fmt(v: Any, unit: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if unit == "metrics/s":
        return f"{v:,.0f}/s"
    if unit == "runs/s":
        return f"{v:,.1f} runs/s"
    if unit == "req/s":
        return f"{v:,.0f} req/s"
    if unit == "rows/s":
        return f"{v:,.0f} rows/s"
    if unit == "ms":
        return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"
    if unit == "s":
        return f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "MB":
        return f"{v:,.1f} MB"
    if unit == "bytes":
        return f"{v:,.0f}"
    if unit == "×":
        return f"{v:.2f}×"
    return f"{v:.3g} {unit}"


def mlws_cell(rw: Row) -> str:
    """The mlws figure, with its note (e.g. a ratio to another mlws row) when it has one."""
    text = fmt(rw["mlws"], rw["unit"])
    return f"{text} ({rw['mlws_note']})" if rw.get("mlws_note") else text


def peer_cell(rw: Row) -> str:
    """The MLflow figure, with its note (e.g. the same figure another way) when it has one."""
    text = fmt(rw["peer"], rw["unit"])
    return f"{text} ({rw['peer_note']})" if rw.get("peer_note") else text


def advantage(rw: Row) -> str:
    a, b = rw["mlws"], rw["peer"]
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a <= 0 or b <= 0:
        return "—"
    ratio = a / b if rw["better"] == "high" else b / a
    if ratio >= 1:
        return f"**{ratio:,.1f}×** better" if ratio < 100 else f"**{ratio:,.0f}×** better"
    return f"{1 / ratio:,.1f}× worse"


def verdict(rw: Row) -> str:
    v = rw["mlws"]
    if rw["ok"] is None:
        return "**FAIL** (error)" if isinstance(v, str) and v.startswith("error:") else "info"
    if not isinstance(v, (int, float)):
        return "**FAIL** (error)"
    try:
        return "pass" if rw["ok"](v) else "**FAIL**"
    except Exception as e:  # noqa: BLE001 - a broken result is a failed check, not a crash
        return f"**FAIL** ({e})"


def _load() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


LOAD_AT_START = _load()


def _mlws_commit() -> str:
    """``mlws <version> at commit <sha>`` (+ a note when mlws/ has uncommitted changes)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "mlws"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    return f"mlws {_mlws_version()} at commit {commit}{' + uncommitted changes in mlws/' if dirty else ''}"


def machine_info(mlflow_ver: str | None, started: dt.datetime, wall: float) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (whole run {wall / 60:.1f} min)",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {mem} RAM, {platform.platform()}",
        f"- Python {platform.python_version()} ({sys.executable}); SQLite {sqlite3.sqlite_version}",
        f"- {_mlws_commit()}",
        f"- Load average (1/5/15 min) at start {LOAD_AT_START}, at end {_load()}: other work on the machine"
        " during the run slows both sides and makes single figures noisy",
        f"- MLflow {mlflow_ver or 'not run'} (SQLite tracking store, `sqlite:///<dir>/mlflow.db`), in `bench/.mlflow-venv`",
    ]


def _mlws_version() -> str:
    try:
        import mlws

        return mlws.__version__
    except Exception:  # noqa: BLE001
        return "?"


def details(ctx: dict[str, Any]) -> list[str]:
    out = []

    def g(d: Any, *keys: str) -> Any:
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    def n(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "—"

    if "log" in ctx:
        m, f = ctx["log"]
        out.append(
            f"- **1.** Inside the script: the `run.log` loop took {n(g(m, 'log_s'), '.3f')} s "
            f"({n(g(m, 'log_only_rate'), ',.0f')} calls/s, buffering only) and `run.flush()` "
            f"{n(g(m, 'flush_s'), '.3f')} s; {n(g(m, 'stored'), ',')} values read back with `get_metrics()`. "
            f"Whole submit → Completed of that script: {n(g(m, 'wall_s'), '.2f')} s. MLflow: {n(g(f, 'log_metric_s'), '.2f')} s "
            f"for 2,000 `log_metric` calls, {n(g(f, 'log_batch_s'), '.2f')} s for 100 `log_batch` calls of 1,000."
        )
    if "query" in ctx:
        m1, f1, m100 = ctx["query"]
        out.append(
            f"- **3.** The 1,000 runs are those made through the API in benchmark 2 (10% tagged `k=v`). "
            f"First query in the process: mlws {n(g(m1, 'first_ms'), '.1f')} ms, MLflow {n(g(f1, 'first_ms'), '.0f')} ms; "
            f"the table shows the median of the next 20 (mlws) / 10 (MLflow). `MlflowClient.search_runs` "
            f"(no DataFrame) took {n(g(f1, 'client_ms'), '.1f')} ms. The 100,000 runs were inserted straight into "
            f"the catalog tables (`runs`, `run_tags`, `run_properties`, `metric_summary`, `metrics`) in "
            f"{n(g(m100, 'populate_s'), '.1f')} s, not through the API; then the workspace is reopened and "
            f"each query timed 6 times (median of the last 5). Every result is checked: row count, and "
            f"the order by `acc` descending."
        )
    if "serving_pyfunc" in ctx:
        m, f = ctx["serving_pyfunc"]
        out.append(
            f"- **19.** The model was saved with MLflow {g(m, 'mlflow') or '—'} and served by MLflow"
            f" {g(f, 'mlflow') or '—'}. Cold first deploy / start (not counted): mlws"
            f" {n(g(m, 'deploy_cold_s'), '.2f')} s, MLflow {n(g(f, 'deploy_cold_s'), '.2f')} s."
            f" p90 of 19a: mlws {n(g(m, 'inputs', 'p90_ms'), '.2f')} ms, MLflow"
            f" {n(g(f, 'inputs', 'p90_ms'), '.2f')} ms."
        )
    if "submit" in ctx:
        m, _ = ctx["submit"]
        out.append(
            f"- **5.** mlws: `exp.submit(...)` itself (snapshot, catalog row, start the supervisor) took "
            f"{n(g(m, 'submit_call_s'), '.3f')} s of it; the source folder sits in a git repository, so git "
            f"properties are collected. One warm-up run before the five timed ones, on both sides."
        )
    if "snapshot" in ctx:
        m, ma, fa = ctx["snapshot"]
        out.append(
            f"- **6.** Snapshots go through `mlws.snapshots.take_snapshot(ws.blobs, folder)`; 6b is the median "
            f"of three unchanged re-snapshots ({', '.join(n(x, '.3f') for x in g(m, 'unchanged', 'all_s') or [])} s) "
            f"and 6c the most new bytes any of them stored. Artifacts: mlws "
            f"`upload_folder` took {n(g(ma, 'run1', 's'), '.2f')} s then {n(g(ma, 'run2', 's'), '.2f')} s, the "
            f"workspace grew to {n(_mb(g(ma, 'run1', 'disk_bytes')), ',.1f')} MB then "
            f"{n(_mb(g(ma, 'run2', 'disk_bytes')), ',.1f')} MB; MLflow `log_artifacts` took "
            f"{n(g(fa, 'run1', 's'), '.2f')} s then {n(g(fa, 'run2', 's'), '.2f')} s, its store grew to "
            f"{n(_mb(g(fa, 'run1', 'disk_bytes')), ',.1f')} MB then {n(_mb(g(fa, 'run2', 'disk_bytes')), ',.1f')} MB "
            f"(disk use counts allocated blocks, like `du`; 10,000 files of 10 kB take ~123 MB)."
        )
    if "env" in ctx:
        m = ctx["env"]
        out.append(
            f"- **7.** First call of the cache hit in the process: {n(g(m, 'hit_first_ms'), '.3f')} ms "
            f"(`Environment.get` + `resolve`: {n(g(m, 'get_first_ms'), '.3f')} ms); the table shows "
            f"{n(g(m, 'hit_ms'), '.3f')} ms and {n(g(m, 'get_ms'), '.3f')} ms. The build took "
            f"{n(g(m, 'build_s'), '.2f')} s (`uv venv` + `uv pip install six psutil cryptography`)."
        )
    if "fan" in ctx:
        m2, m4 = ctx["fan"]
        out.append(
            f"- **8.** 200 child runs took {n(g(m2, 'seconds'), '.2f')} s on "
            f"{n(g(m2, 'pids'), 'd')} worker processes (`max_concurrent=2`) and "
            f"{n(g(m4, 'seconds'), '.2f')} s on {n(g(m4, 'pids'), 'd')} (`max_concurrent=4`), on "
            f"{os.cpu_count()} CPUs."
        )
    if "compute" in ctx:
        m = ctx["compute"]

        def ms_list(key: str) -> str:
            return ", ".join(n(x, ".0f") for x in g(m, key, "all_ms") or [])

        shipped = (
            "mlws and its dependencies"
            if g(m, "ssh", "shipped_deps")
            else "mlws"
            if g(m, "ssh", "shipped_mlws")
            else "nothing (mlws was already there)"
        )
        out.append(
            f"- **9.** First (cold) runs, not in the table: `local` {n(g(m, 'local', 'cold_ms'), '.0f')} ms; "
            f"`ssh` {n(g(m, 'ssh', 'cold_ms'), '.0f')} ms (it shipped {shipped} to the host's "
            f"`<work_dir>/lib/`); `dask` {n(g(m, 'dask', 'cold_ms'), '.0f')} ms (it started the local "
            f"cluster: scheduler and one worker process). The timed runs: `local` {ms_list('local')} ms; "
            f"`ssh` {ms_list('ssh')} ms; `dask` {ms_list('dask')} ms. Medians as a ratio to `local`: "
            f"`ssh` {n(g(m, 'ssh', 'ratio'), '.1f')}×, `dask` {n(g(m, 'dask', 'ratio'), '.1f')}×."
        )
    if "serving" in ctx:
        out.append(_serving_details(ctx["serving"], n))
    if "dataset" in ctx:
        m = ctx["dataset"]
        out.append(
            f"- **11.** Making the {n(g(m, 'files'), ',')} files ({n(_mb(g(m, 'bytes')), ',.0f')} MB) took "
            f"{n(g(m, 'make_s'), '.1f')} s (not timed). `register` took {n(g(m, 'first', 's'), '.2f')} s "
            f"({n(g(m, 'first', 'mb_s'), ',.0f')} MB/s); the unchanged re-checks "
            f"{', '.join(n(x, '.3f') for x in g(m, 'unchanged', 'all_s') or [])} s; after the one-byte "
            f"change `changes()` took {n(g(m, 'one_change', 's'), '.3f')} s and reported "
            f"{', '.join(f'`{x}`' for x in g(m, 'one_change', 'modified') or []) or '—'} as modified."
        )
    if "tabular" in ctx:
        m = ctx["tabular"]
        times = (
            f"`to_pandas_dataframe()` {', '.join(n(x, '.3f') for x in g(m, 'mlws', 'all_s') or [])} s,"
            f" `pandas.read_csv` {', '.join(n(x, '.3f') for x in g(m, 'pandas', 'all_s') or [])} s"
        )
        versions = g(m, "versions") or {}
        cpu = (
            f"{', '.join(n(x, '.3f') for x in g(m, 'mlws', 'cpu_s') or [])} s and"
            f" {', '.join(n(x, '.3f') for x in g(m, 'pandas', 'cpu_s') or [])} s"
        )
        parallel = {True: "parses in threads of its own too", False: "parses in one thread"}
        out.append(
            f"- **12.** The CSV is {n(_mb(g(m, 'bytes')), ',.0f')} MB, written in"
            f" {n(g(m, 'make_s'), '.1f')} s (not timed). Timed calls: {times}; CPU time of the same"
            f" calls (all threads): {cpu}. This pandas' `read_csv`"
            f" {parallel.get(g(m, 'pandas_parallel'), '—')}. The first, untimed"
            f" calls took {n(g(m, 'mlws_first_s'), '.3f')} s and {n(g(m, 'pandas_first_s'), '.3f')} s."
            f" Frames equal: {'yes' if g(m, 'equal') else '—'}; dtypes"
            f" {', '.join(f'{k} {v}' for k, v in (g(m, 'dtypes') or {}).items()) or '—'}."
            f" pandas {versions.get('pandas', '—')}, pyarrow {versions.get('pyarrow', '—')}, on"
            f" {os.cpu_count()} CPUs."
        )
    if "pipeline" in ctx:
        m, f, dvc, p = ctx["pipeline"]
        walls = ", ".join(f"{v * 1e3:.0f}" for v in (g(m, "noop_all_s") or []))
        dwalls = ", ".join(f"{v * 1e3:.0f}" for v in (g(m, "dvc_all_s") or []))
        out.append(
            f"- **14.** No-op re-runs (ms, the first 2 not counted): mlws {walls or '—'}; of the"
            f" median: `submit()` {n(g(m, 'submit_s'), '.3f')} s (validate, snapshot of the source"
            f" folder, record), controller start (run created → Running)"
            f" {n(g(m, 'controller_start_s'), '.3f')} s, the controller's 10 reuses and end"
            f" (Running → Completed) {n(g(m, 'drive_s'), '.3f')} s; the rest is"
            f" `wait_for_completion`'s polling. First full run {n(g(m, 'first_s'), '.2f')} s."
            f" DVC {dvc or '(not installed)'}: first `dvc repro` {n(g(m, 'dvc_first_s'), '.2f')} s,"
            f" no-op {dwalls or '—'} ms. Fan-out: {n(g(f, 'wall_s'), '.2f')} s for"
            f" {g(f, 'steps') or '—'} steps on {g(f, 'slots') or '—'} slots; a step run's own time"
            f" {n((g(f, 'step_run_s') or 0) * 1e3, '.0f')} ms, the bare script"
            f" {n((g(f, 'bare_s') or 0) * 1e3, '.0f')} ms. ParallelRunStep:"
            f" {n(g(p, 'prs_s'), '.2f')} s ({g(p, 'job_result') or '—'}), the joblib loop"
            f" {n(g(p, 'plain_s'), '.2f')} s."
        )
    if "server" in ctx:
        m, f, mu, fu = ctx["server"]
        out.append(
            f"- **17.** mlws: one client {n(g(m, 'one_s'), '.2f')} s for 100,000 `run.log` +"
            f" `flush`; 8 clients with `run.log` {n(g(m, 'eight', 'wall_s'), '.2f')} s, with raw"
            f" batches {n(g(m, 'eight_batches', 'rate'), ',.0f')} metrics/s (p50"
            f" {n(g(m, 'eight_batches', 'p50_ms'), '.1f')} ms); fresh process → first metric"
            f" {', '.join(n(x * 1e3, '.0f') for x in g(m, 'first_all_s') or [])} ms. MLflow: 8"
            f" clients' p50 {n(g(f, 'eight_batches', 'p50_ms'), '.1f')} ms;"
            f" {SERVER_PEER_RUNS} runs in {n(g(f, 'runs_s'), '.2f')} s; fresh process → first"
            f" metric {', '.join(n(x * 1e3, '.0f') for x in g(f, 'first_all_s') or [])} ms."
            f" Uploads: {n(g(mu, 'upload_files'), ',')} files, {n((g(mu, 'upload_bytes') or 0) / 1e6, '.0f')} MB."
        )
    if "v1_import" in ctx:
        m = ctx["v1_import"]
        out.append(
            f"- **15.** In each run's script, `import azureml.core` after `import mlws`:"
            f" {', '.join(n(x * 1e3, '.1f') for x in g(m, 'all_azureml_s') or [])} ms; `import mlws`"
            f" before it: {', '.join(n(x * 1e3, '.1f') for x in g(m, 'all_mlws_s') or [])} ms."
        )
    if "studio" in ctx:
        m, f = ctx["studio"]
        out.append(
            f"- **18.** mlws: {n(g(m, 'metric_rows'), ',')} metric rows, filled in"
            f" {n(g(m, 'fill_s'), '.0f')} s; cold (first) requests: runs page"
            f" {n(g(m, 'runs_html', 'cold', 'full_ms'), '.0f')} ms, 1M-step run page"
            f" {n(g(m, 'run_long_html', 'cold', 'full_ms'), '.0f')} ms; page sizes: runs"
            f" {n(g(m, 'runs_html', 'bytes'), ',')} bytes, 1M-step run"
            f" {n(g(m, 'run_long_html', 'bytes'), ',')} bytes; the 1M-step page as JSON"
            f" {n(g(m, 'run_long_json', 'full_ms'), '.0f')} ms. `mlws studio` exited"
            f" {g(m, 'exit_on_sigterm')} on SIGTERM. 18g: each load"
            f" {g(m, 'chart_paint', 'rounds_ms')} ms (cold first); seen by Playwright's polling"
            f" {n(g(m, 'chart_paint', 'observed_ms'), '.0f')} ms (cold"
            f" {n(g(m, 'chart_paint', 'observed_cold_ms'), '.0f')} ms)."
            f" MLflow: filled in {n(g(f, 'fill_s'), '.0f')} s;"
            f" cold `runs/search` {n(g(f, 'search', 'cold', 'full_ms'), '.0f')} ms; `get-history`"
            f" answer {n(g(f, 'history', 'bytes'), ',')} bytes; its UI's HTML shell (`GET /`)"
            f" {n(g(f, 'ui_index', 'full_ms'), '.0f')} ms before any of those calls."
        )
    if "mlflow_plugin" in ctx:
        ml, fl, ms_, fs = ctx["mlflow_plugin"]
        out.append(
            f"- **16.** 10,000 `mlflow.log_metric` calls: mlws {n(g(ml, 'fluent_s'), '.2f')} s,"
            f" MLflow {n(g(fl, 'fluent_s'), '.2f')} s; 10,000 `MlflowClient.log_metric`: mlws"
            f" {n(g(ml, 'client_s'), '.2f')} s, MLflow {n(g(fl, 'client_s'), '.2f')} s. Making"
            f" the 1,000 runs (not timed): mlws"
            f" {n(g(ms_, 'create_s'), '.2f')} s, MLflow {n(g(fs, 'create_s'), '.2f')} s."
            " `mlflow.search_runs` (16c, 16e) turns the runs into a pandas DataFrame in MLflow's"
            " client code, the same on both sides (a `pandas.to_datetime` per row and column):"
            " the ratio at"
            " the DataFrame level is bounded by MLflow's client code, not by the store, so 16j"
            " and 16k time the two stores' `search_runs` alone for the same searches. Over HTTP"
            " (16f-16i) MLflow's client turns every request and answer into protobuf messages,"
            " the same code against either server, which bounds those ratios likewise; 16l and 16m"
            " send the same requests as JSON made beforehand and read the answers unparsed."
            + _mlflow_bounds(ms_, fs, *ctx.get("mlflow_rest", (None, None)), g, n)
        )
    return out


def _mlflow_bounds(ms_: Any, fs: Any, mr: Any, fr: Any, g: Any, n: Any) -> str:
    """Bench 16's bounds: MLflow's own client code, timed alone on the mlws side, and the
    most each end-to-end ratio could be with a server or store taking no time at all."""

    def ms(v: Any) -> str:
        return n(v * 1e3 if isinstance(v, (int, float)) else v, ".1f")

    def most(peer: Any, floor: Any) -> str:
        ok = isinstance(peer, (int, float)) and isinstance(floor, (int, float)) and floor > 0
        return f"{peer / floor:.1f}×" if ok else "n/a"

    cpu = g(mr, "log_metric_client_cpu_s")
    # MLflow's own side has the function only in some versions (3.17 builds it inline).
    peer = g(fs, "dataframe_all_s")
    peer = f" (MLflow's side: {ms(peer)} ms)" if isinstance(peer, (int, float)) else ""
    return (
        " The bounds, measured: MLflow's DataFrame building alone (`_runs_to_pandas`, the same"
        f" code on either side) takes {ms(g(ms_, 'dataframe_all_s'))} ms of 16c's"
        f" {ms(g(ms_, 'all_s'))} ms on the mlws side{peer}, and"
        f" {ms(g(ms_, 'dataframe_filtered_s'))} ms of"
        f" 16e's {ms(g(ms_, 'filtered_s'))} ms: with a store taking no time 16c could be at most"
        f" {most(g(fs, 'all_s'), g(ms_, 'dataframe_all_s'))} and 16e at most"
        f" {most(g(fs, 'filtered_s'), g(ms_, 'dataframe_filtered_s'))}. Over HTTP the stock"
        " client's own CPU (its protobuf messages, `requests`), timed in the client process:"
        f" {ms(cpu / 2000 if isinstance(cpu, (int, float)) else cpu)} ms per `log_metric` (16f"
        f" at most {most(g(fr, 'log_metric_s'), cpu)} with a server taking no time),"
        f" {ms(g(mr, 'log_batch_client_cpu_s'))} ms for 16g's `log_batch` (at most"
        f" {most(g(fr, 'log_batch_s'), g(mr, 'log_batch_client_cpu_s'))}),"
        f" {ms(g(mr, 'search_client_cpu_s'))} ms per 1,000-run `search_runs` (16i at most"
        f" {most(g(fr, 'search_s'), g(mr, 'search_client_cpu_s'))})."
    )


def _serving_details(results: tuple[Any, Any, Any], n: Callable[[Any, str], str]) -> str:
    model, m, f = results

    def g(d: Any, *keys: Any) -> Any:
        for k in keys:
            if isinstance(d, dict) and k in d:
                d = d[k]
            elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
                d = d[k]
            else:
                return None
        return d

    def ms(v: Any) -> str:
        return n(v * 1e3 if isinstance(v, (int, float)) else v, ".0f")

    def mb(v: Any) -> str:
        return n(v / 1e6 if isinstance(v, (int, float)) else v, ".0f")

    def load(r: Any) -> str:
        return (
            f"{n(g(r, 'rps'), ',.0f')} req/s, p50 {n(g(r, 'p50_ms'), '.2f')} ms,"
            f" p99 {n(g(r, 'p99_ms'), '.2f')} ms"
        )

    def cpu(r: Any) -> str:
        return (
            f"CPU per request: server {n(g(r, 'server_cpu_us_per_req'), '.0f')} µs,"
            f" clients {n(g(r, 'client_cpu_us_per_req'), '.0f')} µs"
        )

    def rounds(r: Any) -> str:
        return "; ".join(load(x) for x in g(r, "rounds") or []) or "—"

    def mem(x: Any) -> str:
        return f"{mb(g(x, 'rss'))} / {mb(g(x, 'pss'))}"

    def ratio(a: Any, b: Any) -> str:
        ok = all(isinstance(v, (int, float)) and v > 0 for v in (a, b))
        return n(a / b if ok else None, ".1f")

    errors = [f"{side}: {x['error']}" for side, x in (("mlws", m), ("MLflow", f)) if "error" in x]
    tel = g(m, "r2", "server_latency_ms") or {}
    sup_cpu = [g(x, "supervisor_cpu_us_per_req") for x in g(m, "r2", "rounds") or []]
    parts = [
        f"- **10.** {'Errors: ' + '; '.join(errors) + '. ' if errors else ''}"
        f"The model: training accuracy {n(g(model, 'accuracy'), '.3f')}, scikit-learn"
        f" {g(model, 'sklearn') or '—'}.",
        f"**Load**, wrk with 4 connections, each round: mlws 2 replicas {rounds(g(m, 'r2'))}"
        f" (median round's {cpu(g(m, 'r2'))}; the supervisor's share"
        f" {', '.join(n(x, '.0f') for x in sup_cpu) or '—'} µs; latency inside the replicas, from the"
        f" service's request log: p50 {n(tel.get('p50'), '.2f')} ms, p99 {n(tel.get('p99'), '.2f')} ms);"
        f" MLflow `-w 1` {rounds(g(f, 'w1'))} ({cpu(g(f, 'w1'))}). mlws vs MLflow `-w 1`:"
        f" {ratio(g(m, 'r2', 'rps'), g(f, 'w1', 'rps'))}× the requests/s with `inputs`,"
        f" {ratio(g(m, 'r2', 'rps'), g(f, 'w1_split', 'rps'))}× with `dataframe_split`.",
        f"Single rounds: mlws 1 replica {load(g(m, 'r1'))} ({cpu(g(m, 'r1'))}); 2 replicas whose"
        f" `run()` returns `[0]` without parsing or predicting {load(g(m, 'trivial'))}"
        f" ({cpu(g(m, 'trivial'))}). With the Python load generator (4 client processes): mlws 2"
        f" replicas {load(g(m, 'r2_python'))} ({cpu(g(m, 'r2_python'))}), MLflow `-w 1`"
        f" {load(g(f, 'w1_python'))} ({cpu(g(f, 'w1_python'))}):"
        f" {ratio(g(m, 'r2_python', 'rps'), g(f, 'w1_python', 'rps'))}×.",
        f"MLflow `-w 1` with `dataframe_split` {load(g(f, 'w1_split'))} ({cpu(g(f, 'w1_split'))});"
        f" `-w 2` {load(g(f, 'w2'))} ({cpu(g(f, 'w2'))}).",
        f"Called in-process, `score.run` takes {n(g(m, 'run_us'), '.0f')} µs, of which"
        f" `model.predict` {n(g(m, 'predict_us'), '.0f')} µs.",
        f"**Deploy → first 200**: mlws"
        f" {', '.join(ms(g(t, 'first_s')) for t in g(m, 'deploy') or []) or '—'} ms (cold, not"
        f" counted: {ms(g(m, 'deploy_cold', 'first_s'))} ms); medians: the `Model.deploy` call"
        f" {ms(g(m, 'deploy_call_s'))} ms, the port listening after {ms(g(m, 'deploy_listen_s'))} ms,"
        f" every replica up after {ms(g(m, 'deploy_all_s'))} ms; with 1 replica the first 200 came"
        f" after {ms(g(m, 'r1', 'deploy_first_s'))} ms. A fresh interpreter that imports `score.py`"
        f" and calls `init()` (unpickling the model imports scikit-learn) takes"
        f" {ms(g(m, 'init_s'))} ms by itself. MLflow"
        f" {', '.join(ms(g(t, 'first_s')) for t in g(f, 'deploy') or []) or '—'} ms (cold"
        f" {ms(g(f, 'deploy_cold', 'first_s'))} ms; port listening after"
        f" {ms(g(f, 'deploy_listen_s'))} ms; `-w 2`: {ms(g(f, 'deploy_w2_s'))} ms); a fresh"
        f" interpreter that imports its scoring server and loads the model takes"
        f" {ms(g(f, 'load_s'))} ms. `log_model` took {n(g(f, 'log_model_s'), '.1f')} s.",
        f"**Memory** after the load, RSS / PSS in MB: mlws replicas"
        f" {', '.join(mem(x) for x in g(m, 'memory', 'replicas') or []) or '—'}, supervisor"
        f" {mem(g(m, 'memory', 'supervisor'))}; MLflow `-w 1` uvicorn"
        f" {mem(g(f, 'memory_w1', 'uvicorn'))} and the `mlflow models serve` process that waits for"
        f" it {mem(g(f, 'memory_w1', 'cli'))}; `-w 2` workers"
        f" {', '.join(mem(x) for x in g(f, 'memory_w2', 'workers') or []) or '—'}, their uvicorn"
        f" parent {mem(g(f, 'memory_w2', 'uvicorn'))}.",
    ]
    return " ".join(parts)


def _runs_rate(ctx: dict[str, Any]) -> str:
    f = ctx.get("runs", (None, None))[1]
    secs = f.get("seconds") if isinstance(f, dict) else None
    if not isinstance(secs, (int, float)):
        return "a few dozen runs/s"  # benchmark 2 was not run
    rate = f["n"] / secs
    return f"{rate:,.0f} runs/s ({100_000 / rate / 60:,.0f} minutes for 100,000 runs)"


def render_report(
    rows: list[Row],
    ctx: dict[str, Any],
    mlflow_ver: str | None,
    started: dt.datetime,
    wall: float,
) -> str:
    lines = [
        "# Benchmarks: mlws vs MLflow",
        "",
        "Written by `make bench` (`.venv/bin/python bench/run.py`); do not edit by hand. Both sides run in the",
        "same `make bench` run on the same machine: figures from different runs or machines do not compare.",
        "",
        "| # | benchmark | mlws | MLflow | mlws vs MLflow | target (mlws) | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for rw in rows:
        peer = peer_cell(rw)
        lines.append(
            f"| {rw['id']} | {rw['name']} | {mlws_cell(rw)} | {peer} | {advantage(rw)} | {rw['target']} | {verdict(rw)} |"
        )
    lines += [
        "",
        f"¹ MLflow's 100,000-run case is not measured: its API filled its store at {_runs_rate(ctx)} in",
        "benchmark 2, and writing rows into its schema by hand would not test MLflow. Compare at 1,000 runs (3a).",
        "",
        "² MLflow does not snapshot source folders (MLflow Projects run the folder in place).",
        "",
        "³ MLflow has no public call that turns an environment definition into a built, cached interpreter.",
        "Its Projects build and reuse a hash-named virtualenv (`env_manager='virtualenv'` or `'uv'`), but only",
        "inside `mlflow.projects.run`, so there is no like-for-like figure to time.",
        "",
        "⁴ MLflow has no fan-out of callables: nested runs (`mlflow.start_run(nested=True)`) are made by hand",
        "inside the user's own process pool.",
        "",
        "⁵ Scaled down for MLflow: filling its store through its API runs at ~5-10 runs/s and ~5,000",
        "metric values/s here (benchmark 1b), so 100,000 runs and a 1,000,000-step series would take",
        "hours; it gets 1,000 runs and a 20,000-step series, mlws 100,000 runs and ~10M metric rows.",
        "",
        "## Machine",
        "",
        *machine_info(mlflow_ver, started, wall),
        "",
        "## How it is measured",
        "",
        "- Every case runs in its own process: `bench/mlws_cases.py` with the project's `.venv` Python,",
        "  `bench/mlflow_cases.py` with `bench/.mlflow-venv`'s Python. HOME, TMPDIR, the workspaces, the MLflow",
        "  stores and the data set live under `bench/.work/` (git-ignored), removed at the end.",
        "  `MLWS_WORKSPACE` points there too, so nothing touches the real home. MLflow's telemetry is off.",
        '- "mlws vs MLflow" is how many times better mlws is (higher rate, or lower time or size).',
        "- 1: a script submitted with `ScriptRunConfig` to `local` logs 100,000 scalars (10 names × 10,000",
        "  steps) with `run.log`, then `run.flush()`; it times that itself and writes the figure to",
        "  `outputs/bench.json`, read back with `run.download_file`. MLflow, in one process with an active run:",
        "  2,000 timed `log_metric` calls, and 100,000 metrics through `MlflowClient.log_batch` in batches of 1,000.",
        "- 2: mlws `exp.start_logging()`, `add_properties` (5), `log` × 3, `set_tags` (2), `complete()`; MLflow",
        "  `start_run`, `log_params` (5), `log_metric` × 3, `set_tags` (2), `end_run`. Same process, timed loop.",
        "- 3: `mlws.experiments.query_runs(ws, experiment=..., tags={'k': 'v'}, sort_by='metric:acc')`, which",
        "  returns every matching run row; MLflow `mlflow.search_runs(experiment_ids=[...],",
        "  filter_string=\"tags.k = 'v'\", order_by=['metrics.acc DESC'])` (a pandas DataFrame). mlws's calls",
        "  are timed one by one, the previous call's rows freed before the clock starts (3b-3d: until",
        "  2026-12-05 they were freed inside the next call's timing, ~15 ms of 3c's 207 ms).",
        "- 4: wall time of `python -c ...` (imports, open an existing workspace/store, start a run, log one",
        "  metric, complete) as a child process; median of 5 after one warm-up run. mlws is an editable install",
        "  without `.pyc` files, so its children write them under `bench/.work/pycache` (`PYTHONPYCACHEPREFIX`)",
        "  during the warm-up, as a regular install would have them.",
        "- 5: `exp.submit(ScriptRunConfig(source_directory=d, script='t.py'))` + `run.wait_for_completion()`",
        "  for a one-line `print`; MLflow `mlflow.projects.run(uri=d, env_manager='local', synchronous=True)`",
        "  for the same script. Median of 5 after one warm-up.",
        "- 6: a data set of 10,000 files × 10 kB of random bytes in 100 folders (100 MB).",
        "- 7: `Environment('bench-env')`, managed (`user_managed_dependencies = False`), with",
        "  `CondaDependencies.create(pip_packages=['six'])`; the first `mlws.environments.resolve(env)` builds",
        "  it under `~/.cache/mlws/envs/<hash>` (uv from `.venv`, downloading from PyPI into",
        "  `UV_CACHE_DIR` under `bench/.work/`). Then `resolve(env)` 21 times (median of the last 20); each",
        "  must return the same interpreter, and the build's marker file and the env folder must be untouched.",
        "  7b does the same after `env.register(ws)`, through `Environment.get(ws, 'bench-env')` + `resolve`.",
        "- 8: `run_parallel(Experiment(ws, 'fan'), f, range(200), max_concurrent=N)` where `f(x)` does",
        "  `Run.get_context().log('x', x)` and returns `x * x`; the whole call is timed, including starting the",
        "  loky worker processes, in a fresh process (after a 4-call warm-up in another process, which writes",
        "  the `.pyc` of joblib, loky and cloudpickle as in 4). Checked: parent Completed, 200 Completed",
        "  children, each `x` logged once, the last child's result.",
        "- 9: the script of 5 (one `print`) submitted with `ScriptRunConfig(..., compute_target=...)` from",
        "  one process to `local`, to an `ssh` target and to a `dask` target. `ssh`: one host, a throwaway",
        "  OpenSSH server on 127.0.0.1 that the case starts (`tests/sshd.py`'s `SshServer`, key login),",
        "  `RemoteCompute.attach_configuration(python_path='/usr/bin/python3', work_dir=<under bench/.work>)`;",
        "  the case's TMPDIR is a short folder in /tmp, as ssh's ControlMaster socket path must fit in 107",
        "  bytes. `dask`: `AmlCompute.provisioning_configuration(min_nodes=1, max_nodes=1)`, a local cluster.",
        "  Per target one cold run first (the first `ssh` run ships mlws and its dependencies to the host,",
        "  the first `dask` run starts the cluster; in the details), then 5 timed runs, median; each must end",
        "  `Completed` with the script's line in `logs/driver.log`. The cluster and the sshd (by pid) are",
        "  stopped at the end. `wait_for_completion` polls the status with a growing delay of up to 0.25 s,",
        "  so single runs differ in steps of up to a quarter second. No MLflow figure: MLflow Projects run",
        "  locally, on Databricks or on Kubernetes, with no ssh or Dask backend of their own.",
        "- 10: one model for both: `LogisticRegression(max_iter=1000, random_state=0)` fitted on scikit-learn's",
        "  iris, pickled with joblib (the same scikit-learn version in both venvs). mlws registers that file",
        "  (`Model.register`) and deploys it with `examples/deploy/score.py` (`init()` unpickles it, `run()`",
        '  parses `{"data": [[...]]}` and returns `model.predict(...).tolist()`), keys on; MLflow logs the',
        "  unpickled model with `mlflow.sklearn.log_model(..., signature=infer_signature(X, y))` in its venv and",
        "  serves it with `mlflow models serve -m models:/<id> --env-manager local -h 127.0.0.1 -p <port> -w N`",
        "  (its venv's `bin` first on PATH, as when activated: the CLI runs `uvicorn` from PATH), started in",
        "  its own process group and stopped by killing that group. Both listen on 127.0.0.1, on a free port",
        "  picked beforehand. The same load generators for both. 10a-10c: wrk (Debian's, C and epoll),",
        "  `-t4 -c4`: 4 keep-alive connections, one thread each, one request in flight per connection, the",
        "  same one-row POST back to back (a Lua hook checks every answer: any non-200 answer or a wrong",
        "  prediction fails the case); a 1 s run first, not counted, then 5 s measured, with wrk's",
        "  latencies (request sent → response parsed); the median of 3 such rounds on each side. 10f: once",
        "  with `bench/loadgen.py` run by `.venv`'s Python, 4 client processes, each one keep-alive",
        "  `http.client.HTTPConnection` (TCP_NODELAY) posting back to back, the first second not counted.",
        "  Why wrk leads: on 2 CPUs the clients share the machine with the server, and the Python clients",
        "  take 110-160 µs of CPU per request (wrk: about 30), which caps a server that needs about 200 µs",
        "  (mlws) and not one that needs 1,100 (MLflow, on one worker). MLflow's payload is",
        '  `{"inputs": [[...]]}`, its fastest;',
        '  `{"dataframe_split": ...}` is measured once too. 10d: from just before the `Model.deploy` call /',
        "  `Popen` of the CLI to the first 200 from the scoring URI (a POST every 5 ms, each on a new",
        "  connection), after one cold deploy/start that is not counted; median of 3. 10e: VmRSS (what",
        "  psutil reports as RSS) from `/proc/<pid>/status` of each mlws replica and of MLflow's uvicorn",
        "  process after the load; the details add PSS and the other processes. CPU per request is the",
        "  user + system time of the server's processes (mlws: supervisor and replicas; MLflow: the CLI,",
        "  uvicorn and its workers) and of the clients during a round, over the requests of that round.",
        "- 11: `Dataset.File.from_files(folder).register(ws, 'big')` over a local folder of 10,000 files ×",
        "  100 kB of random bytes in 100 folders (1 GB), made by the case under its work folder just before",
        "  (so in the page cache: 11a times sha256 hashing, not a cold disk) and removed after it; HOME, and",
        "  so the stat cache `~/.cache/mlws/hashcache.db`, is under `bench/.work/`. 11b: `has_changed()` three",
        "  times on the untouched folder (median), each must be False. 11c: one byte in the middle of one",
        "  file flipped in place (size kept, mtime changes), then `changes()`, which must report exactly that",
        "  file as modified and nothing added or removed. No MLflow figure: `mlflow.data` datasets record a",
        "  digest of data given to them (e.g. a DataFrame) for a run's inputs; there is no registered",
        "  dataset over a folder of files to re-check for changes.",
        "- 12: the case writes a CSV of 1,000,000 rows × 8 columns (`id`, `count`, `bucket`: ints;",
        "  `x`, `y`, `price`: floats; `label`: one of four short words; `flag`: True/False), seeded,",
        "  with `DataFrame.to_csv` under its work folder (in the page cache), registers",
        "  `Dataset.Tabular.from_delimited_files(path)` and, in the same process, reads it with",
        "  `Dataset.get_by_name(ws, 'big').to_pandas_dataframe()` (pyarrow's multithreaded CSV reader,",
        "  then `to_pandas`) and with `pandas.read_csv(path)` (its default C engine). One untimed call of",
        "  each first (imports, thread pool), then three timed calls of each, alternated; the medians",
        "  are compared, and the last two frames must be equal (`pandas.testing.assert_frame_equal`:",
        "  columns, dtypes, values). No MLflow figure: `mlflow.data` records a digest of a frame given",
        "  to a run; it has no registered tabular dataset to read.",
        "- 14: 14a: ten `PythonScriptStep`s in a line, all running the same 6-line script (sum the",
        "  sizes of the files in its input folder, write one number): step 0 reads a 5-file dataset",
        "  (`as_mount()`), step i the `PipelineData` of step i-1. One full run, then the pipeline is",
        "  built and submitted 7 more times unchanged (`exp.submit(pipeline)` +",
        "  `wait_for_completion(show_output=False)`, every step must come back `azureml.ReusedStepRun`);",
        "  median of the last 5. DVC: the same script as 10 stages of a `dvc.yaml` (`deps`: the script",
        "  and the previous output, `outs`: its own), `dvc init --no-scm`, one `dvc repro`, then 7 more",
        "  timed (`bench/.dvc-venv`'s `dvc` CLI run as a subprocess, `DVC_NO_ANALYTICS=1`), median of",
        "  the last 5. 14c-14e: 20 `PythonScriptStep`s of a one-line `print`, no data between them,",
        "  `allow_reuse=False`, on `local` set to 2 slots (`mlws.compute.local.configure`); one warm-up",
        "  pipeline, then 3 timed, the median one reported. A step run's own time is its",
        "  `start_time` (Running: slot held, script starting) → `end_time` from the catalog.",
        "  14f/14g: a CSV of 1,000,000 rows (`id`, `x`), an entry script whose `run()` returns one",
        "  string per row (`id` and `x * 2.5`), `ParallelRunStep` with `mini_batch_size=10000`,",
        "  `process_count_per_node=2`, `allow_reuse=False`, submitted 3 times (median); the plain loop,",
        "  in the case's process: `pandas.read_csv`, the same 100 slices, `joblib.Parallel(n_jobs=2)`",
        "  over the same function, the lines written in order to one file (one warm-up, median of 3).",
        "  The two output files must be equal.",
        "- 17: one `python -m mlws.server` process (a fresh workspace, a contributor token) vs `mlflow",
        "  server --backend-store-uri sqlite:///... --artifacts-destination ...` (its default 4 workers), both",
        "  on 127.0.0.1. mlws clients use the public API of a remote workspace (`Workspace(url, token=...)`,",
        "  `Experiment(ws, ...).start_logging()`, `run.log`, `run.flush()`: answered means stored); MLflow's",
        "  use `MlflowClient(tracking_uri=url)`. 17a/b in the case's process (MLflow: 100 timed `log_metric`",
        "  calls, 20,000 metrics by `log_batch`). 17c/d: 8 client processes released together (a go file);",
        "  aggregate = all values / (last end - first start); 17d times each request of batches of 1,000",
        "  (mlws: `http.client`, one kept-alive connection, a `batchId` each). 17e: mlws `start_logging`,",
        "  `add_properties` (5), `log` × 3, `set_tags` (2), `complete()`, then `ws.remote.flush()` (timed:",
        "  runs after the client's first travel whole with its next send; all 1,000 checked Completed after",
        "  the clock stops); MLflow `create_run(tags=2)`,",
        "  `log_batch(metrics=3, params=5)`, `set_terminated`. 17f: the launcher passes `time.time()` to a",
        "  new Python process, which prints the elapsed time once the server answered its first metric;",
        "  6 runs, the first one dropped. 17g/h: 10,000 files × 10 kB of random bytes, uploaded to a run and",
        "  then to a second run (mlws: only blobs the server lacks are sent).",
        "- 19: the model of 10, saved by the mlws side with `mlflow.sklearn.save_model(...,",
        "  serialization_format='cloudpickle', signature=infer_signature(X, y))` (mlflow-skinny in",
        "  `.venv`), registered with `Model.register` and deployed with `Model.deploy(ws, name,",
        "  [model])` -- no scoring script: each replica loads it with `mlflow.pyfunc.load_model` --",
        "  1 replica, keys on; MLflow serves the very same folder with `mlflow models serve -m <folder>",
        "  --env-manager local -w 1` (its own venv, whose MLflow version may differ by a patch: the",
        '  details name both). 19a: `{"inputs": [[...]]}` posted by one keep-alive',
        "  `http.client` connection, each call waiting for the last answer, 20 untimed then 500",
        "  timed; the prediction is checked on the first answers. 19b as 10d, with 1 replica / worker.",
        "- 18: mlws: a workspace of 100,000 runs written straight into the catalog (as 3b: 5",
        "  properties, 3 tags, acc/loss/f1 each), a 90-step `curve` for every run and one run each with a",
        "  1,000,000-step and a 20,000-step metric, generated by SQLite (~10.4M metric rows); then",
        "  `mlws studio` (a subprocess) serves it. MLflow: 1,000 runs made with `MlflowClient`",
        "  (`create_run`, one `log_batch` of acc/loss/f1 and the 90 `curve` steps, `set_terminated`)",
        "  and one 20,000-step metric (`log_batch`, 1,000 a call) in a SQLite store, served by `mlflow",
        "  server -w 1`; timed are the calls its UI makes: `POST /ajax-api/2.0/mlflow/runs/search`",
        "  (`max_results` 100, `order_by` the metric) for the runs page and `GET .../metrics/get-history`",
        "  for a chart (whole series; its charts also use `get-history-bulk-interval`, 320 points, in",
        "  the notes). Each request on a new connection from a stdlib `http.client` client in the case's",
        "  process: first byte = status line and headers in, whole = body read; one cold request, then",
        "  the median of 5. The studio's pages are rendered whole before they are sent (first byte ≈",
        "  whole); a browser's paint is not in these figures, except 18g's. 18g: a 100,000-step metric",
        "  on another run; its run page loaded in a new headless chromium page (new context) 6 times,",
        "  the first cold, the median of the other 5; time from the navigation's start to the page's",
        "  `mlws-charts-drawn` performance mark (studio.js sets it in the animation frame after uPlot",
        "  drew the series' 1,000 downsampled points, i.e. the frame that paints the chart); the time",
        "  Playwright saw the canvas by polling from outside (this row's figure before the mark) is in",
        "  the notes.",
        "- 16: the same MLflow code on both sides, in one process: mlws through its MLflow plugin",
        "  (`mlflow.set_tracking_uri(ws.get_mlflow_tracking_uri())`), MLflow with its SQLite store.",
        "  Both sides set the registry URI to the tracking URI (runs mlws starts get both), which",
        "  spares MLflow a failed `import pyspark` in every `MlflowClient()`. 16a: `mlflow.start_run()`,",
        "  one warm-up `log_metric`, then 10,000 timed `mlflow.log_metric(name, value, step=i // 10)`",
        "  (10 names) and a `get_run` (on the mlws side it flushes the batched values to the",
        "  catalog); 16b: the same with `MlflowClient.log_metric` on one client. Both check that",
        "  20,000 values were stored. 16c-16e: 1,000 runs made through `MlflowClient` (`create_run`,",
        "  one `log_batch` of 5 params, 3 metrics, 2 tags, `set_terminated`; not timed), then",
        "  `mlflow.search_runs(experiment_ids=[id])` (16c, all 1,000 rows as a DataFrame),",
        "  `MlflowClient.search_runs([id], max_results=1000)` (16d) and `mlflow.search_runs` with",
        "  `filter_string=\"tags.k = 'v'\"`, `order_by=['metrics.acc DESC']` (16e, 100 rows); median",
        "  of 11 calls each. 16f-16i: one stock `MlflowClient` (the `.venv`'s mlflow-skinny on the",
        "  mlws side, the MLflow venv's on the other) with `MLFLOW_TRACKING_URI=http://127.0.0.1:port`",
        "  against `python -m mlws.server` (`MLFLOW_TRACKING_TOKEN` a contributor token) vs `mlflow",
        "  server --backend-store-uri sqlite:///...` (its defaults, proxied artifacts): 2,000",
        "  `log_metric` (16f), one `log_batch` of 10,000 metrics (16g; the client splits it into",
        "  requests of 1,000), 200 runs made as for 16c (16h), then 800 more and",
        "  `search_runs([id], max_results=1000)` (16i, median of 5); stored values are checked.",
        "  16j/16k: the searches of 16c/16e through the tracking store object MLflow's client",
        "  holds (`client._tracking_client.store.search_runs`), median of 11. 16l: 16g's ten",
        "  `runs/log-batch` requests (1,000 metrics each) as JSON made before the clock starts, on",
        "  one `requests.Session`; 16m: 16i's `runs/search` request, timed until the answer's",
        "  last byte (median of 5; its run count checked after).",
        "",
        "## Details",
        "",
        *details(ctx),
        "",
        "## Running it",
        "",
        "```",
        "make bench                                   # everything, ~5-10 min; rewrites bench/RESULTS.md",
        ".venv/bin/python bench/run.py --only 3,4     # some benchmarks (writes the table for those only)",
        ".venv/bin/python bench/run.py --only 9 --merge  # re-run some, then update just their rows,",
        "                                                # notes and details in bench/RESULTS.md",
        ".venv/bin/python bench/run.py --keep         # keep bench/.work/ to look at the workspaces",
        ".venv/bin/python bench/run.py --no-mlflow    # mlws only, no peer (no ratios)",
        "```",
        "",
        "The first run creates `bench/.mlflow-venv` (`pip install mlflow scikit-learn`, about a minute).",
        "",
        "Notes by hand survive `--merge`: a paragraph under a benchmark's item in the sections above",
        "(after a blank line, indented two spaces: the item's first paragraph is the generated one),",
        "and sections of your own (`## ...`, dated) anywhere but this one.",
        "",
    ]
    return "\n".join(lines)


# -- --merge: re-run some benchmarks, keep the rest of RESULTS.md ----------------------------------
_ROW_KEY = re.compile(r"^\| (\d+)[a-z]? \|")
_ITEM_KEY = re.compile(r"^- (?:\*\*)?(\d+)[a-z]?[.:]")
_MERGE_NOTE = re.compile(r"^- Benchmarks? ([\d, ]+) re-run alone on ")


def _sections(text: str) -> list[list[str]]:
    """The lines of ``text`` cut before every ``## `` heading (the first part has none)."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append([])
        out[-1].append(line)
    return out


def _merge_table(old: list[str], new: list[str], chosen: set[str]) -> list[str]:
    """The old table with the rows of ``chosen`` benchmarks replaced by the new ones."""
    is_row = _ROW_KEY.match
    rows = [ln for ln in old if is_row(ln) and is_row(ln)[1] not in chosen]  # type: ignore[index]
    rows += [ln for ln in new if is_row(ln) and is_row(ln)[1] in chosen]  # type: ignore[index]
    rows.sort(key=lambda ln: int(is_row(ln)[1]))  # type: ignore[index]  # stable within a benchmark
    at = next((i for i, ln in enumerate(old) if is_row(ln)), None)
    if at is None:
        raise ValueError("no results table")
    rest = [ln for ln in old if not is_row(ln)]
    return rest[:at] + rows + rest[at:]


def _items(lines: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """A section's lines as (lines before its bullets, the bullets with their continuation
    lines, the lines after them). A blank line followed by an indented line or another bullet
    does not end the bullets: the paragraph is the current bullet's (hand-written, see
    :func:`_split_item`), the bullet the next one."""
    head: list[str] = []
    items: list[list[str]] = []
    tail: list[str] = []
    for i, ln in enumerate(lines):
        if not tail and items and not ln.strip():
            following = next((x for x in lines[i + 1 :] if x.strip()), "")
            if following.startswith(("  ", "- ")):
                items[-1].append(ln)
                continue
        if tail or (items and not ln.strip()):
            tail.append(ln)
        elif ln.startswith("- "):
            items.append([ln])
        elif items:
            items[-1].append(ln)
        else:
            head.append(ln)
    for it in items:  # a blank line between two bullets belongs to neither one's text
        while len(it) > 1 and not it[-1].strip():
            it.pop()
    return head, items, tail


def _split_item(item: list[str]) -> tuple[list[str], list[str]]:
    """A bullet as (its generated lines, its hand-written lines). What this script writes is
    the bullet's first paragraph (no blank line in it); a paragraph a person adds under it,
    after a blank line and indented, is theirs: ``--merge`` replaces the first and keeps the
    second."""
    cut = next((i for i, ln in enumerate(item) if not ln.strip()), len(item))
    return item[:cut], item[cut:]


def _merge_items(old: list[str], new: list[str], chosen: set[str]) -> list[str]:
    """The old section with the bullets of ``chosen`` benchmarks (``- 9:``, ``- **9.**``)
    replaced by the new section's generated text, each old bullet's hand-written paragraphs
    kept under it; bullets of no benchmark stay first, as they were. A chosen benchmark the
    new report says nothing of keeps its old bullet."""

    def key(item: list[str]) -> str | None:
        m = _ITEM_KEY.match(item[0])
        return m[1] if m else None

    head, old_items, tail = _items(old)
    _, new_items, _ = _items(new)
    fresh: dict[str, list[list[str]]] = {}
    for it in new_items:
        k = key(it)
        if k in chosen:
            fresh.setdefault(k, []).append(_split_item(it)[0])  # type: ignore[arg-type]
    keyed: list[list[str]] = []
    last: dict[str, list[str]] = {}  # a replaced benchmark's last new bullet
    for it in old_items:
        k = key(it)
        if k is None:
            continue
        if k in fresh:
            keyed += fresh[k]
            last[k] = fresh.pop(k)[-1]
        if k in last:  # its hand-written paragraphs go under the new bullet
            last[k] += _split_item(it)[1]
        else:
            keyed.append(it)
    keyed += [it for items in fresh.values() for it in items]  # new in this report
    keyed.sort(key=lambda it: int(key(it)))  # type: ignore[arg-type]
    plain = [it for it in old_items if key(it) is None]
    return head + [ln for it in plain + keyed for ln in it] + tail


def _merge_machine(old: list[str], chosen: set[str], note: str) -> list[str]:
    """The old machine lines, with ``note`` (when and how ``chosen`` were re-run) after them;
    an earlier note loses the benchmarks re-run now (and goes when none is left)."""
    head, items, tail = _items(old)
    kept = []
    for it in items:
        m = _MERGE_NOTE.match(it[0])
        if m:
            left = [k for k in re.findall(r"\d+", m[1]) if k not in chosen]
            if not left:
                continue
            it = [_MERGE_NOTE.sub(f"- {_benchmarks(left)} re-run alone on ", it[0]), *it[1:]]
        kept.append(it)
    kept.append([note])
    return head + [ln for it in kept for ln in it] + tail


def _benchmarks(keys: list[str]) -> str:
    return f"Benchmark{'s' if len(keys) > 1 else ''} {', '.join(keys)}"


def merge_report(old: str, new: str, chosen: list[str], note: str) -> str:
    """``old`` (a whole RESULTS.md) with the table rows, method notes and details of the
    ``chosen`` benchmarks taken from ``new`` (a report of those only), ``note`` added to the
    machine section, and the "Running it" section of ``new``. Everything else stays as it was.

    :raises ValueError: ``old`` is not a report this script wrote.
    """
    keys = set(chosen)
    old_parts = {(p[0] if p and p[0].startswith("## ") else ""): p for p in _sections(old)}
    new_parts = {(p[0] if p and p[0].startswith("## ") else ""): p for p in _sections(new)}
    for name in ("", "## Machine", "## How it is measured", "## Details"):
        if name not in old_parts:
            raise ValueError(f"no {name or 'table'} section")
    out = []
    for name, part in old_parts.items():
        if name == "":
            part = _merge_table(part, new_parts[""], keys)
        elif name == "## Machine":
            part = _merge_machine(part, keys, note)
        elif name in ("## How it is measured", "## Details"):
            part = _merge_items(part, new_parts.get(name, []), keys)
        elif name in new_parts:
            part = new_parts[name]
        if out and out[-1].strip():  # a section taken from ``new`` may have ended its report
            out.append("")
        out += part
    return "\n".join(out) + "\n"


def merge_note(chosen: list[str], argv: list[str], started: dt.datetime, wall: float) -> str:
    return (
        f"- {_benchmarks(chosen)} re-run alone on {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}"
        f" (`bench/run.py {' '.join(argv)}`, {wall / 60:.1f} min; {_mlws_commit()}; load average"
        f" at start {LOAD_AT_START}, at end {_load()}): {'their' if len(chosen) > 1 else 'its'}"
        " rows, method notes and details replace those of the run above; the rest is from that run"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", help=f"comma-separated benchmark numbers (1-{max(BENCHMARKS, key=int)})"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: update just those benchmarks' rows, method notes and details in the"
        " existing output file (and say when they were re-run) instead of rewriting it",
    )
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/ afterwards")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow peer")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [c for c in chosen if c not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )

    started = dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    mlflow_ver = None if args.no_mlflow else ensure_mlflow_venv()
    work = WORK / started.strftime("%Y%m%d-%H%M%S")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    runner = Runner(work, with_mlflow=not args.no_mlflow)
    rows: list[Row] = []
    ctx: dict[str, Any] = {}
    try:
        for key in chosen:
            title, fn = BENCHMARKS[key]
            say(f"\n== {key}. {title}")
            rows += fn(runner, ctx)
    finally:
        if args.keep:
            say(f"\nKept the work folder {work}")
        else:
            _remove(work)
    wall = time.perf_counter() - t0
    text = render_report(rows, ctx, mlflow_ver, started, wall)
    partial = set(chosen) != set(BENCHMARKS)
    if args.merge and partial and args.output.exists():
        argv_used = sys.argv[1:] if argv is None else argv
        try:
            text = merge_report(
                args.output.read_text(), text, chosen, merge_note(chosen, argv_used, started, wall)
            )
            say(f"\nMerged benchmark(s) {', '.join(chosen)} into {args.output}")
        except ValueError as e:
            say(f"\n{args.output} is not a report to merge into ({e}): writing it anew")
        skipped = [rw["id"] for rw in rows if str(rw["peer"]).startswith("error: skipped")]
        if skipped:
            say(f"Note: rows {', '.join(skipped)} now show no MLflow figure (--no-mlflow)")
    args.output.write_text(text)
    say(f"\nWrote {args.output} ({wall / 60:.1f} min)\n")
    width = max(len(r["id"]) for r in rows) if rows else 2
    for rw in rows:
        say(
            f"  {rw['id']:<{width}}  {verdict(rw):<10}  mlws {mlws_cell(rw):>14}  MLflow {fmt(rw['peer'], rw['unit']):>14}  {rw['target']}"
        )
    return 0


def _remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    try:
        WORK.rmdir()  # only if empty: another run may be using it
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
