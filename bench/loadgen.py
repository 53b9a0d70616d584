"""The load generator of benchmark 10, the same for every server: standard library only.

    python bench/loadgen.py URL BODY [--header 'Name: value'] [--expect TEXT] [--clients 4]
        [--mode process|thread] [--warmup 1] [--duration 5]

``--clients`` clients, each one keep-alive ``http.client.HTTPConnection`` (TCP_NODELAY, as
``http.client`` sets it) that POSTs BODY to URL back to back, one request in flight per client.
Requests that start during the first ``--warmup`` seconds are not counted; those that start in
the next ``--duration`` seconds are, each with its latency (request sent → whole response read).
A response that is not 200 or lacks ``--expect`` counts as an error (the client reconnects).

``--mode process`` (the default) runs each client in its own process, so the clients never wait
for one another on the GIL and a measured latency is the server's plus the client's own work,
not time spent queued behind another client thread; ``thread`` runs them as threads of one
process (for comparison). Prints one JSON object: requests/s, latency percentiles, errors and
the CPU time the clients used.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import sys
import threading
import time
import urllib.parse
from array import array
from typing import Any


def client(
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: bytes,
    start_at: float,
    count_from: float,
    end_at: float,
) -> dict[str, Any]:
    """One client's loop; returns its latencies (ms, as bytes of an ``array('d')``), errors and
    the first error seen. All times are ``time.time()`` instants shared by every client."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    latencies = array("d")
    done = 0  # every request made, warm-up included
    errors = 0
    first_error = None
    conn = None
    cpu0 = time.process_time()
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        begun = time.time()
        if begun >= end_at:
            break
        try:
            if conn is None:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            t0 = time.perf_counter()
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - t0
            ok = response.status == 200 and expect in data
            if not ok and first_error is None:
                first_error = f"{response.status}: {data[:200]!r}"
            if response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            elapsed, ok = 0.0, False
            if first_error is None:
                first_error = f"{type(e).__name__}: {e}"
            if conn is not None:
                conn.close()
            conn = None
        done += 1
        if begun >= count_from:
            if ok:
                latencies.append(elapsed * 1e3)
            else:
                errors += 1
    if conn is not None:
        conn.close()
    return {
        "latencies": latencies.tobytes(),
        "errors": errors,
        "done": done,
        "first_error": first_error,
        "cpu_s": time.process_time() - cpu0,
    }


def _in_process(queue: Any, *args: Any) -> None:
    queue.put(client(*args))


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0-100) of sorted ``values``."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: bytes = b"",
    clients: int = 4,
    mode: str = "process",
    warmup: float = 1.0,
    duration: float = 5.0,
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **headers}
    start_at = time.time() + (0.3 if mode == "process" else 0.05)  # every client starts then
    count_from = start_at + warmup
    end_at = count_from + duration
    args = (url, body, headers, expect, start_at, count_from, end_at)
    results: list[dict[str, Any]] = []
    if mode == "process":
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_in_process, args=(queue, *args)) for _ in range(clients)]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                results.append(queue.get(timeout=warmup + duration + 30))
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
    else:
        cpu0 = time.process_time()
        box: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=lambda: box.append(client(*args))) for _ in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=warmup + duration + 30)
        results = box
        # Threads share the process's CPU clock: count it once.
        cpu = time.process_time() - cpu0
        for r in results:
            r["cpu_s"] = cpu / max(1, len(results))
    if len(results) != clients:
        raise RuntimeError(f"only {len(results)} of {clients} clients reported back")
    lat: list[float] = []
    for r in results:
        a = array("d")
        a.frombytes(r["latencies"])
        lat.extend(a)
    lat.sort()
    errors = sum(r["errors"] for r in results)
    return {
        "clients": clients,
        "mode": mode,
        "warmup_s": warmup,
        "duration_s": duration,
        "requests": len(lat),
        "rps": len(lat) / duration,
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "p999_ms": percentile(lat, 99.9),
        "max_ms": lat[-1] if lat else float("nan"),
        "mean_ms": sum(lat) / len(lat) if lat else float("nan"),
        "errors": errors,
        "requests_total": sum(r["done"] for r in results),
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        # CPU the clients used over warm-up + measurement, per second of that window.
        "client_cpu_per_s": sum(r["cpu_s"] for r in results) / (warmup + duration),
        "per_client": [len(r["latencies"]) // 8 for r in results],
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--expect", default="", help="text every good response contains")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--mode", choices=("process", "thread"), default="process")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    result = run_load(
        args.url,
        args.body.encode(),
        headers,
        args.expect.encode(),
        clients=args.clients,
        mode=args.mode,
        warmup=args.warmup,
        duration=args.duration,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
