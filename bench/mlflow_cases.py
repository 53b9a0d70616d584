"""The MLflow side of the benchmarks (the peer). Run by ``bench/run.py`` with the interpreter of
``bench/.mlflow-venv``:

    python bench/mlflow_cases.py CASE WORKDIR [JSON PARAMS]

MLflow uses its SQLite tracking store, ``sqlite:///<WORKDIR>/<name>/mlflow.db``, with artifacts
under the same folder. Like the mlws cases, each ends with one ``@@RESULT {json}`` line.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from common import disk_usage, emit, median_ms, progress

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


CASES = {
    "log": case_log,
    "runs": case_runs,
    "query_1k": case_query_1k,
    "startup": case_startup,
    "submit": case_submit,
    "artifacts": case_artifacts,
}


if __name__ == "__main__":
    name, workdir = sys.argv[1], Path(sys.argv[2])
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    workdir.mkdir(parents=True, exist_ok=True)
    emit(CASES[name](workdir, args))
