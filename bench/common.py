"""Helpers shared by the benchmark cases; standard library only (both venvs import it)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULT_MARK = "@@RESULT "


def progress(msg: str) -> None:
    print(f"    {msg}", flush=True)


def emit(result: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)
    sys.stdout.flush()


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under ``path`` (like ``du -s``), each inode counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(Path(root) / name)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def make_dataset(
    folder: Path, files: int = 10_000, size: int = 10_000, per_dir: int = 100
) -> tuple[int, int]:
    """``files`` files of ``size`` random bytes in folders of ``per_dir``; returns (files, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in range((files + per_dir - 1) // per_dir):
        sub = folder / f"d{d:03d}"
        sub.mkdir(exist_ok=True)
        for f in range(min(per_dir, files - n)):
            (sub / f"f{f:03d}.bin").write_bytes(os.urandom(size))
            n += 1
    return n, n * size


# -- benchmark 10: serving ---------------------------------------------------------------------
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]  # a setosa: class 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_first_ok(
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: bytes,
    timeout_s: float = 60.0,
    check: Any = None,
) -> tuple[float, float]:
    """POST ``body`` to ``url`` every 5 ms until it answers 200 with ``expect`` in the body;
    returns ``(first, ok)``: the ``time.perf_counter()`` when a connection was first accepted
    (something listens on the port) and when that answer came. ``check()``, called between
    tries, may raise to give up (the server died).

    :raises TimeoutError: no such answer within ``timeout_s``.
    """
    import http.client
    import time
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", **headers}
    deadline = time.perf_counter() + timeout_s
    last = "nothing yet"
    listening = None
    while time.perf_counter() < deadline:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.connect()
            if listening is None:
                listening = time.perf_counter()
            conn.request("POST", parts.path, body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status == 200 and expect in data:
                return listening, time.perf_counter()
            last = f"{response.status}: {data[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        if check is not None:
            check()
        time.sleep(0.005)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s (last: {last})")


def sequential_latency(
    url: str, headers: dict[str, str], body: bytes, calls: int = 200, warmup: int = 20
) -> dict[str, Any]:
    """One keep-alive client calling in turn (each call waits for the last answer): the latency a
    caller sees without load. A Nagle / delayed-ACK stall (a response written in two segments)
    shows here as ~40 ms per call; under wrk's pipelined load it hides. Was an assertion in
    tests/test_serving.py (p50 < 5 ms); a timing belongs in the bench (issue 11)."""
    import http.client
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    headers = {**headers, "Content-Type": "application/json"}

    def call() -> None:
        conn.request("POST", parts.path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"sequential call answered {resp.status}")

    try:
        for _ in range(warmup):
            call()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            call()
            times.append((time.perf_counter() - t) * 1000)
    finally:
        conn.close()
    times.sort()
    out = {
        "calls": calls,
        "p50_ms": times[len(times) // 2],
        "p90_ms": times[len(times) * 9 // 10],
        "max_ms": times[-1],
    }
    progress(
        f"  one keep-alive client, {calls} calls in turn: p50 {out['p50_ms']:.2f} ms,"
        f" p90 {out['p90_ms']:.2f} ms, max {out['max_ms']:.2f} ms"
    )
    return out


def run_load(generator: str, python: str, *args: Any, **kw: Any) -> dict[str, Any]:
    """One load test with ``wrk`` or ``python`` (``bench/loadgen.py``); the same keys either way."""
    if generator == "wrk":
        return run_wrk(*args, **kw)
    r = run_loadgen(python, *args, **kw)
    r["generator"] = "python"
    return r


def run_loadgen(
    python: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: bytes,
    clients: int = 4,
    mode: str = "process",
    warmup: float = 1.0,
    duration: float = 5.0,
    server_pids: list[int] | None = None,
) -> dict[str, Any]:
    """One load test with ``bench/loadgen.py`` run by ``python`` (the same interpreter for every
    server); adds the CPU the server processes ``server_pids`` used meanwhile."""
    import subprocess

    argv = [python, str(LOADGEN), url, body.decode(), "--expect", expect.decode()]
    argv += [f"--header={k}: {v}" for k, v in headers.items()]
    argv += [f"--clients={clients}", f"--mode={mode}", f"--warmup={warmup}"]
    argv += [f"--duration={duration}"]
    pids = server_pids or []
    cpu0 = {p: cpu_seconds([p]) for p in pids}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=warmup + duration + 60, check=False
    )
    by_pid = {p: cpu_seconds([p]) - cpu0[p] for p in pids}
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"] or not result["requests"]:
        raise RuntimeError(
            f"{result['errors']} failed requests of {result['requests'] + result['errors']}"
            f" to {url}; first: {result['first_error']}"
        )
    total = max(1, result["requests_total"])
    result["server_cpu_s"] = sum(by_pid.values())
    result["server_cpu_us_per_req"] = result["server_cpu_s"] / total * 1e6
    result["server_cpu_us_per_req_by_pid"] = {str(p): c / total * 1e6 for p, c in by_pid.items()}
    result["client_cpu_us_per_req"] = result["client_cpu_s"] / total * 1e6
    return result


# wrk's Lua hooks: POST the body with the headers; a response that is not 200 or lacks the
# expected text counts as an error; done() prints one JSON line (latencies in microseconds).
_WRK_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) errors = 0; first_error = nil end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, EXPECT, 1, true) then
    errors = errors + 1
    if first_error == nil then first_error = status .. ": " .. string.sub(body, 1, 200) end
  end
end
function done(summary, latency, requests)
  local errs, first = 0, nil
  for _, t in ipairs(threads) do
    errs = errs + t:get("errors")
    first = first or t:get("first_error")
  end
  io.write(string.format(
    '@@WRK {"requests": %d, "duration_us": %d, "errors": %d, "socket_errors": %d,'
    .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %f,'
    .. ' "first_error": %q}\\n',
    summary.requests, summary.duration, errs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, first or ""))
end
"""


def run_wrk(
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: bytes,
    clients: int = 4,
    warmup: float = 1.0,
    duration: float = 5.0,
    server_pids: list[int] | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    """One load test with wrk (C, epoll): ``clients`` keep-alive connections, one thread each,
    one request in flight per connection. A ``warmup`` run first (not counted), then the
    measured one; adds the CPU wrk and the server processes ``server_pids`` used meanwhile.
    The result has the keys of ``run_loadgen``'s."""
    import resource
    import subprocess
    import tempfile

    lua = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(body.decode())}",
            'wrk.headers["Content-Type"] = "application/json"',
            *(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()),
            f"EXPECT = {json.dumps(expect.decode())}",
            _WRK_LUA,
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        script = f.name
    try:

        def wrk(seconds: float) -> subprocess.CompletedProcess[str]:
            argv = ["wrk", f"-t{clients}", f"-c{clients}", f"-d{max(1, round(seconds))}s"]
            argv += ["--timeout", "10s", "-s", script, url]
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=seconds + 60, check=False
            )

        if warmup > 0:
            wrk(warmup)
        pids = server_pids or []
        cpu0 = {p: cpu_seconds([p]) for p in pids}
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = wrk(duration)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        by_pid = {p: cpu_seconds([p]) - cpu0[p] for p in pids}
    finally:
        os.unlink(script)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("@@WRK ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
        )
    w = json.loads(line[len("@@WRK ") :])
    errors = w["errors"] + w["socket_errors"]
    if errors or not w["requests"]:
        raise RuntimeError(
            f"{errors} failed requests of {w['requests']} to {url}; first: {w['first_error']}"
        )
    total = w["requests"]
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    server_cpu = sum(by_pid.values())
    return {
        "generator": "wrk",
        "clients": clients,
        "mode": "wrk",
        "requests": total,
        "requests_total": total,
        "rps": total / (w["duration_us"] / 1e6),
        "p50_ms": w["p50_us"] / 1e3,
        "p90_ms": w["p90_us"] / 1e3,
        "p99_ms": w["p99_us"] / 1e3,
        "p999_ms": w["p999_us"] / 1e3,
        "max_ms": w["max_us"] / 1e3,
        "mean_ms": w["mean_us"] / 1e3,
        "errors": 0,
        "client_cpu_s": client_cpu,
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_req": server_cpu / total * 1e6,
        "server_cpu_us_per_req_by_pid": {str(p): c / total * 1e6 for p, c in by_pid.items()},
        "client_cpu_us_per_req": client_cpu / total * 1e6,
    }


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the fields after "(comm)", from state on


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc; no psutil in MLflow's venv)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields and int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return sorted(out)


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by the processes ``pids`` (each itself only)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def memory(pid: int) -> dict[str, Any]:
    """``{"rss": bytes, "pss": bytes}`` of process ``pid``: VmRSS from /proc/<pid>/status (what
    psutil's ``memory_info().rss`` reads) and Pss from /proc/<pid>/smaps_rollup (shared pages
    split between the processes that share them)."""
    out: dict[str, Any] = {"pid": pid, "rss": None, "pss": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) * 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def time_calls(fn: Any, n: int = 2000) -> float:
    """Median microseconds of ``fn()`` over ``n`` calls (after 100 warm-up calls)."""
    import time

    for _ in range(100):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


# -- benchmark 17: concurrent clients of a tracking server ------------------------------------------
def workers(
    script: str, case: str, work: Path, params: dict[str, Any], n: int = 8
) -> list[dict[str, Any]]:
    """``n`` processes of ``case`` of ``script`` (a cases file, run by this interpreter),
    released together once all are ready (see :func:`ready_then_wait`); their results."""
    import subprocess
    import time

    go = work / f"go-{case}"
    go.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, script, case, str(work), json.dumps({**params, "go": str(go)})],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob(f"ready-{case}-*"))) < n:
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError(f"{case} workers did not get ready")
            time.sleep(0.01)
        go.write_text("go")
        out = []
        for p in procs:
            stdout, _ = p.communicate(timeout=600)
            lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_MARK)]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"a {case} worker failed (exit {p.returncode})")
            out.append(json.loads(lines[-1][len(RESULT_MARK) :]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in work.glob(f"ready-{case}-*"):
            f.unlink()


def ready_then_wait(work: Path, case: str, go: str) -> None:
    """A worker of :func:`workers` is ready (set up, connected): wait for the common start."""
    import time

    (work / f"ready-{case}-{os.getpid()}").write_text("")
    while not os.path.exists(go):
        time.sleep(0.001)


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' ``{start, end, n[, latencies]}`` as one figure: values/s over the common wall
    time, and p50/p99 of every request (ms)."""
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    out: dict[str, Any] = {"rate": sum(r["n"] for r in results) / wall, "wall_s": wall}
    lat = sorted(x for r in results for x in r.get("latencies", []))
    if lat:
        out["p99_ms"] = lat[int(0.99 * (len(lat) - 1))] * 1e3
        out["p50_ms"] = statistics.median(lat) * 1e3
        out["requests"] = len(lat)
    return out


def first_metric_times(
    script: str, work: Path, args: list[str], runs: int = 6, env: dict[str, str] | None = None
) -> list[float]:
    """Run ``script`` (which prints ``@@FIRST <seconds>`` once its first metric is stored,
    counted from the ``time.time()`` it gets as its first argument) ``runs`` times in new
    processes; the times."""
    import subprocess
    import time

    path = work / "first_metric.py"
    path.write_text(script)
    out = []
    for _ in range(runs):
        r = subprocess.run(
            [sys.executable, str(path), repr(time.time()), *args],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        out.append(float(r.stdout.split("@@FIRST", 1)[1].split()[0]))
    return out


# -- benchmark 18: the studio vs MLflow's UI server ------------------------------------------------
def time_http(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    reps: int = 5,
) -> dict[str, Any]:
    """Time one request ``reps + 1`` times, each on a new connection (a browser's first load):
    ``cold`` (the first: status, ``ttfb_ms`` when the status line and headers are in,
    ``full_ms`` when the whole body is, ``bytes``), then the medians of the other ``reps``.

    :raises RuntimeError: an answer that is not 200.
    """
    import http.client
    import time
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    times = []
    for _ in range(reps + 1):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        try:
            t0 = time.perf_counter()
            conn.request(method, path, body, headers or {})
            response = conn.getresponse()
            t1 = time.perf_counter()
            data = response.read()
            t2 = time.perf_counter()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {url} answered {response.status}: {data[:300]!r}")
        times.append({"ttfb_ms": (t1 - t0) * 1e3, "full_ms": (t2 - t0) * 1e3, "bytes": len(data)})
    warm = times[1:]
    return {
        "cold": times[0],
        "ttfb_ms": statistics.median(t["ttfb_ms"] for t in warm),
        "full_ms": statistics.median(t["full_ms"] for t in warm),
        "bytes": warm[-1]["bytes"],
    }


# -- benchmark 16: the same MLflow calls on both sides ---------------------------------------------
def mlflow_make_runs(client: Any, exp_id: str, n: int) -> float:
    """``n`` finished runs in ``exp_id`` through MLflow's client (whatever store it points at):
    one ``log_batch`` of 5 params, 3 metrics and 2 tags each (tag ``k=v`` on every tenth).
    Returns the seconds taken."""
    import random

    from mlflow.entities import Metric, Param, RunTag

    rnd = random.Random(42)
    t0 = time.perf_counter()
    for i in range(n):
        rid = client.create_run(exp_id).info.run_id
        ts = int(time.time() * 1000)
        client.log_batch(
            rid,
            metrics=[Metric(k, rnd.random(), ts, 0) for k in ("acc", "loss", "f1")],
            params=[Param(f"p{j}", f"value{j}") for j in range(5)],
            tags=[RunTag("k", "v" if i % 10 == 0 else "w"), RunTag("team", f"t{i % 7}")],
        )
        client.set_terminated(rid)
        if (i + 1) % 250 == 0:
            progress(f"{i + 1:,} runs, {time.perf_counter() - t0:.1f} s")
    return time.perf_counter() - t0


def mlflow_time_searches(mlflow: Any, exp_id: str, n: int) -> dict[str, float]:
    """Median seconds of 11 ``mlflow.search_runs`` over the runs of :func:`mlflow_make_runs`:
    all of them (``all_s``), and tag ``k=v`` sorted by ``metrics.acc`` (``filtered_s``)."""
    import statistics

    out = {}
    client = mlflow.MlflowClient()
    times = []
    for _ in range(11):
        t0 = time.perf_counter()
        found = client.search_runs([exp_id], max_results=n)
        times.append(time.perf_counter() - t0)
    if len(found) != n:
        raise RuntimeError(f"MlflowClient.search_runs: expected {n} runs, got {len(found)}")
    out["client_all_s"] = statistics.median(times)
    progress(f"MlflowClient.search_runs (all): median {out['client_all_s'] * 1e3:.1f} ms")
    # The bound of 16c/16e: MLflow's own client code turning the runs into mlflow.search_runs'
    # DataFrame, timed alone on these runs (the same code on either side).
    to_pandas = getattr(mlflow.tracking.fluent, "_runs_to_pandas", None)
    if to_pandas is not None:
        flt = client.search_runs(
            [exp_id], "tags.k = 'v'", max_results=n, order_by=["metrics.acc DESC"]
        )
        for key, runs in (("dataframe_all_s", found), ("dataframe_filtered_s", flt)):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                to_pandas(runs)
                times.append(time.perf_counter() - t0)
            out[key] = statistics.median(times)
            progress(f"MLflow's DataFrame of {len(runs)} runs alone: {out[key] * 1e3:.1f} ms")
    # The store's own search_runs, timed alone: what each side controls, without MLflow's
    # client code (the DataFrame of mlflow.search_runs is the same code on both sides).
    store = client._tracking_client.store
    for key, args, expect in (
        ("store_all", (None, 1, n, None, None), n),
        ("store_filtered", ("tags.k = 'v'", 1, n, ["metrics.acc DESC"], None), n // 10),
    ):
        times = []
        for _ in range(11):
            t0 = time.perf_counter()
            page = store.search_runs([exp_id], *args)
            times.append(time.perf_counter() - t0)
        if len(page) != expect:
            raise RuntimeError(f"store {key}: expected {expect} runs, got {len(page)}")
        out[f"{key}_s"] = statistics.median(times)
        progress(f"the store's search_runs ({key}): median {out[f'{key}_s'] * 1e3:.1f} ms")
    for key, kwargs, expect in (
        ("all", {}, n),
        ("filtered", {"filter_string": "tags.k = 'v'", "order_by": ["metrics.acc DESC"]}, n // 10),
    ):
        times = []
        for _ in range(11):
            t0 = time.perf_counter()
            df = mlflow.search_runs(experiment_ids=[exp_id], **kwargs)
            times.append(time.perf_counter() - t0)
        if len(df) != expect:
            raise RuntimeError(f"{key}: expected {expect} runs, got {len(df)}")
        if key == "filtered" and list(df["metrics.acc"]) != sorted(df["metrics.acc"], reverse=True):
            raise RuntimeError("search_runs did not sort by metrics.acc")
        out[f"{key}_s"] = statistics.median(times)
        progress(f"search_runs ({key}): median {out[f'{key}_s'] * 1e3:.1f} ms")
    return out


def mlflow_time_logging(mlflow: Any, calls: int) -> dict[str, float]:
    """Seconds for ``calls`` ``mlflow.log_metric`` (``fluent_s``), then ``calls``
    ``MlflowClient.log_metric`` on one client (``client_s``), in one run, each timed until a
    ``get_run`` has read the run back (mlws writes metrics in batches; the read flushes them).
    Checks that every value was stored."""
    names = [f"m{i}" for i in range(10)]
    with mlflow.start_run() as run:
        rid = run.info.run_id
        client = mlflow.MlflowClient()
        mlflow.log_metric("warm-up", 0.0)
        t0 = time.perf_counter()
        for i in range(calls):
            mlflow.log_metric(names[i % 10], i * 0.5, step=i // 10)
        client.get_run(rid)
        fluent = time.perf_counter() - t0
        progress(f"mlflow.log_metric: {calls:,} calls in {fluent:.2f} s")
        t0 = time.perf_counter()
        for i in range(calls):
            client.log_metric(rid, names[i % 10], i * 0.5, step=(calls + i) // 10)
        client.get_run(rid)
        direct = time.perf_counter() - t0
        progress(f"MlflowClient.log_metric: {calls:,} calls in {direct:.2f} s")
    stored = sum(len(client.get_metric_history(rid, m)) for m in names)
    if stored != 2 * calls:
        raise RuntimeError(f"expected {2 * calls} stored values, found {stored}")
    return {
        "fluent_s": fluent,
        "fluent_rate": calls / fluent,
        "client_s": direct,
        "client_rate": calls / direct,
    }


def mlflow_rest_case(client: Any, runs: int = 200, search_n: int = 1000) -> dict[str, Any]:
    """Benchmark 16f..: one stock ``MlflowClient`` over HTTP (whatever server its tracking URI
    names): ``log_metric`` ×2,000, one ``log_batch`` of 10,000 metrics (the client splits it
    into MLflow's requests of 1,000), ``runs`` runs made as :func:`mlflow_make_runs` makes
    them, then ``MlflowClient.search_runs`` over ``search_n`` runs (median of 5). Each figure
    is checked against what the server stored."""
    import statistics

    from mlflow.entities import Metric

    out: dict[str, Any] = {}
    exp_id = client.create_experiment("bench-mlflow-rest")
    rid = client.create_run(exp_id).info.run_id
    names = [f"m{i}" for i in range(10)]
    client.log_metric(rid, "warm-up", 0.0)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(2000):
        client.log_metric(rid, names[i % 10], i * 0.5, step=i // 10)
    out["log_metric_s"] = time.perf_counter() - t0
    # The client's own CPU (MLflow's code, requests) bounds 16f-16i whatever the server.
    out["log_metric_client_cpu_s"] = time.process_time() - c0
    out["log_metric_rate"] = 2000 / out["log_metric_s"]
    progress(f"log_metric x2,000: {out['log_metric_s']:.2f} s")
    ts = int(time.time() * 1000)
    batch = [Metric(names[i % 10], i * 0.25, ts, 1000 + i // 10) for i in range(10_000)]
    t0, c0 = time.perf_counter(), time.process_time()
    client.log_batch(rid, metrics=batch)
    out["log_batch_s"] = time.perf_counter() - t0
    out["log_batch_client_cpu_s"] = time.process_time() - c0
    progress(f"log_batch of 10,000: {out['log_batch_s']:.3f} s")
    stored = sum(len(client.get_metric_history(rid, m)) for m in names)
    if stored != 12_000:
        raise RuntimeError(f"expected 12,000 stored values, found {stored}")
    client.set_terminated(rid)
    search_exp = client.create_experiment("bench-mlflow-rest-search")
    out["runs_s"] = mlflow_make_runs(client, search_exp, runs)
    out["runs"] = runs
    progress(f"{runs} runs with params/tags: {out['runs_s']:.2f} s")
    mlflow_make_runs(client, search_exp, search_n - runs)
    times, cpus = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        found = client.search_runs([search_exp], max_results=search_n)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if len(found) != search_n:
        raise RuntimeError(f"search_runs: expected {search_n} runs, got {len(found)}")
    out["search_s"] = statistics.median(times)
    out["search_client_cpu_s"] = statistics.median(cpus)
    progress(f"search_runs over {search_n:,}: median {out['search_s'] * 1e3:.0f} ms")
    out.update(_raw_rest(client, rid, search_exp, search_n))
    return out


def _raw_rest(client: Any, rid: str, search_exp: str, search_n: int) -> dict[str, float]:
    """The server's share of 16g and 16i: the same requests MLflow's client sends, as JSON made
    beforehand, over one keep-alive session, the answer read and not parsed (MLflow's client
    turns every answer into protobuf messages, the same code against either server)."""
    import json
    import os
    import statistics

    import requests

    url = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow"
    session = requests.Session()
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    ts = int(time.time() * 1000)
    bodies = [
        json.dumps(
            {
                "run_id": rid,
                "metrics": [
                    {
                        "key": f"m{i % 10}",
                        "value": i * 0.125,
                        "timestamp": ts,
                        "step": 3000 + i // 10,
                    }
                    for i in range(part * 1000, (part + 1) * 1000)
                ],
            }
        )
        for part in range(10)
    ]
    headers = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    for body in bodies:
        r = session.post(url + "/runs/log-batch", data=body, headers=headers)
        r.raise_for_status()
    out = {"raw_log_batch_s": time.perf_counter() - t0}
    stored = sum(len(client.get_metric_history(rid, f"m{i}")) for i in range(10))
    if stored != 22_000:
        raise RuntimeError(f"raw log-batch: expected 22,000 stored values, found {stored}")
    progress(f"log-batch requests, 10,000 metrics, server only: {out['raw_log_batch_s']:.3f} s")
    search = json.dumps({"experiment_ids": [search_exp], "max_results": search_n})
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = session.post(url + "/runs/search", data=search, headers=headers)
        r.content  # noqa: B018 - the whole answer received
        times.append(time.perf_counter() - t0)
    if len(r.json()["runs"]) != search_n:
        raise RuntimeError(f"raw runs/search: expected {search_n} runs")
    out["raw_search_s"] = statistics.median(times)
    progress(f"runs/search over {search_n:,}, server only: {out['raw_search_s'] * 1e3:.0f} ms")
    return out
