"""The mlws side of the benchmarks. Run by ``bench/run.py`` with the project's interpreter:

    python bench/mlws_cases.py CASE WORKDIR [JSON PARAMS]

Each case prints progress lines and ends with one ``@@RESULT {json}`` line that ``run.py`` reads.
Everything a case writes stays under WORKDIR; ``run.py`` sets HOME (and so ``~/.cache/mlws``) to
a folder under ``bench/.work`` too.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

# The mlws of the checkout this file is in (a worktree's, not whichever one is installed); run.py
# also sets PYTHONPATH to it, for the processes a case starts.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    aggregate,
    disk_usage,
    emit,
    first_metric_times,
    make_dataset,
    median_ms,
    mlflow_make_runs,
    mlflow_rest_case,
    mlflow_time_logging,
    mlflow_time_searches,
    progress,
    ready_then_wait,
    sequential_latency,
    workers,
)

N_LOG = 100_000
METRIC_NAMES = [f"m{i}" for i in range(10)]

LOG_SCRIPT = textwrap.dedent(
    """
    import json, os, time
    from mlws import Run

    run = Run.get_context()
    names = [f"m{i}" for i in range(10)]
    n = NUMBER
    t0 = time.perf_counter()
    for i in range(n):
        run.log(names[i % 10], i * 0.5)
    t1 = time.perf_counter()
    run.flush()
    t2 = time.perf_counter()
    result = {"n": n, "log_s": t1 - t0, "flush_s": t2 - t1, "total_s": t2 - t0}
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/bench.json", "w") as f:
        json.dump(result, f)
    print(json.dumps(result))
    """
).replace("NUMBER", str(N_LOG))


def _ws(path: Path) -> Any:
    from mlws import Workspace

    return Workspace.create(path, exist_ok=True)


# -- 1. run.log inside a submitted script ------------------------------------------------------
def case_log(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    from mlws import Experiment, ScriptRunConfig

    ws = _ws(work / "ws-log")
    src = work / "src-log"
    src.mkdir(parents=True, exist_ok=True)
    (src / "log.py").write_text(LOG_SCRIPT)
    exp = Experiment(ws, "bench-log")
    progress(f"submitting a script that logs {N_LOG:,} scalars (10 names x {N_LOG // 10:,} steps)")
    t0 = time.perf_counter()
    run = exp.submit(ScriptRunConfig(source_directory=str(src), script="log.py"))
    details = run.wait_for_completion(raise_on_error=False)
    wall = time.perf_counter() - t0
    if details["status"] != "Completed":
        raise RuntimeError(f"log script ended {details['status']}: {details.get('error')}")
    out = work / "log-bench.json"
    run.download_file("outputs/bench.json", out)
    inside = json.loads(out.read_text())
    metrics = run.get_metrics()
    stored = sum(len(v) if isinstance(v, list) else 1 for v in metrics.values())
    if stored != N_LOG:
        raise RuntimeError(f"expected {N_LOG} stored values, found {stored}")
    rate = inside["n"] / inside["total_s"]
    progress(
        f"log loop {inside['log_s'] * 1e3:.0f} ms + flush {inside['flush_s'] * 1e3:.0f} ms -> "
        f"{rate:,.0f} metrics/s; {stored:,} values stored; submit->Completed {wall:.2f} s"
    )
    ws.close()
    return {
        "rate": rate,
        "log_s": inside["log_s"],
        "flush_s": inside["flush_s"],
        "log_only_rate": inside["n"] / inside["log_s"],
        "stored": stored,
        "wall_s": wall,
    }


# -- 2. 1,000 runs, each 5 properties, 3 metrics, 2 tags -------------------------------------------
def case_runs(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    from mlws import Experiment

    n = int(params.get("n", 1000))
    ws = _ws(work / "ws-runs")
    exp = Experiment(ws, "bench-runs")
    rnd = random.Random(42)
    progress(f"creating {n:,} interactive runs (5 properties, 3 metrics, 2 tags each)")
    t0 = time.perf_counter()
    for i in range(n):
        run = exp.start_logging()
        run.add_properties({f"p{j}": f"value{j}" for j in range(5)})
        run.log("acc", rnd.random())
        run.log("loss", rnd.random())
        run.log("f1", rnd.random())
        run.set_tags({"k": "v" if i % 10 == 0 else "w", "team": f"t{i % 7}"})
        run.complete()
    elapsed = time.perf_counter() - t0
    count = ws.catalog.scalar("SELECT count(*) FROM runs WHERE experiment = ?", (exp.name,))
    done = ws.catalog.scalar(
        "SELECT count(*) FROM runs WHERE experiment = ? AND status = 'Completed'", (exp.name,)
    )
    pk, fk = run_keys(ws)
    values = ws.catalog.scalar(
        f"SELECT count(*) FROM metrics m JOIN runs r ON r.{pk} = m.{fk} WHERE r.experiment = ?",
        (exp.name,),
    )
    if count != n or done != n or values != 3 * n:
        raise RuntimeError(
            f"expected {n} completed runs and {3 * n} metric values, got {count}/{done}/{values}"
        )
    progress(f"{n:,} runs in {elapsed:.3f} s ({n / elapsed:,.0f} runs/s)")
    ws.close()
    return {"seconds": elapsed, "n": n}


# -- 3. filter by a tag + sort by a metric -------------------------------------------------------
def _time_query(ws: Any, reps: int, **kwargs: Any) -> tuple[list[float], list[Any]]:
    from mlws.experiments import query_runs

    times, rows = [], []
    for _ in range(reps):
        # The previous call's rows are freed before the clock starts: assigned over, they were
        # freed inside this call's timing (50,000 rows: ~20 ms that no single query costs).
        rows = []
        t0 = time.perf_counter()
        rows = query_runs(ws, **kwargs)
        times.append(time.perf_counter() - t0)
    return times, rows


def run_keys(ws: Any) -> tuple[str, str]:
    """``(column of runs, column of the child tables)`` that link a run to its tags, metrics...:
    ``("seq", "run_seq")`` in the integer-keyed schema, ``("id", "run_id")`` in the first one."""
    cols = {r[1] for r in ws.catalog.query("PRAGMA table_info(run_tags)")}
    return ("seq", "run_seq") if "run_seq" in cols else ("id", "run_id")


def _check_sorted(ws: Any, rows: list[Any], experiment: str, metric: str) -> None:
    pk, fk = run_keys(ws)
    values = dict(
        ws.catalog.query(
            f"SELECT r.id, ms.last_value FROM runs r JOIN metric_summary ms ON ms.{fk} = r.{pk}"
            " AND ms.name = ? WHERE r.experiment = ?",
            (metric, experiment),
        )
    )
    seq = [values[r["id"]] for r in rows]
    if any(a < b for a, b in zip(seq, seq[1:], strict=False)):
        raise RuntimeError("query_runs did not return runs sorted by the metric, descending")


def case_query_1k(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Over the 1,000 runs made through the API by ``case_runs``."""
    from mlws import Workspace

    ws = Workspace(work / "ws-runs")
    kwargs = {"experiment": "bench-runs", "tags": {"k": "v"}, "sort_by": "metric:acc"}
    times, rows = _time_query(ws, 21, **kwargs)
    if len(rows) != 100:
        raise RuntimeError(f"expected 100 matching runs, got {len(rows)}")
    _check_sorted(ws, rows, "bench-runs", "acc")
    progress(
        f"1k runs, tag k=v (10%): {len(rows)} rows, median {median_ms(times[1:]):.2f} ms (first {times[0] * 1e3:.2f} ms)"
    )
    ws.close()
    return {"ms": median_ms(times[1:]), "first_ms": times[0] * 1e3, "rows": len(rows)}


def populate_direct(ws: Any, experiment: str, n: int, seed: int = 7) -> float:
    """Insert ``n`` completed runs straight into the catalog tables (what ``case_runs`` makes
    through the API: 5 properties, 3 metrics, 2 tags each, plus a 50% tag ``half=yes``)."""
    from mlws import Experiment

    Experiment(ws, experiment)  # the experiments row the runs refer to
    pk, fk = run_keys(ws)
    first_seq = (ws.catalog.scalar("SELECT max(rowid) FROM runs") or 0) + 1
    rnd = random.Random(seed)
    host = socket.gethostname()
    user = os.environ.get("USER") or "bench"
    base = time.time() - n
    t0 = time.perf_counter()
    runs, tags, props, summary, metrics = [], [], [], [], []
    for i in range(n):
        created = base + i
        rid = f"{experiment}_{int(created)}_{rnd.getrandbits(32):08x}"
        key: Any = first_seq + i if pk == "seq" else rid
        runs.append(
            (
                key,
                rid,
                experiment,
                rid,
                i + 1,
                "interactive",
                "Completed",
                created,
                created,
                created + 0.5,
                user,
                host,
                host,
            )
        )
        tags.append((key, "k", "v" if i % 10 == 0 else "w"))
        tags.append((key, "team", f"t{i % 7}"))
        tags.append((key, "half", "yes" if i % 2 == 0 else "no"))
        props.extend((key, f"p{j}", f"value{j}") for j in range(5))
        for name in ("acc", "loss", "f1"):
            v = rnd.random()
            summary.append((key, name, "scalar", v, 1))
            metrics.append((key, name, 0, "scalar", v, None, created))
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT INTO runs (rowid, id, experiment, root_id, number, type, status, created, start_time,"
            " end_time, submitter_user, submitter_host, host) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(first_seq + i, *r[1:]) for i, r in enumerate(runs)],
        )
        conn.executemany(f"INSERT INTO run_tags ({fk}, key, value) VALUES (?,?,?)", tags)
        conn.executemany(f"INSERT INTO run_properties ({fk}, key, value) VALUES (?,?,?)", props)
        conn.executemany(
            f"INSERT INTO metric_summary ({fk}, name, kind, last_value, count) VALUES (?,?,?,?,?)",
            summary,
        )
        conn.executemany(
            f"INSERT INTO metrics ({fk}, name, step, kind, value, data, time) VALUES (?,?,?,?,?,?,?)",
            metrics,
        )
    return time.perf_counter() - t0


def case_query_100k(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    from mlws import Workspace

    n = int(params.get("n", 100_000))
    path = work / "ws-query"
    ws = _ws(path)
    progress(f"populating {n:,} runs by direct SQL inserts into the catalog")
    fill = populate_direct(ws, "bench-query", n)
    ws.close()
    progress(f"populated in {fill:.1f} s; reopening the workspace")
    ws = Workspace(path)  # a fresh connection, as a new CLI/UI process would have
    out: dict[str, Any] = {"populate_s": fill, "n": n}
    variants = {
        "tag10": ({"tags": {"k": "v"}}, n // 10),
        "tag50": ({"tags": {"half": "yes"}}, n // 2),
        "tag10_top100": ({"tags": {"k": "v"}, "limit": 100}, 100),
    }
    for key, (extra, expect) in variants.items():
        times, rows = _time_query(ws, 6, experiment="bench-query", sort_by="metric:acc", **extra)
        if len(rows) != expect:
            raise RuntimeError(f"{key}: expected {expect} rows, got {len(rows)}")
        _check_sorted(ws, rows, "bench-query", "acc")
        out[key] = {"ms": median_ms(times[1:]), "first_ms": times[0] * 1e3, "rows": len(rows)}
        progress(
            f"{key}: {len(rows):,} rows, median {median_ms(times[1:]):.1f} ms (first {times[0] * 1e3:.1f} ms)"
        )
    ws.close()
    return out


# -- 4. start-up ---------------------------------------------------------------------------------
STARTUP_CODE = textwrap.dedent(
    """
    import sys, mlws
    ws = mlws.Workspace(sys.argv[1])
    exp = mlws.Experiment(ws, "bench-startup")
    run = exp.start_logging()
    run.log("m", 1)
    run.complete()
    """
)


def _wall(
    argv: list[str], reps: int = 5, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, list[float]]:
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)  # warm-up: pyc, cache
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def case_startup(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    from mlws import Workspace

    path = work / "ws-startup"
    Workspace.create(path, exist_ok=True).close()
    py = sys.executable
    run_s, run_all = _wall([py, "-c", STARTUP_CODE, str(path)], cwd=work)
    stored = Workspace(path)
    pk, fk = run_keys(stored)
    n = stored.catalog.scalar(
        f"SELECT count(*) FROM runs r JOIN metric_summary m ON m.{fk} = r.{pk}"
        " WHERE r.experiment = 'bench-startup' AND r.status = 'Completed'"
    )
    stored.close()
    if n != 6:
        raise RuntimeError(f"expected 6 completed runs with a metric, found {n}")
    progress(
        f"fresh process -> run with one metric: median {run_s * 1e3:.0f} ms {[round(t * 1e3) for t in run_all]}"
    )
    cli = Path(py).parent / "mlws"
    help_s = help_all = None
    help_error = None
    try:
        help_s, help_all = _wall([str(cli), "--help"], cwd=work)
        progress(f"mlws --help: median {help_s * 1e3:.0f} ms")
    except (OSError, subprocess.CalledProcessError) as e:
        err = getattr(e, "stderr", b"") or b""
        help_error = (err.decode(errors="replace").strip().splitlines() or [str(e)])[-1]
        progress(f"mlws --help failed: {help_error}")
    import_s, _ = _wall([py, "-c", "import mlws"], cwd=work)
    bare_s, _ = _wall([py, "-c", "pass"], cwd=work)
    progress(
        f"python -c 'import mlws': {import_s * 1e3:.0f} ms (bare interpreter {bare_s * 1e3:.0f} ms)"
    )
    return {
        "run_s": run_s,
        "run_all": run_all,
        "help_s": help_s,
        "help_error": help_error,
        "import_s": import_s,
        "bare_s": bare_s,
    }


# -- 5. submit -> Completed -----------------------------------------------------------------------
def case_submit(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    from mlws import Experiment, ScriptRunConfig

    ws = _ws(work / "ws-submit")
    src = work / "src-submit"
    src.mkdir(parents=True, exist_ok=True)
    (src / "t.py").write_text("print('hello')\n")
    exp = Experiment(ws, "bench-submit")
    times, submit_only = [], []
    for i in range(6):
        t0 = time.perf_counter()
        run = exp.submit(ScriptRunConfig(source_directory=str(src), script="t.py"))
        t1 = time.perf_counter()
        details = run.wait_for_completion()
        t2 = time.perf_counter()
        if details["status"] != "Completed":
            raise RuntimeError(f"trivial run ended {details['status']}")
        if i:  # the first is a warm-up
            times.append(t2 - t0)
            submit_only.append(t1 - t0)
    progress(
        f"submit -> Completed: median {statistics.median(times) * 1e3:.0f} ms {[round(t * 1e3) for t in times]}"
    )
    ws.close()
    return {
        "s": statistics.median(times),
        "all": times,
        "submit_call_s": statistics.median(submit_only),
    }


# -- 6. snapshots and artifact dedup ----------------------------------------------------------------
def case_snapshot(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The first snapshot of the data set, then three unchanged ones (the median is reported)."""
    from mlws.snapshots import take_snapshot

    data = Path(params["data"])
    ws = _ws(work / "ws-snapshot")
    runs = []
    for label in ("first", "unchanged", "unchanged", "unchanged"):
        t0 = time.perf_counter()
        snap = take_snapshot(ws.blobs, data)
        dt = time.perf_counter() - t0
        runs.append(
            {
                "s": dt,
                "files": snap.files,
                "bytes": snap.bytes,
                "new_files": snap.new_files,
                "new_bytes": snap.new_bytes,
            }
        )
        progress(
            f"snapshot {label}: {dt:.3f} s, {snap.files:,} files, {snap.bytes / 1e6:.0f} MB, new {snap.new_bytes / 1e6:.1f} MB"
        )
    ws.close()
    again = sorted(runs[1:], key=lambda r: r["s"])
    median = dict(again[1])
    median["new_bytes"] = max(r["new_bytes"] for r in again)  # any new byte fails the check
    median["all_s"] = [r["s"] for r in runs[1:]]
    return {"first": runs[0], "unchanged": median}


def case_artifacts(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    from mlws import Experiment

    data = Path(params["data"])
    path = work / "ws-artifacts"
    ws = _ws(path)
    exp = Experiment(ws, "bench-artifacts")
    base = disk_usage(path)
    out: dict[str, Any] = {"empty_bytes": base}
    for i in (1, 2):
        run = exp.start_logging()
        t0 = time.perf_counter()
        run.upload_folder("data", str(data))
        dt = time.perf_counter() - t0
        run.complete()
        ws.catalog.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        du = disk_usage(path)
        out[f"run{i}"] = {"s": dt, "disk_bytes": du}
        progress(f"run {i}: upload_folder {dt:.2f} s, workspace on disk {du / 1e6:.1f} MB")
    ws.close()
    return out


# -- 7. environment cache hit ----------------------------------------------------------------------
def _bench_env() -> Any:
    from mlws import CondaDependencies, Environment

    env = Environment("bench-env")
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["six"])
    return env


def case_env(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Build a managed environment once (not timed against the target), then resolve it again:
    a cache hit must return the same interpreter without building."""
    from mlws import Environment
    from mlws.environments import envs_dir, resolve

    reps = int(params.get("reps", 20))
    ws = _ws(work / "ws-env")
    env = _bench_env()
    target = envs_dir() / env.spec_hash()
    if target.exists():
        raise RuntimeError(f"{target} exists before the first build: the cache is not fresh")
    progress(f"building the managed environment (six + runtime packages) into {target}")
    t0 = time.perf_counter()
    python = resolve(env)
    build_s = time.perf_counter() - t0
    marker = target / ".mlws-complete"
    if Path(python) != target / "bin" / "python" or not marker.exists():
        raise RuntimeError(f"resolve returned {python}, not a completed build in {target}")
    subprocess.run([python, "-c", "import six, psutil, cryptography"], check=True)
    progress(f"built in {build_s:.2f} s; `import six` works in {python}")
    built = (marker.stat().st_mtime_ns, target.stat().st_ino, sorted(os.listdir(envs_dir())))

    def unchanged() -> bool:
        now = (marker.stat().st_mtime_ns, target.stat().st_ino, sorted(os.listdir(envs_dir())))
        return now == built

    times = []
    for _ in range(reps + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        again = resolve(env)
        times.append(time.perf_counter() - t0)
        if again != python:
            raise RuntimeError(f"resolve returned {again} on a cache hit, not {python}")
    if max(times) > 1.0 or not unchanged():
        raise RuntimeError(f"a cache hit rebuilt the environment (slowest {max(times):.2f} s)")
    hit_ms = median_ms(times[1:])
    progress(f"cache hit: median {hit_ms:.3f} ms (first {times[0] * 1e3:.3f} ms)")

    env.register(ws)
    get_times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        found = resolve(Environment.get(ws, "bench-env"))
        get_times.append(time.perf_counter() - t0)
        if found != python:
            raise RuntimeError(f"Environment.get + resolve returned {found}, not {python}")
    if not unchanged():
        raise RuntimeError("resolving the registered environment rebuilt it")
    get_ms = median_ms(get_times[1:])
    progress(
        f"Environment.get + resolve: median {get_ms:.3f} ms (first {get_times[0] * 1e3:.3f} ms)"
    )
    ws.close()
    return {
        "build_s": build_s,
        "hit_ms": hit_ms,
        "hit_first_ms": times[0] * 1e3,
        "get_ms": get_ms,
        "get_first_ms": get_times[0] * 1e3,
        "reps": reps,
    }


# -- 8. callables fanned out as child runs ---------------------------------------------------------
def fan_square(x: int) -> int:
    """The tiny callable of case 8 (sent to the workers by value: this module is ``__main__``)."""
    from mlws import Run

    Run.get_context().log("x", x)
    return x * x


FAN_WARMUP = textwrap.dedent(
    """
    import sys
    from mlws import Experiment, Run, Workspace, run_parallel

    def f(x):
        Run.get_context().log("x", x)
        return x

    ws = Workspace.create(sys.argv[1], exist_ok=True)
    parent = run_parallel(Experiment(ws, "warm-up"), f, range(4), max_concurrent=int(sys.argv[2]))
    assert parent.get_status() == "Completed", parent.get_status()
    """
)


def case_fan(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One ``run_parallel`` call, timed whole in this fresh process (so it starts its workers),
    after a warm-up in another process that writes the ``.pyc`` of joblib, loky, cloudpickle."""
    from mlws import Experiment, get_result, run_parallel

    n = int(params.get("n", 200))
    workers = int(params.get("workers", 2))
    subprocess.run(
        [sys.executable, "-c", FAN_WARMUP, str(work / "ws-fan-warm-up"), str(workers)],
        check=True,
        cwd=work,
    )
    ws = _ws(work / f"ws-fan-{workers}")
    progress(f"run_parallel: {n} callables as child runs, max_concurrent={workers}")
    t0 = time.perf_counter()
    parent = run_parallel(Experiment(ws, "fan"), fan_square, range(n), max_concurrent=workers)
    elapsed = time.perf_counter() - t0
    status = parent.get_status()
    children = parent.get_children()
    done = sum(1 for c in children if c.get_status() == "Completed")
    if status != "Completed" or len(children) != n or done != n:
        raise RuntimeError(
            f"parent {status}, {len(children)} children of which {done} Completed (expected {n})"
        )
    metrics = parent.get_metrics(recursive=True)
    xs = sorted(m["x"] for rid, m in metrics.items() if rid != parent.id)
    if xs != list(range(n)):
        raise RuntimeError("the children did not log x = 0..n-1, one each")
    by_index = {int(c.get_tags()["mlws.index"]): c for c in children}
    if get_result(by_index[n - 1]) != (n - 1) ** 2:
        raise RuntimeError("the last child's result is not x*x")
    pids = ws.catalog.scalar(
        "SELECT count(DISTINCT pid) FROM runs WHERE parent_id = ?", (parent.id,)
    )
    progress(
        f"{n} child runs in {elapsed:.2f} s ({n / elapsed:,.1f} runs/s) on {pids} worker processes"
    )
    ws.close()
    return {"seconds": elapsed, "n": n, "workers": workers, "rate": n / elapsed, "pids": pids}


# -- 9. submit -> Completed per compute target ---------------------------------------------------
TESTS = Path(__file__).resolve().parent.parent / "tests"
COMPUTE_MARK = "mlws-bench-9: hello"


def _sshd_module() -> Any:
    """``tests/sshd.py`` (the test suite's throwaway OpenSSH server), loaded by path: it is a
    pytest plugin, but :class:`SshServer` and its helpers work outside pytest."""
    import importlib.util

    name = "mlws_tests_sshd"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "sshd.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses looks the module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def start_sshd(folder: Path) -> Any:
    """One running ``SshServer`` on a free port of 127.0.0.1, as ``tests/sshd.py``'s fixture
    makes it (throwaway host and client keys under ``folder``); stop it with ``kill_all()``."""
    import pwd

    sshd = _sshd_module()
    missing = sshd._missing_tools()
    if missing:
        raise RuntimeError(
            f"sshd not installed (missing {', '.join(missing)}): make install puts"
            " openssh-server and rsync there"
        )
    folder.mkdir(parents=True, exist_ok=True)
    client = folder / "client"
    sshd.keygen(client)
    sshd.keygen(folder / "host")
    authorized = folder / "authorized_keys"
    authorized.write_bytes((folder / "client.pub").read_bytes())
    authorized.chmod(0o600)
    username = pwd.getpwuid(os.getuid()).pw_name
    for attempt in range(3):  # a free port can be taken before sshd binds it
        port = sshd.free_ports(1)[0]
        server = sshd.SshServer("127.0.0.1", port, username, str(client), folder)
        try:
            server.start()
            return server
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _submit_wait(exp: Any, src: Path, target: str) -> tuple[float, Any]:
    """Submit the trivial script to ``target`` and wait: ``(seconds, run)``, checked Completed
    with the script's line in ``logs/driver.log`` (checked after the clock stops)."""
    from mlws import ScriptRunConfig

    t0 = time.perf_counter()
    run = exp.submit(
        ScriptRunConfig(source_directory=str(src), script="t.py", compute_target=target)
    )
    details = run.wait_for_completion(raise_on_error=False, timeout=300)
    elapsed = time.perf_counter() - t0
    if details["status"] != "Completed":
        raise RuntimeError(
            f"run {run.id} on {target!r} ended {details['status']}: {details.get('error')}"
        )
    logs = run.get_details_with_logs()["logFiles"]
    if COMPUTE_MARK not in (logs.get("logs/driver.log") or ""):
        raise RuntimeError(
            f"run {run.id} on {target!r}: {COMPUTE_MARK!r} is not in logs/driver.log"
            f" (log files: {sorted(logs)})"
        )
    return elapsed, run


def _stop_sshd(server: Any) -> None:
    server.kill_all()  # SIGKILL to the listener's pid and to its connections' processes
    progress(f"sshd (pid {server.proc.pid}) stopped")


def _delete_target(ws: Any, name: str) -> None:
    from mlws.compute import ComputeTarget

    ComputeTarget(ws, name).delete()  # for ssh: closes the ControlMaster connection


def _stop_cluster(ws: Any, name: str) -> None:
    from mlws.compute import ComputeTarget

    stopped = ComputeTarget(ws, name).stop()
    progress(f"dask cluster of {name!r} stopped" if stopped else f"no dask cluster of {name!r} ran")


def case_compute(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The trivial script of case 5 on ``local``, on an ``ssh`` target (a loopback sshd started
    here) and on a ``dask`` target (a local cluster of one worker), in this one process: per
    target one cold run, then ``reps`` timed ones."""
    from mlws import Experiment
    from mlws.compute import AmlCompute, ComputeTarget, RemoteCompute

    reps = int(params.get("reps", 5))
    # The ssh target puts its ControlMaster socket under TMPDIR (``<tmp>/mlws-ssh-<uid>/cm-<40
    # hex>``, plus 17 characters while ssh creates it), and a Unix socket path has at most 107
    # bytes: bench/.work/<stamp>/tmp is too long for it. So this case's TMPDIR (inherited by the
    # supervisors, which run ssh) is a private folder in /tmp, removed at the end.
    short_tmp = tempfile.mkdtemp(prefix="mlws-b9-", dir="/tmp")
    os.environ["TMPDIR"] = short_tmp
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    ws = _ws(work / "ws-compute")
    src = work / "src-compute"
    src.mkdir(parents=True, exist_ok=True)
    (src / "t.py").write_text(f"print({COMPUTE_MARK!r})\n")
    exp = Experiment(ws, "bench-compute")
    out: dict[str, Any] = {"reps": reps}
    # Undone in reverse order, each even when an earlier one fails: the cluster, the ssh
    # target's connection, the sshd (by its pid), the workspace, the short TMPDIR.
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, short_tmp, ignore_errors=True)
        cleanup.callback(ws.close)
        server = start_sshd(work / "sshd")
        cleanup.callback(_stop_sshd, server)
        progress(f"sshd (pid {server.proc.pid}) listening on 127.0.0.1:{server.port}")
        ComputeTarget.attach(
            ws,
            "lab",
            RemoteCompute.attach_configuration(
                hosts=[f"{server.address}:{server.port}"],
                username=server.username,
                private_key_file=server.private_key_file,
                python_path="/usr/bin/python3",
                work_dir=str(work / "remote"),
                ssh_options=[
                    "StrictHostKeyChecking=no",
                    f"UserKnownHostsFile={work / 'sshd' / 'known_hosts'}",
                ],
            ),
        )
        cleanup.callback(_delete_target, ws, "lab")
        ComputeTarget.create(
            ws, "cpu", AmlCompute.provisioning_configuration(min_nodes=1, max_nodes=1)
        )
        cleanup.callback(_stop_cluster, ws, "cpu")
        for key, target in (("local", "local"), ("ssh", "lab"), ("dask", "cpu")):
            cold, run = _submit_wait(exp, src, target)
            figures: dict[str, Any] = {"cold_ms": cold * 1e3}
            if key == "ssh":
                remote_log = run.get_details_with_logs()["logFiles"].get("logs/remote.log", "")
                figures["shipped_mlws"] = "shipping mlws" in remote_log
                figures["shipped_deps"] = "dependencies too" in remote_log
            times = [_submit_wait(exp, src, target)[0] for _ in range(reps)]
            figures["ms"] = median_ms(times)
            figures["all_ms"] = [t * 1e3 for t in times]
            out[key] = figures
            progress(
                f"{key}: cold {cold * 1e3:.0f} ms, then median {figures['ms']:.0f} ms"
                f" {[round(t * 1e3) for t in times]}"
            )
    for key in ("ssh", "dask"):
        out[key]["ratio"] = out[key]["ms"] / out["local"]["ms"]
    return out


# -- 10. serving a model -------------------------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TRIVIAL_SCORE = textwrap.dedent(
    """
    def init():
        pass


    def run(raw_data):
        return [0]  # no parsing, no model: what is left is the server's own cost
    """
)


def case_serving_model(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Train the model both servers serve, once: LogisticRegression on iris, fixed seed."""
    import joblib
    import sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, random_state=0).fit(X, y)
    folder = Path(params["model_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.pkl")
    accuracy = float(model.score(X, y))
    progress(f"iris LogisticRegression: training accuracy {accuracy:.3f}, saved to {folder}")
    return {"accuracy": accuracy, "sklearn": sklearn.__version__}


def _service_pids(ws: Any, name: str) -> tuple[int, list[int]]:
    """(the supervisor's pid, its replicas' pids): the processes whose CPU time the load costs
    (the supervisor writes the request log)."""
    from common import children

    pid = ws.catalog.scalar("SELECT supervisor_pid FROM services WHERE name = ?", (name,))
    return int(pid), children(int(pid))


def _deploy_timed(ws: Any, model: Any, src: Path, entry: str, replicas: int) -> dict[str, Any]:
    """Deploy ``entry`` as service "bench-svc" on a free port; time the ``Model.deploy`` call,
    the first 200 on /score and ``wait_for_deployment`` (every replica up), all from the call."""
    from common import IRIS_ROW, free_port, wait_first_ok

    from mlws import Model
    from mlws.serving import InferenceConfig, LocalWebservice

    port = free_port()
    body = json.dumps({"data": [IRIS_ROW]}).encode()
    t0 = time.perf_counter()
    service = Model.deploy(
        ws,
        "bench-svc",
        [model],
        InferenceConfig(entry_script=entry, source_directory=str(src)),
        LocalWebservice.deploy_configuration(port=port, replicas=replicas),
    )
    t_call = time.perf_counter()
    try:
        # The key exists once deploy() returns and the port is known: the same poll as MLflow's.
        key = service.get_keys()[0]
        url = f"http://127.0.0.1:{port}/score"
        headers = {"Authorization": f"Bearer {key}"}
        t_listen, t_first = wait_first_ok(url, body, headers, b"[0]", timeout_s=60)
        service.wait_for_deployment(timeout_sec=60)
        t_all = time.perf_counter()
    except BaseException:
        service.delete()
        raise
    return {
        "service": service,
        "url": url,
        "headers": headers,
        "body": body,
        "call_s": t_call - t0,
        "listen_s": t_listen - t0,
        "first_s": t_first - t0,
        "all_s": t_all - t0,
    }


def _load(
    python: str, d: dict[str, Any], server_pids: list[int], generator: str = "wrk", **kw: Any
) -> dict[str, Any]:
    from common import run_load

    r = run_load(
        generator, python, d["url"], d["body"], d["headers"], b"[0]", server_pids=server_pids, **kw
    )
    progress(
        f"  {r['generator']}, {r['clients']} clients:"
        f" {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms; CPU per request: server {r['server_cpu_us_per_req']:.0f} us,"
        f" clients {r['client_cpu_us_per_req']:.0f} us"
    )
    return r


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several load rounds: the median of each, with every round kept."""
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req", "client_cpu_us_per_req")
    out = {k: statistics.median(r[k] for r in rounds) for k in keys}
    out["rounds"] = rounds
    return out


def case_serving(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Deploy the iris model as a local service and load it with wrk (and once with
    ``bench/loadgen.py``)."""
    from common import IRIS_ROW, memory, time_calls

    from mlws import Model

    python = params["loadgen_python"]
    rounds = int(params.get("rounds", 3))
    deploys = int(params.get("deploys", 3))
    load = {
        "clients": int(params.get("clients", 4)),
        "warmup": float(params.get("warmup", 1.0)),
        "duration": float(params.get("duration", 5.0)),
    }
    model_dir = Path(params["model_dir"])
    ws = _ws(work / "ws-serving")
    model = Model.register(
        ws,
        model_path=str(model_dir / "model.pkl"),
        model_name="iris",
        model_framework="ScikitLearn",
    )
    src = work / "src-serving"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "deploy" / "score.py", src / "score.py")  # the example's entry script
    (src / "trivial.py").write_text(TRIVIAL_SCORE)
    out: dict[str, Any] = {"load": load, "rounds_n": rounds}

    # What run() costs without any server: the entry script called in this process.
    os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
    sys.path.insert(0, str(src))
    import score  # the copy of examples/deploy/score.py

    score.init()
    payload = json.dumps({"data": [IRIS_ROW]})
    row = [IRIS_ROW]
    out["run_us"] = time_calls(lambda: score.run(payload))
    out["predict_us"] = time_calls(lambda: score.model.predict(row))
    progress(
        f"in-process: score.run {out['run_us']:.0f} us"
        f" (of which model.predict {out['predict_us']:.0f} us)"
    )
    # What a replica must do whatever the server: a fresh interpreter that imports the entry
    # script and calls init() (which unpickles the model, importing scikit-learn).
    init_env = {**os.environ, "AZUREML_MODEL_DIR": str(model_dir)}
    out["init_s"], _ = _wall(
        [sys.executable, "-c", "import score; score.init()"], reps=3, cwd=src, env=init_env
    )
    out["bare_s"], _ = _wall([sys.executable, "-c", "pass"], reps=3, cwd=src)
    progress(
        f"fresh interpreter + import score + init(): {out['init_s'] * 1e3:.0f} ms"
        f" (bare interpreter {out['bare_s'] * 1e3:.0f} ms)"
    )

    # Deploy -> first 200, replicas=2: one cold deploy (writes the .pyc), then `deploys` timed.
    timings = []
    main = None  # the service up now, deleted in the finally whatever happens
    try:
        for i in range(deploys + 1):
            if main is not None:
                main["service"].delete()
            main = _deploy_timed(ws, model, src, "score.py", replicas=2)
            timings.append({k: main[k] for k in ("call_s", "listen_s", "first_s", "all_s")})
            progress(
                f"deploy {'(cold)' if i == 0 else i}: Model.deploy {main['call_s'] * 1e3:.0f} ms,"
                f" port listening {main['listen_s'] * 1e3:.0f} ms,"
                f" first 200 {main['first_s'] * 1e3:.0f} ms,"
                f" every replica up {main['all_s'] * 1e3:.0f} ms"
            )
        assert main is not None
        out["deploy_cold"] = timings[0]
        out["deploy"] = timings[1:]
        out["deploy_first_s"] = statistics.median(t["first_s"] for t in timings[1:])
        out["deploy_all_s"] = statistics.median(t["all_s"] for t in timings[1:])
        out["deploy_call_s"] = statistics.median(t["call_s"] for t in timings[1:])
        out["deploy_listen_s"] = statistics.median(t["listen_s"] for t in timings[1:])

        # Load: 2 replicas, `rounds` times; then once with thread clients for comparison.
        sup, reps = _service_pids(ws, "bench-svc")
        if len(reps) != 2:
            raise RuntimeError(f"expected 2 replica processes under pid {sup}, found {reps}")
        progress(f"2 replicas (pids {reps}), {rounds} rounds of {load['duration']:.0f} s")
        since = time.time()
        tested = [_load(python, main, [sup, *reps], **load) for _ in range(rounds)]
        for r in tested:
            r["supervisor_cpu_us_per_req"] = r["server_cpu_us_per_req_by_pid"][str(sup)]
        out["r2"] = _median_round(tested)
        time.sleep(1.5)  # the replicas and the supervisor write telemetry in batches
        tel = main["service"].get_telemetry(since=since)
        out["r2"]["server_latency_ms"] = tel.get("latencyMs")
        out["r2_python"] = _load(python, main, [sup, *reps], generator="python", **load)
        out["r2_sequential"] = sequential_latency(main["url"], main["headers"], main["body"])
        out["memory"] = {"supervisor": memory(sup), "replicas": [memory(p) for p in reps]}
        out["rss_per_replica"] = statistics.mean(m["rss"] for m in out["memory"]["replicas"])
        out["pss_per_replica"] = statistics.mean(m["pss"] for m in out["memory"]["replicas"])
        progress(
            "memory: replicas RSS "
            + ", ".join(f"{m['rss'] / 1e6:.0f} MB" for m in out["memory"]["replicas"])
            + f", supervisor {out['memory']['supervisor']['rss'] / 1e6:.0f} MB"
        )
        main["service"].delete()
        main = None

        # 1 replica; then run() doing nothing on 2 replicas (the server's own cost).
        for key, entry, replicas in (("r1", "score.py", 1), ("trivial", "trivial.py", 2)):
            main = _deploy_timed(ws, model, src, entry, replicas=replicas)
            sup, reps = _service_pids(ws, "bench-svc")
            progress(f"{key}: {replicas} replica(s), {entry}")
            out[key] = _load(python, main, [sup, *reps], **load)
            out[key]["deploy_first_s"] = main["first_s"]
            by_pid = out[key]["server_cpu_us_per_req_by_pid"]
            out[key]["supervisor_cpu_us_per_req"] = by_pid[str(sup)]
            main["service"].delete()
            main = None
    finally:
        if main is not None:
            main["service"].delete()
        ws.close()
    return out


# -- 11. file dataset fingerprint --------------------------------------------------------------------
def case_dataset(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Register a 10,000-file / 1 GB local folder as a file dataset (first fingerprint: every file
    hashed), re-check it unchanged three times (the stat cache: no file read), then change one
    byte of one file (same size, new mtime) and check that exactly that file is reported."""
    from mlws import Dataset

    files, size = int(params.get("files", 10_000)), int(params.get("size", 100_000))
    data = work / "data-1g"
    if data.exists():
        shutil.rmtree(data)
    ws = _ws(work / "ws-dataset")
    out: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        n, nbytes = make_dataset(data, files=files, size=size)
        out["make_s"] = time.perf_counter() - t0
        out["files"], out["bytes"] = n, nbytes
        progress(f"made {n:,} files / {nbytes / 1e9:.2f} GB in {out['make_s']:.1f} s")

        ds = Dataset.File.from_files(str(data))
        t0 = time.perf_counter()
        reg = ds.register(ws, "big")
        dt = time.perf_counter() - t0
        listed = reg.to_path()  # paths inside the dataset: "/data-1g/d000/f000.bin", ...
        if len(listed) != n:
            raise RuntimeError(f"the registered dataset lists {len(listed)} files, not {n}")
        out["first"] = {"s": dt, "mb_s": nbytes / 1e6 / dt}
        progress(f"register (first fingerprint): {dt:.2f} s, {nbytes / 1e6 / dt:,.0f} MB/s")

        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            changed = reg.has_changed()
            times.append(time.perf_counter() - t0)
            if changed is not False:
                raise RuntimeError(f"has_changed() of the untouched dataset returned {changed!r}")
        out["unchanged"] = {"s": statistics.median(times), "all_s": times}
        progress(f"has_changed() unchanged: {', '.join(f'{x:.3f}' for x in times)} s")

        name = "d042/f017.bin"
        target = data / name
        before = target.stat()
        with open(target, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0xFF]))
        after = target.stat()
        if after.st_size != before.st_size:
            raise RuntimeError("the one-byte change altered the file's size")
        if after.st_mtime_ns == before.st_mtime_ns:  # a coarse clock: make the change visible
            os.utime(target, ns=(after.st_atime_ns, before.st_mtime_ns + 1_000_000))
        t0 = time.perf_counter()
        ch = reg.changes()
        dt = time.perf_counter() - t0
        got = ch.as_dict()
        shown = next(p.lstrip("/") for p in listed if p.endswith("/" + name))
        want = {"added": [], "removed": [], "modified": [shown]}
        if got != want:
            raise RuntimeError(f"changes() after changing {shown}: {got}, expected {want}")
        out["one_change"] = {"s": dt, "modified": ch.modified}
        progress(f"changes() after one modified file: {dt:.3f} s -> {ch.modified}")
    finally:
        ws.close()
        shutil.rmtree(data, ignore_errors=True)
    return out


# -- 12. tabular dataset vs pandas.read_csv --------------------------------------------------------
def make_csv(path: Path, rows: int) -> None:
    """``rows`` rows of 8 columns: 3 ints, 3 floats, a short string, a bool (seeded)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(12)
    pd.DataFrame(
        {
            "id": np.arange(rows),
            "count": rng.integers(-1000, 1000, rows),
            "bucket": rng.integers(0, 100, rows),
            "x": rng.random(rows),
            "y": rng.normal(size=rows),
            "price": np.round(rng.random(rows) * 1000, 2),
            "label": rng.choice(["red", "green", "blue", "cyan"], rows),
            "flag": rng.random(rows) < 0.5,
        }
    ).to_csv(path, index=False)


def case_tabular(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Register a 1,000,000-row CSV as a tabular dataset, then read it with
    ``to_pandas_dataframe()`` and with ``pandas.read_csv``, alternately, in this one process; the
    two frames must be equal."""
    import pandas as pd

    from mlws import Dataset

    rows = int(params.get("rows", 1_000_000))
    csv = work / "big.csv"
    ws = _ws(work / "ws-tabular")
    out: dict[str, Any] = {"rows": rows}
    try:
        t0 = time.perf_counter()
        make_csv(csv, rows)
        out["make_s"], out["bytes"] = time.perf_counter() - t0, csv.stat().st_size
        progress(f"made {rows:,} rows, {out['bytes'] / 1e6:.0f} MB in {out['make_s']:.1f} s")
        t0 = time.perf_counter()
        Dataset.Tabular.from_delimited_files(str(csv)).register(ws, "big")
        out["register_s"] = time.perf_counter() - t0
        ds = Dataset.get_by_name(ws, "big")
        # The first call of each imports and warms up (pyarrow's thread pool): not timed in
        # the medians, reported on its own.
        t0 = time.perf_counter()
        ds.to_pandas_dataframe()
        out["mlws_first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pd.read_csv(csv)
        out["pandas_first_s"] = time.perf_counter() - t0
        mlws_s, pandas_s, mlws_cpu, pandas_cpu = [], [], [], []
        for _ in range(3):  # alternated, so a burst of other load hits both sides alike
            t0, c0 = time.perf_counter(), time.process_time()
            ours = ds.to_pandas_dataframe()
            mlws_s.append(time.perf_counter() - t0)
            mlws_cpu.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            theirs = pd.read_csv(csv)
            pandas_s.append(time.perf_counter() - t0)
            pandas_cpu.append(time.process_time() - c0)
        pd.testing.assert_frame_equal(ours, theirs)  # same columns, dtypes and values
        out["equal"] = True
        out["dtypes"] = {c: str(t) for c, t in ours.dtypes.items()}
        out["mlws"] = {"s": statistics.median(mlws_s), "all_s": mlws_s, "cpu_s": mlws_cpu}
        out["pandas"] = {"s": statistics.median(pandas_s), "all_s": pandas_s, "cpu_s": pandas_cpu}
        # Whether this pandas' read_csv parses in threads of its own (pandas 2's does not).
        readers = sys.modules.get("pandas.io.parsers.readers")
        out["pandas_parallel"] = hasattr(readers, "_read_csv_parallel")
        out["ratio"] = out["pandas"]["s"] / out["mlws"]["s"]
        out["versions"] = {"pandas": pd.__version__, "pyarrow": __import__("pyarrow").__version__}
        progress(
            f"to_pandas_dataframe {', '.join(f'{x:.3f}' for x in mlws_s)} s; pandas.read_csv"
            f" {', '.join(f'{x:.3f}' for x in pandas_s)} s; ratio {out['ratio']:.2f}; equal"
        )
    finally:
        ws.close()
        csv.unlink(missing_ok=True)
    return out


# -- 13. sweep overhead vs Optuna's own loop ---------------------------------------------------------
#: A trial that does nothing but log its metric: a tracked run logs it with run.log; run bare
#: (Optuna's subprocess), it prints it for the objective to read.
SWEEP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    x = float(sys.argv[sys.argv.index("--x") + 1])
    value = -(x - 0.3) ** 2
    if os.environ.get("MLWS_RUN_ID"):
        from mlws import Run
        Run.get_context().log("score", value)
    else:
        print(value)
    """
)


def case_sweep(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """100 trials, 2 at a time: an mlws sweep (each trial a tracked child run) vs Optuna driving
    the same script as subprocesses with ``n_jobs=2``; and the bare script's own time."""
    import optuna

    from mlws import Experiment, ScriptRunConfig
    from mlws.hyperdrive import (
        HyperDriveConfig,
        PrimaryMetricGoal,
        RandomParameterSampling,
        uniform,
    )

    n, conc = int(params.get("trials", 100)), 2
    src = work / "src-sweep"
    src.mkdir(parents=True, exist_ok=True)
    (src / "trial.py").write_text(SWEEP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("MLWS_RUN_ID", "AZUREML_RUN_ID")}

    def bare(x: float) -> float:
        out = subprocess.run(
            [sys.executable, str(src / "trial.py"), "--x", str(x)],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        return float(out.stdout)

    # The script alone, sequentially (python start-up + the script): what no driver can save.
    script_s = []
    for i in range(12):
        t0 = time.perf_counter()
        bare(i / 12)
        script_s.append(time.perf_counter() - t0)
    script = statistics.median(script_s[2:])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    t0 = time.perf_counter()
    study.optimize(lambda t: bare(t.suggest_float("x", 0, 1)), n_trials=n, n_jobs=conc)
    optuna_wall = time.perf_counter() - t0
    progress(f"optuna: {n} trials in {optuna_wall:.2f} s (best {study.best_value:.4f})")

    def config(trials: int) -> HyperDriveConfig:
        return HyperDriveConfig(
            run_config=ScriptRunConfig(str(src), "trial.py"),
            hyperparameter_sampling=RandomParameterSampling({"--x": uniform(0, 1)}, seed=1),
            primary_metric_name="score",
            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
            max_total_runs=trials,
            max_concurrent_runs=conc,
        )

    # A warm-up sweep in another workspace: this checkout's mlws has no compiled modules (the
    # bench gives Python a fresh PYTHONPYCACHEPREFIX), which an installed mlws has; the timed
    # sweep's controller, launcher and workers would otherwise compile theirs (~0.3 s of CPU)
    # on its clock. Its own workspace starts cold all the same (no launcher of its own yet).
    warm = _ws(work / "ws-sweep-warm-up")
    Experiment(warm, "warm-up").submit(config(4)).wait_for_completion(timeout=300)
    warm.close()
    ws = _ws(work / "ws-sweep")
    cfg = config(n)
    t0 = time.perf_counter()
    sweep = Experiment(ws, "bench-sweep").submit(cfg)
    sweep.wait_for_completion(timeout=1800)
    mlws_wall = time.perf_counter() - t0
    children = sweep.get_children()
    done = sum(1 for c in children if c.get_status() == "Completed")
    if sweep.get_status() != "Completed" or done != n:
        raise RuntimeError(f"sweep ended {sweep.get_status()} with {done}/{n} trials completed")
    best = sweep.get_children_sorted_by_primary_metric(top=1)[0]["best_primary_metric"]
    progress(
        f"mlws: {n} trials in {mlws_wall:.2f} s (best {best:.4f}); bare script {script * 1e3:.0f} ms"
    )
    ws.close()
    per = {"mlws": mlws_wall * conc / n, "optuna": optuna_wall * conc / n}
    return {
        "trials": n,
        "concurrency": conc,
        "script_s": script,
        "mlws_wall_s": mlws_wall,
        "optuna_wall_s": optuna_wall,
        "mlws_per_trial_s": per["mlws"],
        "optuna_per_trial_s": per["optuna"],
        "mlws_overhead_s": per["mlws"] - script,
        "optuna_overhead_s": per["optuna"] - script,
        "ratio": per["mlws"] / per["optuna"],
        "optuna": optuna.__version__,
    }


# -- 14. pipelines: a no-op re-run vs `dvc repro`, and a fan-out of 20 steps ------------------------
PIPE_STEP = textwrap.dedent(
    """
    import os, sys
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    n = sum(os.path.getsize(os.path.join(src, f)) for f in sorted(os.listdir(src)))
    with open(os.path.join(out, "n.txt"), "w") as f:
        f.write(str(n + 1))
    """
)


def _linear_pipeline(ws: Any, src: Path, data: Path, length: int) -> Any:
    """``length`` steps in a line: step 0 reads the file dataset ``data``, step i the
    ``PipelineData`` of step i-1 (the same script each, as the DVC stages)."""
    from mlws import Dataset
    from mlws.pipelines import Pipeline, PipelineData, PythonScriptStep

    prev: Any = Dataset.File.from_files(str(data / "*.txt")).as_named_input("raw").as_mount()
    last = None
    for i in range(length):
        out = PipelineData(f"d{i}")
        last = PythonScriptStep(
            "step.py",
            name=f"s{i}",
            arguments=[prev, out],
            outputs=[out],
            source_directory=str(src),
        )
        prev = out
    return Pipeline(ws, [last])


def _dvc_project(folder: Path, data: Path, length: int) -> None:
    """The same ``length`` stages as a ``dvc.yaml`` (no git: ``dvc init --no-scm``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "step.py").write_text(PIPE_STEP)
    shutil.copytree(data, folder / "data")
    lines = ["stages:"]
    for i in range(length):
        src = "data" if i == 0 else f"d{i - 1}"
        lines += [
            f"  s{i}:",
            f"    cmd: {sys.executable} step.py {src} d{i}",
            f"    deps: [step.py, {src}]",
            f"    outs: [d{i}]",
        ]
    (folder / "dvc.yaml").write_text("\n".join(lines) + "\n")


def case_pipeline_noop(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """A 10-step linear pipeline re-submitted unchanged (every step reused): submit ->
    Completed, median of 5 after 2 warm-ups; against ``dvc repro`` of the same 10 stages."""
    from mlws import Experiment

    length, reps = int(params.get("steps", 10)), 7
    src = work / "src-pipe"
    src.mkdir(parents=True, exist_ok=True)
    (src / "step.py").write_text(PIPE_STEP)
    data = work / "data-pipe"
    data.mkdir(exist_ok=True)
    for i in range(5):
        (data / f"{i}.txt").write_text("x" * (i + 1) * 100)
    ws = _ws(work / "ws-pipe")
    exp = Experiment(ws, "bench-pipe")
    t0 = time.perf_counter()
    first = exp.submit(_linear_pipeline(ws, src, data, length))
    first.wait_for_completion(show_output=False)
    first_s = time.perf_counter() - t0
    walls, submits, starts, drives = [], [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        run = exp.submit(_linear_pipeline(ws, src, data, length))
        t1 = time.perf_counter()
        run.wait_for_completion(show_output=False)
        walls.append(time.perf_counter() - t0)
        submits.append(t1 - t0)
        types = {s.type for s in run.get_steps()}
        if types != {"azureml.ReusedStepRun"} or len(run.get_steps()) != length:
            raise RuntimeError(f"expected {length} reused steps, got {types}")
        row = ws.catalog.one(
            "SELECT created, start_time, end_time FROM runs WHERE id = ?", (run.id,)
        )
        starts.append(row["start_time"] - row["created"])
        drives.append(row["end_time"] - row["start_time"])
    ws.close()
    median = statistics.median(walls[2:])
    progress(
        f"mlws: first run {first_s:.2f} s; no-op re-runs {', '.join(f'{w:.3f}' for w in walls)} s"
    )
    dvc = params.get("dvc")
    dvc_s = dvc_first = None
    dvc_walls: list[float] = []
    if dvc:
        proj = work / "dvc-pipe"
        _dvc_project(proj, data, length)
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

        def dvc_run(*args: str) -> float:
            t = time.perf_counter()
            subprocess.run([dvc, *args], cwd=proj, env=env, check=True, capture_output=True)
            return time.perf_counter() - t

        dvc_run("init", "--no-scm", "-q")
        dvc_first = dvc_run("repro")
        dvc_walls = [dvc_run("repro") for _ in range(reps)]
        dvc_s = statistics.median(dvc_walls[2:])
        progress(
            f"dvc: first repro {dvc_first:.2f} s; no-op {', '.join(f'{w:.3f}' for w in dvc_walls)} s"
        )
    return {
        "steps": length,
        "first_s": first_s,
        "noop_s": median,
        "noop_all_s": walls,
        "submit_s": statistics.median(submits[2:]),
        "controller_start_s": statistics.median(starts[2:]),
        "drive_s": statistics.median(drives[2:]),
        "dvc_first_s": dvc_first,
        "dvc_noop_s": dvc_s,
        "dvc_all_s": dvc_walls,
        "ratio": (dvc_s / median) if dvc_s else None,
    }


def case_pipeline_fanout(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """20 independent trivial steps on ``local`` with 2 slots: steps/s, and the slot time per
    step not spent running a step (the controller's and the run machinery's overhead)."""
    from mlws import Experiment
    from mlws.compute.local import configure
    from mlws.pipelines import Pipeline, PythonScriptStep

    n, slots = int(params.get("steps", 20)), 2
    src = work / "src-fan"
    src.mkdir(parents=True, exist_ok=True)
    (src / "noop.py").write_text("print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MLWS_RUN_ID", "AZUREML_RUN_ID")}
    bare = []
    for _ in range(7):
        t = time.perf_counter()
        subprocess.run([sys.executable, str(src / "noop.py")], check=True, env=env,
                       capture_output=True)  # fmt: skip
        bare.append(time.perf_counter() - t)
    bare_s = statistics.median(bare[2:])
    ws = _ws(work / "ws-fan")
    configure(ws, slots)
    exp = Experiment(ws, "bench-fan")

    def pipeline() -> Any:
        steps = [
            PythonScriptStep("noop.py", name=f"n{i}", source_directory=str(src), allow_reuse=False)
            for i in range(n)
        ]
        return Pipeline(ws, steps)

    # A warm-up pipeline (starts the workspace's launcher), then the timed ones.
    exp.submit(pipeline()).wait_for_completion(show_output=False)
    walls, own, overheads = [], [], []
    for _ in range(3):
        t0 = time.perf_counter()
        run = exp.submit(pipeline())
        run.wait_for_completion(show_output=False)
        wall = time.perf_counter() - t0
        steps = run.get_steps()
        if run.get_status() != "Completed" or len(steps) != n:
            raise RuntimeError(f"fan-out ended {run.get_status()} with {len(steps)} steps")
        rows = ws.catalog.query(
            "SELECT start_time, end_time FROM runs WHERE parent_id = ?", (run.id,)
        )
        running = sum(r["end_time"] - r["start_time"] for r in rows)
        walls.append(wall)
        own.append(running / n)
        overheads.append((wall * slots - running) / n)
    ws.close()
    i = walls.index(statistics.median(walls))
    progress(
        f"{n} steps, {slots} slots: {', '.join(f'{w:.2f}' for w in walls)} s; bare script"
        f" {bare_s * 1e3:.0f} ms; a step's own run {own[i] * 1e3:.0f} ms"
    )
    return {
        "steps": n,
        "slots": slots,
        "wall_s": walls[i],
        "steps_per_s": n / walls[i],
        "step_run_s": own[i],
        "overhead_s": overheads[i],
        "per_step_beyond_bare_s": walls[i] * slots / n - bare_s,
        "bare_s": bare_s,
    }


PRS_SCORE = textwrap.dedent(
    """
    def init():
        pass

    def run(mini_batch):
        return (mini_batch["id"].astype(str) + " " + (mini_batch["x"] * 2.5).round(3).astype(str)).tolist()
    """
)


def _prs_score(mini_batch: Any) -> list[str]:
    return (
        mini_batch["id"].astype(str) + " " + (mini_batch["x"] * 2.5).round(3).astype(str)
    ).tolist()


def case_prs_throughput(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """A ParallelRunStep over a 1,000,000-row CSV, 2 workers, mini-batches of 10,000 rows:
    submit -> Completed, against ``joblib.Parallel(n_jobs=2)`` over the same mini-batches of
    the same frame (``pandas.read_csv``, the same scoring function, the lines written in
    order) in the same process."""
    import joblib
    import pandas as pd

    from mlws import Dataset, Experiment
    from mlws.pipelines import ParallelRunConfig, ParallelRunStep, Pipeline, PipelineData

    rows, per = int(params.get("rows", 1_000_000)), 10_000
    csv = work / "prs.csv"
    with open(csv, "w") as f:
        f.write("id,x\n")
        f.writelines(f"{i},{(i * 7919) % 10007 / 7.0:.4f}\n" for i in range(rows))
    src = work / "src-prs"
    src.mkdir(parents=True, exist_ok=True)
    (src / "score.py").write_text(PRS_SCORE)

    def plain() -> float:
        t = time.perf_counter()
        df = pd.read_csv(csv)
        batches = [df.iloc[a : a + per] for a in range(0, len(df), per)]
        out = joblib.Parallel(n_jobs=2)(joblib.delayed(_prs_score)(b) for b in batches)
        with open(work / "plain.txt", "w") as f:
            for lines in out:
                f.write("".join(f"{x}\n" for x in lines))
        return time.perf_counter() - t

    plain()  # warm-up: loky's workers, pandas' imports
    plain_s = statistics.median([plain() for _ in range(3)])
    ws = _ws(work / "ws-prs")
    ds = Dataset.Tabular.from_delimited_files(str(csv))
    exp = Experiment(ws, "bench-prs")
    walls = []
    for _ in range(3):
        cfg = ParallelRunConfig(
            entry_script="score.py",
            source_directory=str(src),
            mini_batch_size=per,
            error_threshold=0,
            process_count_per_node=2,
        )
        step = ParallelRunStep(
            "score", cfg, inputs=[ds.as_named_input("table")], output=PipelineData("scores"),
            allow_reuse=False,
        )  # fmt: skip
        t0 = time.perf_counter()
        run = exp.submit(Pipeline(ws, [step]))
        run.wait_for_completion(show_output=False)
        walls.append(time.perf_counter() - t0)
    (s,) = run.get_steps()
    got = s._read_file_text("outputs/scores/parallel_run_step.txt")
    if got != (work / "plain.txt").read_text():
        raise RuntimeError("ParallelRunStep's output differs from the plain loop's")
    result = s._read_file_text("logs/job_result.txt").splitlines()[0]
    ws.close()
    prs_s = statistics.median(walls)
    progress(
        f"ParallelRunStep {', '.join(f'{w:.2f}' for w in walls)} s ({result}); joblib loop"
        f" {plain_s:.2f} s"
    )
    return {
        "rows": rows,
        "mini_batch": per,
        "prs_s": prs_s,
        "plain_s": plain_s,
        "prs_rows_per_s": rows / prs_s,
        "plain_rows_per_s": rows / plain_s,
        "ratio": plain_s / prs_s,
        "job_result": result,
    }


V1_IMPORT_SCRIPT = textwrap.dedent(
    """\
    import time
    t0 = time.perf_counter()
    import mlws
    t1 = time.perf_counter()
    import azureml.core
    t2 = time.perf_counter()
    run = mlws.Run.get_context()
    run.log("mlws_s", t1 - t0)
    run.log("azureml_s", t2 - t1)
    run.log("layer", "mlws" if "/v1/shim/" in azureml.core.__file__ else azureml.core.__file__)
    """
)


def case_v1_import(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``import azureml.core`` inside a run (the v1 layer found on the run's own path), timed in
    the run's script after ``import mlws``: what the layer adds; median of ``runs`` runs."""
    from mlws import Experiment, ScriptRunConfig

    src = work / "src-v1import"
    src.mkdir(parents=True, exist_ok=True)
    (src / "train.py").write_text(V1_IMPORT_SCRIPT)
    ws = _ws(work / "ws-v1import")
    exp = Experiment(ws, "bench-v1import")
    mlws_s, azureml_s = [], []
    for _ in range(int(params.get("runs", 5))):
        run = exp.submit(ScriptRunConfig(str(src), "train.py"))
        run.wait_for_completion(timeout=120)
        m = run.get_metrics()
        if m.get("layer") != "mlws":
            raise RuntimeError(f"azureml.core came from {m.get('layer')}, not mlws's layer")
        mlws_s.append(m["mlws_s"])
        azureml_s.append(m["azureml_s"])
    ws.close()
    return {
        "mlws_s": statistics.median(mlws_s),
        "azureml_s": statistics.median(azureml_s),
        "all_azureml_s": azureml_s,
        "all_mlws_s": mlws_s,
    }


# -- 17. the workspace server over HTTP (mlws serve) ----------------------------------------------
#: The environment of the server and client processes: this checkout's mlws.
_CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def _start_mlws_server(work: Path) -> tuple[Any, str, str]:
    """A fresh workspace served by ``python -m mlws.server`` on a free port; (process, URL,
    contributor token)."""
    import re

    from mlws import Workspace
    from mlws.server.auth import create_token

    ws_path = work / "server-ws"
    shutil.rmtree(ws_path, ignore_errors=True)
    with Workspace.create(ws_path, _remember_name=False) as ws:
        token = create_token(ws, "bench", "contributor")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlws.server", str(ws_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_CHECKOUT_ENV,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r" at (http://\S+) \(pid", line)
        if m:
            return proc, m.group(1), token
    raise RuntimeError("the server did not start")


def case_server_log_worker(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One of the 8 concurrent clients: ``run.log`` x n then flush (the remote client's own
    batching), timed from the common start."""
    from mlws import Experiment, Workspace

    ws = Workspace(params["url"], token=params["token"])
    run = Experiment(ws, "bench-8").start_logging()
    n = int(params["n"])
    ready_then_wait(work, "server_log_worker", params["go"])
    t0 = time.time()
    for i in range(n):
        run.log(METRIC_NAMES[i % 10], i * 0.5)
    run.flush()
    t1 = time.time()
    run.complete()
    return {"start": t0, "end": t1, "n": n}


def case_server_batch_worker(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One of the 8 concurrent clients sending 1,000-value batches (``POST .../metrics``, one
    kept-alive connection, a batchId each), each request timed."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(params["url"])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Authorization": f"Bearer {params['token']}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: Any) -> Any:
        conn.request(method, "/api/v1" + path, json.dumps(body).encode(), headers)
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return json.loads(data)

    run_id = call("POST", "/experiments/bench-8b/runs", {})["runId"]
    size, k = int(params["size"]), int(params["k"])
    bodies = [
        json.dumps(
            {
                "batchId": f"{os.getpid()}-{b}",
                "metrics": [
                    {"name": METRIC_NAMES[i % 10], "value": (b * size + i) * 0.5}
                    for i in range(size)
                ],
            }
        ).encode()
        for b in range(k)
    ]
    ready_then_wait(work, "server_batch_worker", params["go"])
    lat = []
    t0 = time.time()
    for body in bodies:
        s = time.perf_counter()
        conn.request("POST", f"/api/v1/runs/{run_id}/metrics", body, headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"batch refused: {r.status}")
        lat.append(time.perf_counter() - s)
    return {"start": t0, "end": time.time(), "n": size * k, "latencies": lat}


FIRST_METRIC = """
import sys, time
t0 = float(sys.argv[1])
from mlws import Experiment, Workspace
ws = Workspace(sys.argv[2], token=sys.argv[3])
run = Experiment(ws, "bench-first").start_logging()
run.log("m", 1.0)
run.flush()  # answered: stored
print("@@FIRST", time.time() - t0, flush=True)
run.complete()
"""


def case_server(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 17, mlws side: one ``mlws serve`` on 127.0.0.1, clients through the public API
    of a remote workspace (``Workspace(url, token=...)``)."""
    import psutil

    from mlws import Experiment, Workspace

    proc, url, token = _start_mlws_server(work)
    out: dict[str, Any] = {}
    server, me = psutil.Process(proc.pid), psutil.Process()

    def cpu() -> tuple[float, float]:
        # CPU seconds (user + system) of the server and of this client: on a loaded machine
        # these say what a figure costs when its wall time says mostly how busy the CPUs were.
        a, b = server.cpu_times(), me.cpu_times()
        return a.user + a.system, b.user + b.system

    def cpu_since(c0: tuple[float, float]) -> dict[str, float]:
        c1 = cpu()
        return {"server": c1[0] - c0[0], "client": c1[1] - c0[1]}

    try:
        ws = Workspace(url, token=token)
        # 17a: one client, run.log x 100,000, until the server has stored them.
        n = int(params.get("n_log", N_LOG))
        run = Experiment(ws, "bench-one").start_logging()
        c0 = cpu()
        t0 = time.perf_counter()
        for i in range(n):
            run.log(METRIC_NAMES[i % 10], i * 0.5)
        run.flush()
        out["one_s"] = time.perf_counter() - t0
        out["one_cpu"] = cpu_since(c0)
        out["one_rate"] = n / out["one_s"]
        run.complete()
        stored = sum(len(v) for v in run.get_metrics().values())
        if stored != n:
            raise RuntimeError(f"expected {n} stored values, found {stored}")
        progress(f"one client: {n:,} run.log in {out['one_s']:.2f} s -> {out['one_rate']:,.0f}/s")
        # 17b/c: 8 concurrent client processes.
        common = {"url": url, "token": token}
        out["eight"] = aggregate(
            workers(
                __file__, "server_log_worker", work, {**common, "n": params.get("n_each", N_LOG)}
            )
        )
        progress(f"8 clients, run.log: {out['eight']['rate']:,.0f} metrics/s")
        out["eight_batches"] = aggregate(
            workers(
                __file__,
                "server_batch_worker",
                work,
                {**common, "size": 1000, "k": params.get("batches_each", 20)},
            )
        )
        progress(
            f"8 clients, batches of 1,000: {out['eight_batches']['rate']:,.0f} metrics/s,"
            f" p99 {out['eight_batches']['p99_ms']:.1f} ms"
        )
        # 17d: 1,000 runs x (5 properties, 3 metrics, 2 tags).
        exp = Experiment(ws, "bench-runs")
        runs = int(params.get("runs", 1000))
        requests0 = sum(ws.remote.counters.values())
        c0 = cpu()
        t0 = time.perf_counter()
        for i in range(runs):
            r = exp.start_logging()
            r.add_properties({f"p{j}": str(i * j) for j in range(5)})
            for j in range(3):
                r.log(f"m{j}", i * j * 0.5)
            r.set_tags({"a": str(i), "b": "x"})
            r.complete()
        # Until the server has them all: runs after a client's first travel whole with its
        # next send (the sender's tick), so the loop alone would not say when they are stored.
        ws.remote.flush()
        out["runs_s"] = time.perf_counter() - t0
        out["runs_cpu"] = cpu_since(c0)
        out["runs_requests"] = sum(ws.remote.counters.values()) - requests0
        from mlws.experiments import query_runs

        done = [r for r in query_runs(ws, experiment="bench-runs") if r["status"] == "Completed"]
        if len(done) != runs:
            raise RuntimeError(f"expected {runs} Completed runs, found {len(done)}")
        progress(f"{runs:,} runs in {out['runs_s']:.2f} s ({out['runs_requests']} requests)")
        # 17e: a fresh process until its first metric is stored (median of 5).
        firsts = first_metric_times(FIRST_METRIC, work, [url, token], env=_CHECKOUT_ENV)
        out["first_s"] = statistics.median(firsts[1:])  # the first one warms the caches
        out["first_all_s"] = firsts
        progress(f"fresh process -> first stored metric: {out['first_s'] * 1e3:.0f} ms")
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def case_server_upload(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 17, mlws side: ``run.upload_folder`` of 100 MB in 10,000 files to a remote
    workspace, the first time and unchanged (to a second run)."""
    from mlws import Experiment, Workspace

    proc, url, token = _start_mlws_server(work)
    out: dict[str, Any] = {}
    try:
        ws = Workspace(url, token=token)
        # 17f/g: 100 MB in 10,000 files, first time and unchanged.
        data = work / "upload-data"
        files, size = make_dataset(data, files=params.get("files", 10_000), size=10_000)
        for key in ("upload_first_s", "upload_again_s"):
            r = Experiment(ws, "bench-upload").start_logging()
            t0 = time.perf_counter()
            r.upload_folder("data", str(data))
            out[key] = time.perf_counter() - t0
            if len(r.get_file_names()) != files:
                raise RuntimeError("not every file was recorded")
            r.complete()
            progress(f"{key}: {files:,} files, {size / 1e6:.0f} MB in {out[key]:.2f} s")
        out["upload_files"], out["upload_bytes"] = files, size
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def case_serving_pyfunc(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The iris model of ``serving_model`` saved as an MLflow model (``mlflow.sklearn``, in
    ``pyfunc_dir``: the MLflow side serves that very folder), registered and deployed with no
    scoring script on 1 replica: deploy -> first 200 (median of ``deploys`` after a cold one),
    then one keep-alive client's latency with MLflow's ``inputs`` payload and Azure's ``data``."""
    import joblib
    import mlflow.sklearn
    import numpy as np
    from common import IRIS_ROW, free_port, wait_first_ok
    from mlflow.models import infer_signature

    from mlws import Model
    from mlws.serving import LocalWebservice

    model = joblib.load(Path(params["model_dir"]) / "model.pkl")
    folder = Path(params["pyfunc_dir"])
    shutil.rmtree(folder, ignore_errors=True)
    X = np.array([IRIS_ROW])
    mlflow.sklearn.save_model(
        model,
        str(folder),
        serialization_format="cloudpickle",  # MLflow's default (skops) is not installed
        signature=infer_signature(X, model.predict(X)),
    )
    ws = _ws(work / "pyfunc-ws")
    registered = Model.register(ws, folder, "iris-mlflow")
    progress(f"saved with mlflow {mlflow.__version__}, registered as {registered.id}")
    body = json.dumps({"inputs": [IRIS_ROW]}).encode()
    calls = int(params.get("calls", 500))
    timings, service = [], None
    out: dict[str, Any] = {"mlflow": mlflow.__version__}
    try:
        for i in range(int(params.get("deploys", 3)) + 1):
            if service is not None:
                service.delete()
            port = free_port()
            t0 = time.perf_counter()
            service = Model.deploy(
                ws,
                "bench-pyfunc",
                [registered],
                deployment_config=LocalWebservice.deploy_configuration(port=port, replicas=1),
            )
            headers = {"Authorization": f"Bearer {service.get_keys()[0]}"}
            url = f"http://127.0.0.1:{port}/score"
            _, t_first = wait_first_ok(url, body, headers, b'"predictions": [0]', timeout_s=120)
            timings.append(t_first - t0)
            progress(f"deploy {'(cold)' if i == 0 else i}: first 200 after {timings[-1]:.2f} s")
        out["deploy_cold_s"] = timings[0]
        out["deploy_first_s"] = statistics.median(timings[1:])
        out["inputs"] = sequential_latency(url, headers, body, calls)
        azure = json.dumps({"data": [IRIS_ROW]}).encode()
        out["azure"] = sequential_latency(url, headers, azure, calls)
    finally:
        if service is not None:
            service.delete()
        ws.close()
    return out


# -- 18. the studio at 100k runs / 10M metric rows -----------------------------------------------
def _fill_series(ws: Any, seqs: list[int], name: str, steps: int) -> None:
    """``steps`` points of scalar metric ``name`` for each run in ``seqs``, generated by SQLite
    (a recursive CTE: no Python tuple per row), with their metric_summary rows."""
    _, fk = run_keys(ws)
    with ws.catalog.write() as conn:
        for seq in seqs:
            conn.execute(
                f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ? - 1)"
                f" INSERT INTO metrics ({fk}, name, step, kind, value, data, time)"
                " SELECT ?, ?, i, 'scalar', 1.0 / (1 + i * 0.001) + (i % 97) * 0.0001, NULL, 0 FROM s",
                (steps, seq, name),
            )
            conn.execute(
                f"INSERT INTO metric_summary ({fk}, name, kind, last_value, count)"
                " VALUES (?, ?, 'scalar', 0.5, ?)",
                (seq, name, steps),
            )


def case_studio(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlws studio`` over a workspace of 100,000 runs and ~10M metric rows: time to first byte
    and to the whole answer of the runs page (first 100 sorted by a metric) and of run pages
    with a 1M-step and a 100k-step metric, from a client on a new connection each time."""
    from common import time_http

    n = int(params.get("n", 100_000))
    per_run = int(params.get("steps_per_run", 90))
    long_steps = int(params.get("long_steps", 1_000_000))
    mid_steps = int(params.get("mid_steps", 100_000))
    path = work / "ws-studio"
    ws = _ws(path)
    t0 = time.perf_counter()
    progress(f"populating {n:,} runs by direct SQL inserts")
    populate_direct(ws, "big", n)
    seqs = [r[0] for r in ws.catalog.query("SELECT seq FROM runs WHERE experiment = 'big'")]
    progress(f"{per_run} steps of 'curve' for each run (SQLite generates them)")
    with ws.catalog.write() as conn:
        _, fk = run_keys(ws)
        conn.execute(
            f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ? - 1)"
            f" INSERT INTO metrics ({fk}, name, step, kind, value, data, time)"
            " SELECT r.seq, 'curve', s.i, 'scalar', 1.0 / (1 + s.i) + r.seq * 1e-9, NULL, 0"
            " FROM runs r, s WHERE r.experiment = 'big' ORDER BY r.seq, s.i",
            (per_run,),
        )
        conn.execute(
            f"INSERT INTO metric_summary ({fk}, name, kind, last_value, count)"
            " SELECT seq, 'curve', 'scalar', 0.01, ? FROM runs WHERE experiment = 'big'",
            (per_run,),
        )
    long_id, mid_id = [
        ws.catalog.scalar("SELECT id FROM runs WHERE seq = ?", (seqs[i],)) for i in (0, 1)
    ]
    # The compare page's limit: 100 runs of the 90-step curve, overlaid.
    compare_ids = [
        r[0]
        for r in ws.catalog.query(
            "SELECT id FROM runs WHERE seq >= ? ORDER BY seq LIMIT 100", (seqs[2],)
        )
    ]
    progress(f"one run with a {long_steps:,}-step metric, one with {mid_steps:,}")
    _fill_series(ws, [seqs[0]], "long", long_steps)
    _fill_series(ws, [seqs[1]], "mid", mid_steps)
    paint_steps = int(params.get("paint_steps", 100_000))
    _fill_series(ws, [seqs[-1]], "paint", paint_steps)
    paint_id = ws.catalog.scalar("SELECT id FROM runs WHERE seq = ?", (seqs[-1],))
    rows = ws.catalog.scalar("SELECT count(*) FROM metrics")
    fill_s = time.perf_counter() - t0
    progress(f"{rows:,} metric rows in {fill_s:.0f} s")
    ws.close()

    # This checkout's mlws (run.py clears PYTHONPATH; the venv's editable install may be another).
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlws", "studio", "-w", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=path,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("mlws studio: "):
            raise RuntimeError(f"the studio did not start: {line!r} {proc.stderr.read()[:500]}")
        url = line.split()[2].rstrip("/")
        out: dict[str, Any] = {"runs": n, "metric_rows": rows, "fill_s": fill_s}
        pages = {
            "runs_html": "/experiments/big?sort=metric:acc",
            "runs_json": "/experiments/big.json?sort=metric:acc",
            "run_long_html": f"/runs/{long_id}",
            "run_long_json": f"/runs/{long_id}.json",
            "run_mid_html": f"/runs/{mid_id}",
            "compare_100_html": "/compare?runs=" + ",".join(compare_ids),
        }
        for key, page in pages.items():
            out[key] = time_http(url + page)
            progress(
                f"{key}: ttfb {out[key]['ttfb_ms']:.0f} ms, full {out[key]['full_ms']:.0f} ms,"
                f" {out[key]['bytes']:,} bytes (cold {out[key]['cold']['full_ms']:.0f} ms)"
            )
        out["paint_steps"] = paint_steps
        out["chart_paint"] = _chart_paint(url + f"/runs/{paint_id}")
        progress(f"chart of {paint_steps:,} steps drawn: {out['chart_paint']}")
        proc.send_signal(15)
        out["exit_on_sigterm"] = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def _chart_paint(url: str, rounds: int = 5) -> dict[str, Any]:
    """Time from navigation to the run page's chart drawn, in Debian's headless chromium driven
    by Playwright (as tests/test_studio_browser.py); the median of ``rounds`` loads in new
    pages, and the first (cold) load. ``ms``: the page's own ``mlws-charts-drawn`` mark (set in
    the animation frame after uPlot drew: the frame that paints it); ``observed_ms``: when
    Playwright, polling from outside, saw uPlot's canvas (what this row measured before the
    mark: it adds the driver's round trips, ~100-150 ms on a loaded machine)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        return {"error": f"no playwright: {e}"}
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    times, observed = [], []
    mark = "() => performance.getEntriesByName('mlws-charts-drawn').map(e => e.startTime)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=flags)
        try:
            for _ in range(rounds + 1):
                page = browser.new_page()
                page.goto(url, wait_until="commit")
                page.wait_for_selector("figure.chart .uplot canvas", state="attached")
                # performance.now() counts from the navigation's start.
                observed.append(page.evaluate("performance.now()"))
                deadline = time.monotonic() + 10
                while not (drawn := page.evaluate(mark)) and time.monotonic() < deadline:
                    page.wait_for_timeout(20)
                times.append(drawn[0] if drawn else float("nan"))
                page.close()
        finally:
            browser.close()
    return {
        "ms": statistics.median(times[1:]),
        "cold_ms": times[0],
        "observed_ms": statistics.median(observed[1:]),
        "observed_cold_ms": observed[0],
        "rounds_ms": [round(t) for t in times],
    }


# -- 16. MLflow code through the mlws plugin ------------------------------------------------------
def _mlflow_on(ws: Any) -> Any:
    """MLflow pointed at ``ws`` through the plugin. The plugin's entry points are made visible
    from this checkout's ``pyproject.toml`` when the installed mlws predates them (an editable
    install made before they were declared), as ``tests/test_mlflow_store.py`` does."""
    import importlib.metadata

    import tomllib

    groups = importlib.metadata.entry_points()
    if not any(ep.name == "mlws" for ep in groups.select(group="mlflow.tracking_store")):
        root = Path(__file__).resolve().parent.parent
        eps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
        info = Path(tempfile.mkdtemp()) / "mlws_mlflow_plugin-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: mlws-mlflow-plugin\nVersion: 0\n"
        )
        (info / "entry_points.txt").write_text(
            "".join(
                f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in e.items()) + "\n"
                for g, e in eps.items()
                if g.startswith("mlflow.")
            )
        )
        sys.path.insert(0, str(info.parent))
    import mlflow

    # Both URIs set, as inside runs (and on the peer's side of the benchmark).
    mlflow.set_tracking_uri(ws.get_mlflow_tracking_uri())
    mlflow.set_registry_uri(ws.get_mlflow_tracking_uri())
    return mlflow


def case_mlflow_log(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlflow.log_metric`` and ``MlflowClient.log_metric`` through the plugin."""
    ws = _ws(work / "ws-mlflow-log")
    mlflow = _mlflow_on(ws)
    mlflow.set_experiment("bench-mlflow-log")
    out = mlflow_time_logging(mlflow, int(params.get("calls", 10_000)))
    ws.close()
    return out


def case_mlflow_search(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlflow.search_runs`` over ``n`` runs made through the plugin (5 params, 3 metrics, 2
    tags each): all of them, and a tag filter sorted by a metric; medians of 11."""
    ws = _ws(work / "ws-mlflow-search")
    mlflow = _mlflow_on(ws)
    n = int(params.get("n", 1000))
    client = mlflow.MlflowClient()
    exp_id = client.create_experiment("bench-mlflow-search")
    made = mlflow_make_runs(client, exp_id, n)
    progress(f"{n:,} runs made in {made:.2f} s")
    out: dict[str, Any] = {"create_s": made, **mlflow_time_searches(mlflow, exp_id, n)}
    ws.close()
    return out


def case_mlflow_rest(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 16f..: a stock ``MlflowClient`` over HTTP against ``mlws serve``'s MLflow API
    (``MLFLOW_TRACKING_URI=http://…``, ``MLFLOW_TRACKING_TOKEN`` an mlws token)."""
    from mlflow import MlflowClient

    proc, url, token = _start_mlws_server(work)
    os.environ["MLFLOW_TRACKING_URI"] = url
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        return mlflow_rest_case(MlflowClient(), runs=int(params.get("runs", 200)))
    finally:
        proc.terminate()
        proc.wait(30)


CASES = {
    "log": case_log,
    "runs": case_runs,
    "query_1k": case_query_1k,
    "mlflow_rest": case_mlflow_rest,
    "query_100k": case_query_100k,
    "startup": case_startup,
    "submit": case_submit,
    "snapshot": case_snapshot,
    "artifacts": case_artifacts,
    "env": case_env,
    "fan": case_fan,
    "compute": case_compute,
    "serving_model": case_serving_model,
    "serving": case_serving,
    "serving_pyfunc": case_serving_pyfunc,
    "dataset": case_dataset,
    "tabular": case_tabular,
    "sweep": case_sweep,
    "pipeline_noop": case_pipeline_noop,
    "pipeline_fanout": case_pipeline_fanout,
    "prs_throughput": case_prs_throughput,
    "v1_import": case_v1_import,
    "server": case_server,
    "server_upload": case_server_upload,
    "server_log_worker": case_server_log_worker,
    "server_batch_worker": case_server_batch_worker,
    "studio": case_studio,
    "mlflow_log": case_mlflow_log,
    "mlflow_search": case_mlflow_search,
}


if __name__ == "__main__":
    name, workdir = sys.argv[1], Path(sys.argv[2])
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    workdir.mkdir(parents=True, exist_ok=True)
    emit(CASES[name](workdir, args))
