"""Helpers shared by the benchmark cases; standard library only (both venvs import it)."""

from __future__ import annotations

import json
import os
import statistics
import sys
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
