"""The MLflow side of the benchmarks (the peer). Run by ``bench/run.py`` with the interpreter of
``bench/.mlflow-venv``:

    python bench/mlflow_cases.py CASE WORKDIR [JSON PARAMS]

MLflow uses its SQLite tracking store, ``sqlite:///<WORKDIR>/<name>/mlflow.db``, with artifacts
under the same folder. Like the mlws cases, each ends with one ``@@RESULT {json}`` line.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from common import (
    disk_usage,
    emit,
    median_ms,
    mlflow_make_runs,
    mlflow_time_logging,
    mlflow_time_searches,
    progress,
)

METRIC_NAMES = [f"m{i}" for i in range(10)]


def _store(folder: Path, experiment: str) -> str:
    """Point MLflow at a SQLite store in ``folder`` and return the id of ``experiment``
    (created with its artifacts in ``folder/artifacts``). The first call creates the schema."""
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        exp_id = mlflow.create_experiment(
            experiment, artifact_location=(folder / "artifacts").as_uri()
        )
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# -- 1. log_metric and log_batch -----------------------------------------------------------------
def case_log(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    from mlflow.entities import Metric

    _store(work / "mlflow-log", "bench-log")
    calls = int(params.get("calls", 2000))
    batch_total, batch_size = 100_000, 1000
    with mlflow.start_run() as run:
        t0 = time.perf_counter()
        for i in range(calls):
            mlflow.log_metric(METRIC_NAMES[i % 10], i * 0.5, step=i // 10)
        dt_calls = time.perf_counter() - t0
        progress(
            f"log_metric: {calls:,} calls in {dt_calls:.2f} s -> {calls / dt_calls:,.0f} calls/s"
        )
        client = mlflow.MlflowClient()
        ts = int(time.time() * 1000)
        t0 = time.perf_counter()
        for b in range(batch_total // batch_size):
            base = b * batch_size
            batch = [
                Metric(METRIC_NAMES[i % 10], (base + i) * 0.5, ts, (base + i) // 10 + calls)
                for i in range(batch_size)
            ]
            client.log_batch(run.info.run_id, metrics=batch)
        dt_batch = time.perf_counter() - t0
        progress(
            f"log_batch: {batch_total:,} metrics in {dt_batch:.2f} s -> {batch_total / dt_batch:,.0f} metrics/s"
        )
    stored = sum(len(client.get_metric_history(run.info.run_id, m)) for m in METRIC_NAMES)
    if stored != calls + batch_total:
        raise RuntimeError(f"expected {calls + batch_total} stored values, found {stored}")
    return {
        "log_metric_rate": calls / dt_calls,
        "log_metric_s": dt_calls,
        "log_batch_rate": batch_total / dt_batch,
        "log_batch_s": dt_batch,
    }


# -- 2. 1,000 runs ------------------------------------------------------------------------------
def case_runs(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    n = int(params.get("n", 1000))
    _store(work / "mlflow-runs", "bench-runs")
    rnd = random.Random(42)
    progress(f"creating {n:,} runs (log_params(5), log_metric x3, set_tags(2))")
    t0 = time.perf_counter()
    for i in range(n):
        mlflow.start_run()
        mlflow.log_params({f"p{j}": f"value{j}" for j in range(5)})
        mlflow.log_metric("acc", rnd.random())
        mlflow.log_metric("loss", rnd.random())
        mlflow.log_metric("f1", rnd.random())
        mlflow.set_tags({"k": "v" if i % 10 == 0 else "w", "team": f"t{i % 7}"})
        mlflow.end_run()
        if (i + 1) % 250 == 0:
            progress(f"{i + 1:,} runs, {time.perf_counter() - t0:.1f} s")
    elapsed = time.perf_counter() - t0
    progress(f"{n:,} runs in {elapsed:.2f} s ({n / elapsed:,.0f} runs/s)")
    return {"seconds": elapsed, "n": n}


# -- 3. search_runs -----------------------------------------------------------------------------
def case_query_1k(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    exp_id = _store(work / "mlflow-runs", "bench-runs")
    kwargs = {
        "experiment_ids": [exp_id],
        "filter_string": "tags.k = 'v'",
        "order_by": ["metrics.acc DESC"],
    }
    times, df = [], None
    for _ in range(11):
        t0 = time.perf_counter()
        df = mlflow.search_runs(**kwargs)
        times.append(time.perf_counter() - t0)
    assert df is not None
    if len(df) != 100:
        raise RuntimeError(f"expected 100 matching runs, got {len(df)}")
    accs = list(df["metrics.acc"])
    if accs != sorted(accs, reverse=True):
        raise RuntimeError("search_runs did not sort by metrics.acc DESC")
    client = mlflow.MlflowClient()
    ctimes = []
    for _ in range(11):
        t0 = time.perf_counter()
        runs = client.search_runs(
            [exp_id], filter_string="tags.k = 'v'", order_by=["metrics.acc DESC"], max_results=1000
        )
        ctimes.append(time.perf_counter() - t0)
    progress(
        f"search_runs (DataFrame): median {median_ms(times[1:]):.1f} ms (first {times[0] * 1e3:.0f} ms); "
        f"MlflowClient.search_runs: median {median_ms(ctimes[1:]):.1f} ms, {len(runs)} runs"
    )
    return {
        "ms": median_ms(times[1:]),
        "first_ms": times[0] * 1e3,
        "client_ms": median_ms(ctimes[1:]),
        "rows": len(df),
    }


# -- 4. start-up ---------------------------------------------------------------------------------
STARTUP_CODE = textwrap.dedent(
    """
    import sys, mlflow
    mlflow.set_tracking_uri(f"sqlite:///{sys.argv[1]}/mlflow.db")
    mlflow.set_experiment("bench-startup")
    with mlflow.start_run():
        mlflow.log_metric("m", 1)
    """
)


def _wall(argv: list[str], reps: int = 5, cwd: Path | None = None) -> tuple[float, list[float]]:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)  # warm-up (and schema creation)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def case_startup(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    folder = work / "mlflow-startup"
    folder.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    # The warm-up run of _wall creates the schema and the experiment, so the timed runs open an
    # existing store, like the mlws case.
    run_s, run_all = _wall([py, "-c", STARTUP_CODE, str(folder)], cwd=folder)
    progress(
        f"fresh process -> run with one metric: median {run_s * 1e3:.0f} ms {[round(t * 1e3) for t in run_all]}"
    )
    help_s, _ = _wall([str(Path(py).parent / "mlflow"), "--help"], cwd=folder)
    progress(f"mlflow --help: median {help_s * 1e3:.0f} ms")
    import_s, _ = _wall([py, "-c", "import mlflow"], cwd=folder)
    bare_s, _ = _wall([py, "-c", "pass"], cwd=folder)
    progress(
        f"python -c 'import mlflow': {import_s * 1e3:.0f} ms (bare interpreter {bare_s * 1e3:.0f} ms)"
    )
    return {
        "run_s": run_s,
        "run_all": run_all,
        "help_s": help_s,
        "import_s": import_s,
        "bare_s": bare_s,
    }


# -- 5. a trivial project run -------------------------------------------------------------------
def case_submit(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    exp_id = _store(work / "mlflow-submit", "bench-submit")
    proj = work / "mlflow-project"
    proj.mkdir(parents=True, exist_ok=True)
    (proj / "t.py").write_text("print('hello')\n")
    (proj / "MLproject").write_text(
        f'name: t\nentry_points:\n  main:\n    command: "{sys.executable} t.py"\n'
    )
    times = []
    for i in range(6):
        t0 = time.perf_counter()
        sub = mlflow.projects.run(
            uri=str(proj),
            entry_point="main",
            env_manager="local",
            experiment_id=exp_id,
            synchronous=True,
        )
        dt = time.perf_counter() - t0
        if sub.get_status() != "FINISHED":
            raise RuntimeError(f"project run ended {sub.get_status()}")
        if i:
            times.append(dt)
    progress(
        f"mlflow.projects.run (local) -> FINISHED: median {statistics.median(times) * 1e3:.0f} ms"
    )
    return {"s": statistics.median(times), "all": times}


# -- 6. artifacts -------------------------------------------------------------------------------
def case_artifacts(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    data = Path(params["data"])
    folder = work / "mlflow-artifacts"
    _store(folder, "bench-artifacts")
    out: dict[str, Any] = {"empty_bytes": disk_usage(folder)}
    for i in (1, 2):
        with mlflow.start_run():
            t0 = time.perf_counter()
            mlflow.log_artifacts(str(data), "data")
            dt = time.perf_counter() - t0
        du = disk_usage(folder)
        out[f"run{i}"] = {"s": dt, "disk_bytes": du}
        progress(f"run {i}: log_artifacts {dt:.2f} s, store on disk {du / 1e6:.1f} MB")
    return out


# -- 10. mlflow models serve ---------------------------------------------------------------------
EXPECT = b'"predictions": [0]'


def _serve(uri: str, workers: int, env: dict[str, str], log: Path) -> tuple[Any, int, float]:
    """Start ``mlflow models serve`` in a new process group; returns (process, port, the
    ``perf_counter()`` just before starting it)."""
    from common import free_port

    port = free_port()
    argv = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri]
    argv += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,  # uvicorn logs every request: a file, never an undrained pipe
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, port, t0


def _stop(proc: Any) -> None:
    """Stop the server's whole process group (the CLI, uvicorn and its workers) by its id."""
    import os
    import signal

    pgid = proc.pid  # start_new_session: the CLI leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    while time.monotonic() < deadline:  # uvicorn may outlive the CLI for a moment
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def _started(uri: str, workers: int, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Start a server and wait for its first 200 on /invocations."""
    from common import IRIS_ROW, wait_first_ok

    proc, port, t0 = _serve(uri, workers, env, log)

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {proc.returncode}; see {log}")

    url = f"http://127.0.0.1:{port}/invocations"
    body = json.dumps({"inputs": [IRIS_ROW]}).encode()
    try:
        t_listen, t_first = wait_first_ok(url, body, {}, EXPECT, timeout_s=120, check=alive)
    except BaseException:
        _stop(proc)
        raise
    return {
        "proc": proc,
        "url": url,
        "body": body,
        "listen_s": t_listen - t0,
        "first_s": t_first - t0,
    }


def _load(
    python: str,
    s: dict[str, Any],
    body: bytes | None = None,
    generator: str = "wrk",
    **kw: Any,
) -> dict[str, Any]:
    from common import run_load, tree

    pids = tree(s["proc"].pid)  # the CLI (idle while it waits), uvicorn and its workers
    r = run_load(generator, python, s["url"], body or s["body"], {}, EXPECT, server_pids=pids, **kw)
    progress(
        f"  {r['generator']}, {r['clients']} clients:"
        f" {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms;"
        f" CPU per request: server {r['server_cpu_us_per_req']:.0f} us,"
        f" clients {r['client_cpu_us_per_req']:.0f} us"
    )
    return r


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _processes(proc: Any) -> dict[str, Any]:
    """Memory of the server's processes: the CLI, uvicorn, and uvicorn's workers (with
    ``-w 1`` uvicorn serves in its own process and has none)."""
    from common import children, memory

    found = children(proc.pid)
    if len(found) != 1:
        raise RuntimeError(f"expected one uvicorn process under the CLI (pid {proc.pid}): {found}")
    # uvicorn's workers, not multiprocessing's resource tracker (also a child of it).
    workers = [p for p in children(found[0]) if b"resource_tracker" not in _cmdline(p)]
    return {
        "cli": memory(proc.pid),
        "uvicorn": memory(found[0]),
        "workers": [memory(p) for p in workers] or [memory(found[0])],
    }


def case_serving(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The model trained by mlws_cases' ``serving_model``, logged with ``mlflow.sklearn`` and
    served by ``mlflow models serve``; loaded with the same wrk (and ``bench/loadgen.py``)."""
    import os

    import joblib
    import mlflow
    import numpy as np
    from common import IRIS_ROW
    from mlflow.models import infer_signature

    python = params["loadgen_python"]
    rounds = int(params.get("rounds", 3))
    deploys = int(params.get("deploys", 3))
    load = {
        "clients": int(params.get("clients", 4)),
        "warmup": float(params.get("warmup", 1.0)),
        "duration": float(params.get("duration", 5.0)),
    }
    folder = work / "mlflow-serving"
    _store(folder, "bench-serving")
    model = joblib.load(Path(params["model_dir"]) / "model.pkl")
    X = np.array([IRIS_ROW])
    t0 = time.perf_counter()
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(X, model.predict(X))
        )
    out: dict[str, Any] = {"log_model_s": time.perf_counter() - t0, "uri": info.model_uri}
    progress(f"logged the model as {info.model_uri} in {out['log_model_s']:.1f} s")
    # What a worker must do whatever the server: a fresh interpreter that imports the scoring
    # server's module and loads the model (from a local copy, as the CLI hands it over).
    local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(work / "model-copy"))
    code = "import sys, mlflow.pyfunc.scoring_server as s; s.init(s.load_model(sys.argv[1]))"
    out["load_s"], _ = _wall([sys.executable, "-c", code, local], reps=3, cwd=work)
    out["bare_s"], _ = _wall([sys.executable, "-c", "pass"], reps=3, cwd=work)
    progress(
        f"fresh interpreter + import the scoring server + load_model: {out['load_s'] * 1e3:.0f} ms"
        f" (bare interpreter {out['bare_s'] * 1e3:.0f} ms)"
    )
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"  # to resolve models:/...
    # The CLI starts `bash -c "exec uvicorn ..."`: uvicorn must be on PATH, as in an active venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = work / "mlflow-serve.log"

    # Start -> first 200, -w 1: one cold start, then `deploys` timed (median).
    timings = []
    server = None  # the server up now, stopped in the finally whatever happens
    try:
        for i in range(deploys + 1):
            if server is not None:
                _stop(server["proc"])
            server = _started(info.model_uri, 1, env, log)
            timings.append({k: server[k] for k in ("listen_s", "first_s")})
            progress(
                f"start {'(cold)' if i == 0 else i}:"
                f" port listening {server['listen_s'] * 1e3:.0f} ms, first 200 {server['first_s'] * 1e3:.0f} ms"
            )
        assert server is not None
        out["deploy_cold"] = timings[0]
        out["deploy"] = timings[1:]
        out["deploy_first_s"] = statistics.median(t["first_s"] for t in timings[1:])
        out["deploy_listen_s"] = statistics.median(t["listen_s"] for t in timings[1:])

        progress(f"-w 1, {rounds} rounds of {load['duration']:.0f} s, {{'inputs': [[...]]}}")
        tested = [_load(python, server, **load) for _ in range(rounds)]
        keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req", "client_cpu_us_per_req")
        out["w1"] = {k: statistics.median(r[k] for r in tested) for k in keys}
        out["w1"]["rounds"] = tested
        out["w1_python"] = _load(python, server, generator="python", **load)
        split = {"dataframe_split": {"columns": ["0", "1", "2", "3"], "data": [IRIS_ROW]}}
        progress("-w 1, {'dataframe_split': ...}")
        out["w1_split"] = _load(python, server, json.dumps(split).encode(), **load)
        out["memory_w1"] = _processes(server["proc"])
        out["rss_per_worker"] = out["memory_w1"]["uvicorn"]["rss"]
        out["pss_per_worker"] = out["memory_w1"]["uvicorn"]["pss"]
        _stop(server["proc"])
        server = None

        server = _started(info.model_uri, 2, env, log)
        out["deploy_w2_s"] = server["first_s"]
        progress(f"-w 2: first 200 after {server['first_s'] * 1e3:.0f} ms")
        out["w2"] = _load(python, server, **load)
        out["memory_w2"] = _processes(server["proc"])
    finally:
        if server is not None:
            _stop(server["proc"])
    return out


# -- 17. the tracking server over HTTP (mlflow server) ---------------------------------------------
def _start_tracking_server(work: Path) -> tuple[Any, str]:
    """``mlflow server`` (its defaults: 4 uvicorn workers) with a SQLite store and proxied
    artifacts under ``work``, on a free 127.0.0.1 port, answering /health; (process, URL)."""
    import urllib.request

    from common import free_port

    folder = work / "mlflow-server"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--backend-store-uri", f"sqlite:///{folder}/mlflow.db"]
    argv += ["--artifacts-destination", str(folder / "artifacts")]
    with open(folder / "server.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}; see {folder}/server.log")
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError("mlflow server did not answer /health within 120 s")


def case_server_batch_worker(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """One of the 8 concurrent clients: ``log_batch`` of 1,000 metrics, each call timed."""
    from common import ready_then_wait
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=params["url"])
    run_id = client.create_run(params["experiment_id"]).info.run_id
    size, k = int(params["size"]), int(params["k"])
    ts = int(time.time() * 1000)
    batches = [
        [Metric(METRIC_NAMES[i % 10], (b * size + i) * 0.5, ts, b * size + i) for i in range(size)]
        for b in range(k)
    ]
    ready_then_wait(work, "server_batch_worker", params["go"])
    lat = []
    t0 = time.time()
    for batch in batches:
        s = time.perf_counter()
        client.log_batch(run_id, metrics=batch)
        lat.append(time.perf_counter() - s)
    return {"start": t0, "end": time.time(), "n": size * k, "latencies": lat}


FIRST_METRIC = """
import sys, time
t0 = float(sys.argv[1])
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[2])
run = client.create_run(sys.argv[3])
client.log_metric(run.info.run_id, "m", 1.0)  # answered: stored
print("@@FIRST", time.time() - t0, flush=True)
client.set_terminated(run.info.run_id)
"""


def case_server(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 17, MLflow side: ``mlflow server`` on 127.0.0.1, clients through
    ``MlflowClient`` over HTTP."""
    from common import aggregate, first_metric_times, workers
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    proc, url = _start_tracking_server(work)
    out: dict[str, Any] = {}
    try:
        client = MlflowClient(tracking_uri=url)
        exp_id = client.create_experiment("bench-server")
        # 17a: one client, log_metric (calls/s) and log_batch of 1,000 (metrics/s).
        run_id = client.create_run(exp_id).info.run_id
        calls = int(params.get("calls", 2000))
        t0 = time.perf_counter()
        for i in range(calls):
            client.log_metric(run_id, METRIC_NAMES[i % 10], i * 0.5, step=i // 10)
        out["log_metric_rate"] = calls / (time.perf_counter() - t0)
        ts = int(time.time() * 1000)
        total = int(params.get("n_log", 100_000))
        t0 = time.perf_counter()
        for b in range(total // 1000):
            client.log_batch(
                run_id,
                metrics=[
                    Metric(METRIC_NAMES[i % 10], i * 0.5, ts, b * 1000 + i) for i in range(1000)
                ],
            )
        out["log_batch_rate"] = total / (time.perf_counter() - t0)
        progress(
            f"one client: log_metric {out['log_metric_rate']:,.0f}/s, log_batch"
            f" {out['log_batch_rate']:,.0f} metrics/s"
        )
        # 17b/c: 8 concurrent client processes, log_batch of 1,000 each.
        out["eight_batches"] = aggregate(
            workers(
                __file__,
                "server_batch_worker",
                work,
                {
                    "url": url,
                    "experiment_id": exp_id,
                    "size": 1000,
                    "k": params.get("batches_each", 20),
                },
            )
        )
        progress(
            f"8 clients, log_batch of 1,000: {out['eight_batches']['rate']:,.0f} metrics/s,"
            f" p99 {out['eight_batches']['p99_ms']:.1f} ms"
        )
        # 17d: 1,000 runs x (5 params, 3 metrics, 2 tags): create_run with the tags, one
        # log_batch with the rest, set_terminated (its fewest calls).
        runs = int(params.get("runs", 1000))
        t0 = time.perf_counter()
        for i in range(runs):
            rid = client.create_run(exp_id, tags={"a": str(i), "b": "x"}).info.run_id
            client.log_batch(
                rid,
                metrics=[Metric(f"m{j}", i * j * 0.5, ts, 0) for j in range(3)],
                params=[Param(f"p{j}", str(i * j)) for j in range(5)],
            )
            client.set_terminated(rid)
        out["runs_s"] = time.perf_counter() - t0
        progress(f"{runs:,} runs in {out['runs_s']:.2f} s")
        # 17e: a fresh process until its first metric is stored (median of 5).
        firsts = first_metric_times(FIRST_METRIC, work, [url, exp_id])
        out["first_s"] = statistics.median(firsts[1:])
        out["first_all_s"] = firsts
        progress(f"fresh process -> first stored metric: {out['first_s'] * 1e3:.0f} ms")
    finally:
        _stop(proc)
    return out


def case_server_upload(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 17, MLflow side: ``log_artifacts`` of 100 MB in 10,000 files through the
    server (proxied artifacts), the first time and again (to a second run)."""
    from common import make_dataset
    from mlflow import MlflowClient

    proc, url = _start_tracking_server(work)
    out: dict[str, Any] = {}
    try:
        client = MlflowClient(tracking_uri=url)
        exp_id = client.create_experiment("bench-upload")
        # 17f/g: 100 MB in 10,000 files through the server (proxied artifacts), twice.
        data = work / "upload-data"
        files, size = make_dataset(data, files=params.get("files", 10_000), size=10_000)
        for key in ("upload_first_s", "upload_again_s"):
            rid = client.create_run(exp_id).info.run_id
            t0 = time.perf_counter()
            client.log_artifacts(rid, str(data), "data")
            out[key] = time.perf_counter() - t0
            progress(f"{key}: {files:,} files, {size / 1e6:.0f} MB in {out[key]:.2f} s")
        out["upload_files"], out["upload_bytes"] = files, size
    finally:
        _stop(proc)
    return out


def case_serving_pyfunc(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlflow models serve`` (1 worker) on the MLflow model folder that mlws_cases'
    ``serving_pyfunc`` saved and served: start -> first 200 (median of ``deploys`` after a cold
    one), then one keep-alive client's latency with the same ``inputs`` payload."""
    import os

    import mlflow
    from common import sequential_latency

    folder = work / "mlflow-pyfunc"
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"  # nothing in ./mlruns
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = work / "mlflow-serve-pyfunc.log"
    uri = params["pyfunc_dir"]
    timings, server = [], None
    out: dict[str, Any] = {"mlflow": mlflow.__version__}
    try:
        for i in range(int(params.get("deploys", 3)) + 1):
            if server is not None:
                _stop(server["proc"])
            server = _started(uri, 1, env, log)
            timings.append(server["first_s"])
            progress(f"start {'(cold)' if i == 0 else i}: first 200 after {timings[-1]:.2f} s")
        assert server is not None
        out["deploy_cold_s"] = timings[0]
        out["deploy_first_s"] = statistics.median(timings[1:])
        calls = int(params.get("calls", 500))
        out["inputs"] = sequential_latency(server["url"], {}, server["body"], calls)
    finally:
        if server is not None:
            _stop(server["proc"])
    return out


# -- 18. MLflow's UI server on the same kind of data ---------------------------------------------
def case_studio(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlflow server`` (its UI's backend) over 1,000 runs made through the API, each with
    acc/loss/f1 and a 90-step ``curve``, and one run with a ``long_steps``-step metric: the
    calls its UI makes for the runs page (``runs/search``, first 100 by a metric) and a run's
    chart (``metrics/get-history`` whole, and ``get-history-bulk-interval``, the sampled call
    of its charts), timed as the mlws side's pages are."""
    import os
    import urllib.parse

    from common import free_port, time_http
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    n = int(params.get("n", 1000))
    per_run = int(params.get("steps_per_run", 90))
    long_steps = int(params.get("long_steps", 100_000))
    folder = work / "studio"
    exp_id = _store(folder, "big")
    client = MlflowClient()
    rnd = random.Random(7)
    t0 = time.perf_counter()
    progress(f"{n:,} runs through the API (3 metrics + {per_run} steps of curve each)")
    first_run = None
    for i in range(n):
        run = client.create_run(exp_id)
        now = int(time.time() * 1000)
        metrics = [Metric(k, rnd.random(), now, 0) for k in ("acc", "loss", "f1")]
        metrics += [Metric("curve", 1.0 / (1 + s), now, s) for s in range(per_run)]
        client.log_batch(run.info.run_id, metrics=metrics, tags=[])
        client.set_terminated(run.info.run_id)
        first_run = first_run or run.info.run_id
        if i % 200 == 199:
            progress(f"{i + 1} runs, {time.perf_counter() - t0:.0f} s")
    progress(f"one run with a {long_steps:,}-step metric (log_batch, 1,000 a call)")
    now = int(time.time() * 1000)
    for a in range(0, long_steps, 1000):
        client.log_batch(
            first_run,
            metrics=[
                Metric("long", 1.0 / (1 + s * 0.001), now, s)
                for s in range(a, min(a + 1000, long_steps))
            ],
        )
    fill_s = time.perf_counter() - t0
    progress(f"filled in {fill_s:.0f} s")

    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    argv = [str(Path(sys.executable).parent / "mlflow"), "server", "-h", "127.0.0.1"]
    argv += ["-p", str(port), "-w", "1", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db"]
    argv += ["--default-artifact-root", (folder / "artifacts").as_uri()]
    with open(work / "mlflow-server.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        import http.client

        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start; see mlflow-server.log")
            time.sleep(0.1)
        search = json.dumps(
            {
                "experiment_ids": [exp_id],
                "max_results": 100,
                "order_by": ["metrics.`acc` DESC"],
                "run_view_type": "ACTIVE_ONLY",
            }
        ).encode()
        out: dict[str, Any] = {"runs": n, "long_steps": long_steps, "fill_s": fill_s}
        out["search"] = time_http(
            url + "/ajax-api/2.0/mlflow/runs/search",
            "POST",
            search,
            {"Content-Type": "application/json"},
        )
        q = urllib.parse.urlencode({"run_id": first_run, "metric_key": "long"})
        # Slow at this length (seconds a call): one cold call and the median of 2.
        out["history"] = time_http(url + "/ajax-api/2.0/mlflow/metrics/get-history?" + q, reps=2)
        q = urllib.parse.urlencode({"run_ids": first_run, "metric_key": "long", "max_results": 320})
        out["bulk_interval"] = time_http(
            url + "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?" + q
        )
        out["ui_index"] = time_http(url + "/")
        for key in ("search", "history", "bulk_interval", "ui_index"):
            progress(
                f"{key}: ttfb {out[key]['ttfb_ms']:.0f} ms, full {out[key]['full_ms']:.0f} ms,"
                f" {out[key]['bytes']:,} bytes"
            )
    finally:
        _stop(proc)
    return out


# -- 16. the same MLflow calls against MLflow's SQLite store -------------------------------------
def case_mlflow_log(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlflow.log_metric`` and ``MlflowClient.log_metric`` (bench 16a/b's peer)."""
    import mlflow

    _store(work / "mlflow-log16", "bench-mlflow-log")
    mlflow.set_registry_uri(mlflow.get_tracking_uri())  # as on the mlws side
    return mlflow_time_logging(mlflow, int(params.get("calls", 10_000)))


def case_mlflow_search(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``mlflow.search_runs`` over ``n`` runs (bench 16b/c's peer; made as the mlws side makes
    them: one ``log_batch`` of 5 params, 3 metrics and 2 tags per run)."""
    import mlflow

    exp_id = _store(work / "mlflow-search16", "bench-mlflow-search")
    mlflow.set_registry_uri(mlflow.get_tracking_uri())  # as on the mlws side
    n = int(params.get("n", 1000))
    client = mlflow.MlflowClient()
    made = mlflow_make_runs(client, exp_id, n)
    progress(f"{n:,} runs made in {made:.2f} s")
    out: dict[str, Any] = {"create_s": made, **mlflow_time_searches(mlflow, exp_id, n)}
    return out


def case_mlflow_rest(work: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Bench 16f..'s peer: the same stock ``MlflowClient`` against ``mlflow server`` with its
    SQLite store."""
    import os

    from common import mlflow_rest_case
    from mlflow import MlflowClient

    proc, url = _start_tracking_server(work)
    os.environ["MLFLOW_TRACKING_URI"] = url
    try:
        return mlflow_rest_case(MlflowClient(), runs=int(params.get("runs", 200)))
    finally:
        _stop(proc)


CASES = {
    "log": case_log,
    "runs": case_runs,
    "query_1k": case_query_1k,
    "mlflow_rest": case_mlflow_rest,
    "startup": case_startup,
    "submit": case_submit,
    "artifacts": case_artifacts,
    "serving": case_serving,
    "server": case_server,
    "server_upload": case_server_upload,
    "server_batch_worker": case_server_batch_worker,
    "serving_pyfunc": case_serving_pyfunc,
    "studio": case_studio,
    "mlflow_log": case_mlflow_log,
    "mlflow_search": case_mlflow_search,
}


if __name__ == "__main__":
    name, workdir = sys.argv[1], Path(sys.argv[2])
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    workdir.mkdir(parents=True, exist_ok=True)
    emit(CASES[name](workdir, args))
