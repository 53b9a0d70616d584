"""The driver of a ``ParallelRunStep`` run: ``python -m mlws.pipelines.parallel_driver SETTINGS``
(the step's command; ``SETTINGS`` is :meth:`~mlws.pipelines.parallel.ParallelRunStep.settings`
as JSON). It runs in the step run's folder, as the run's script.

1. **Mini-batches.** The inputs are read as the run got them (``MLWS_DATA_PATHS``; a direct
   dataset where it is): a Tabular dataset as one DataFrame cut into runs of rows, files (a
   File dataset, ``PipelineData``) as sorted paths cut into lists.
2. **Workers.** ``node_count x process_count_per_node`` processes (:mod:`.parallel_worker`).
   On Linux they are forked from this process once the input is read, so they share its
   modules (pandas) and the data itself: a mini-batch is handed over as its number, nothing is
   pickled, and no second interpreter imports pandas. Elsewhere they come from a fork server
   that has imported the worker module (and pandas for tables) while the input is read, and
   get each mini-batch through their pipe. Each calls the entry script's ``init()`` once, then
   gets one mini-batch at a time.
3. **Failures.** A mini-batch whose ``run`` raises, whose worker dies, or that outlives
   ``run_invocation_timeout`` (its worker is killed and replaced) is tried again, up to
   ``run_max_try`` tries; then its items count against ``error_threshold`` (and the mini-batch
   against ``allowed_failed_count`` / ``allowed_failed_percent``). Past a threshold the workers
   are stopped and the step fails with one line; ``init()`` failing fails it at once.
4. **Output.** ``append_row`` results go to one file (the step's output ``PipelineData``, else
   ``outputs/``) in the order of the mini-batches, each written as soon as every earlier one
   has ended. A failed mini-batch writes nothing.
5. **Progress and logs** (v1's layout, under the run's ``logs/``): the metrics
   ``mini_batches_done`` / ``mini_batches_total`` / ``mini_batches_failed`` (logged about once
   a second), ``job_progress_overview.txt``, ``job_result.txt``,
   ``sys/job_report/processed_mini-batches.csv`` (one row per mini-batch: items, results,
   tries, status, seconds, process), ``user/error/<node>/process<NNN>.txt`` (each failed try's
   traceback), and each worker's ``user/stdout/...`` and ``user/entry_script_log/...``.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..errors import MlwsError

#: Default mini-batch sizes (v1's): 10 files, 1 MB of a table's source files.
DEFAULT_FILES = 10
DEFAULT_BYTES = 1024 * 1024
#: Seconds between two progress reports.
PROGRESS_EVERY_S = 1.0
#: Mini-batches sent to a worker ahead of its answers: the next one is waiting in its pipe
#: when it finishes one, so it never idles while this process writes results.
PREFETCH = 2
#: Set (in the step's environment variables), workers come from a fork server even on Linux:
#: the way other platforms run, kept testable here.
FORKSERVER_ENV = "MLWS_PRS_FORKSERVER"
#: What the driver imports before its first mini-batch: imported by a workspace's warm
#: launcher once the workspace runs ParallelRunSteps, so a driver forked from a supervisor
#: (``compute.warmstart``) finds them imported (~0.6 s of a step's start otherwise).
WARM = (
    "pandas",
    "pyarrow",
    "pyarrow.csv",
    "pyarrow.compute",
    "pyarrow.parquet",
    "mlws.runs",
    "mlws.rundata",
    "mlws.datasets",
    "mlws.tabular",
    "mlws.readers",
    "mlws.pipelines.data",
    "mlws.pipelines.parallel_worker",
)


class StepFailed(Exception):
    """The step cannot go on (``init()`` failed, a threshold was passed): its one-line reason."""


class Worker:
    """One worker process and what it is doing."""

    def __init__(self, number: int, node: int, proc: Any, conn: Any) -> None:
        self.number = number
        self.node = node
        self.proc = proc
        self.conn = conn
        self.ready = False
        #: The mini-batches sent to it, oldest (the one it works on) first.
        self.tasks: collections.deque[int] = collections.deque()
        #: When it began the oldest (monotonic).
        self.since = 0.0
        #: Told to stop (``None`` sent).
        self.released = False

    @property
    def tag(self) -> str:
        """``<node>/process<NNN>``, as its log files are named."""
        return f"{self.node}/process{self.number:03d}"


class Driver:
    """Runs one ParallelRunStep (see the module docstring)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from ..rundata import PATHS_ENV, expand_argument
        from ..runs import Run

        self.s = settings
        self.run = Run.get_context()
        self.ws = self.run.experiment.workspace
        if self.ws.remote is None:
            # The definition alone: get_details() also lists the run's files, its properties,
            # tags and lineage (~18 ms of the step's start at load 6, for nothing used here).
            row = self.ws.catalog.scalar("SELECT definition FROM runs WHERE id = ?", (self.run.id,))
            self.definition = json.loads(row) if row else {}
        else:
            self.definition = self.run.get_details()["runDefinition"]
        self.paths: dict[str, dict[str, str]] = json.loads(os.environ.get(PATHS_ENV) or "{}")
        self.definition["dataPaths"] = self.paths  # absolute paths already
        self.cwd = os.getcwd()
        self.logs = Path(self.cwd) / "logs"
        self.arguments = [
            expand_argument(a, self.definition, self.cwd)
            for a in self.definition.get("arguments") or []
        ]
        out = self.s["output"]
        outputs = self.paths.get("outputs", {})
        # The step's PipelineData (outputs/<name>), else the run's own outputs/.
        self.output_dir = outputs[out] if out in outputs else os.path.join(self.cwd, "outputs")
        os.makedirs(self.output_dir, exist_ok=True)
        self.workers: list[Worker] = []
        self.started_at = time.monotonic()
        #: Workers are forked from this process after the input is read (where fork exists).
        self.forking = (
            "fork" in multiprocessing.get_all_start_methods()
            and sys.platform.startswith("linux")
            and not os.environ.get(FORKSERVER_ENV)
        )
        #: Starts a worker (``number``, ``node``); an ssh pool has its own.
        self.spawner = self.spawn
        #: The workers' hosts when they are on an ``ssh`` target (``parallel_ssh.SshPool``).
        self.pool: Any = None
        #: Mini-batch ``index`` as it is sent to a worker (a forked one has it: None).
        self.payload = lambda index: None if self.forking else self.mini_batch(index)

    # -- the data ------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the inputs and cut them into mini-batches (``self.sizes``: items in each)."""
        from ..datasets import on_this_machine
        from ..rundata import rebuild_dataset

        specs = {i["name"]: i for i in self.definition.get("inputs") or []}
        given = self.paths.get("inputs", {})
        batch = self.s["miniBatch"]
        if self.s["inputKind"] == "tabular":
            import pandas as pd

            frames, nbytes = [], 0
            for name in self.s["inputs"]:
                if specs[name].get("tabular"):  # an upstream step's output read as a table
                    from .data import tabular_view

                    ds = tabular_view(given[name], specs[name]["tabular"])
                else:
                    ds = rebuild_dataset(self.ws, specs[name]["dataset"])
                frames.append(ds.to_pandas_dataframe())
                if "count" not in batch:  # mini-batches by size: the files' bytes per row
                    nbytes += sum(
                        os.path.getsize(src)
                        for src, _ in on_this_machine(ds.current_files()).values()
                    )
            table = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            rows = len(table)
            if "count" in batch:
                per = batch["count"]
            else:
                per = max(1, int(batch.get("bytes", DEFAULT_BYTES) * rows / max(nbytes, 1)))
            self.table = table
            self.bounds = [(a, min(a + per, rows)) for a in range(0, rows, per)]
            self.sizes = [b - a for a, b in self.bounds]
            self.say(f"{rows} rows in {len(self.bounds)} mini-batches of up to {per} rows")
            return
        files: list[str] = []
        for name in self.s["inputs"]:
            where = given.get(name)
            if where and os.path.isfile(where):
                files.append(where)
            elif where:
                files += sorted(str(p) for p in Path(where).rglob("*") if p.is_file())
            else:  # a direct input: the files where they are
                ds = rebuild_dataset(self.ws, specs[name]["dataset"])
                found = on_this_machine(ds.current_files())
                files += [found[n][0] for n in sorted(found)]
        per = batch.get("count", DEFAULT_FILES)
        self.file_batches = [files[a : a + per] for a in range(0, len(files), per)]
        self.sizes = [len(b) for b in self.file_batches]
        self.say(f"{len(files)} files in {len(self.file_batches)} mini-batches of up to {per}")

    def mini_batch(self, index: int) -> Any:
        """Mini-batch ``index`` as ``run`` gets it: a DataFrame, or a list of paths."""
        if self.s["inputKind"] == "tabular":
            a, b = self.bounds[index]
            return self.table.iloc[a:b]
        return self.file_batches[index]

    # -- the workers ---------------------------------------------------------------------------
    def start_pool(self, count: int) -> None:
        """Start ``count`` workers. Where ``fork`` exists (Linux) they are forked from this
        process once the input is read: they inherit the imported modules (pandas) and the
        table itself, so a mini-batch is sent as its number, not pickled. Elsewhere they come
        from a fork server that has the worker module (and pandas for tables) loaded, and get
        each mini-batch through their pipe."""
        if self.forking:
            self.ctx = multiprocessing.get_context("fork")
            # What is alive now (modules, the table) lives on in every worker: out of the
            # collector's sight, a worker's collections do not write to (and so copy) each of
            # those objects' pages shared with this process.
            import gc

            gc.freeze()
            # Arrow keeps the memory it freed after the read (mimalloc/jemalloc pages, dirty):
            # a worker's first allocations would reuse those pages, each write a copy-on-write
            # fault (~19,000 of them per step: ~75 MB copied). Handed back to the system, they
            # come to a worker as fresh zero pages instead.
            arrow = sys.modules.get("pyarrow")
            if arrow is not None:
                arrow.default_memory_pool().release_unused()
        else:
            preload = ["mlws.pipelines.parallel_worker"]
            if self.s["inputKind"] == "tabular":
                preload.append("pandas")
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(preload)
        per_node = self.s["processCountPerNode"] or os.cpu_count() or 1
        for n in range(count):
            self.workers.append(self.spawn(n, n // per_node))
        how = "forked from the driver" if self.forking else "started by a fork server"
        self.say(f"{count} workers {how}")

    def spawn(self, number: int, node: int) -> Worker:
        """Start worker ``number`` (its ``init()`` runs before it says it is ready)."""
        from . import parallel_worker

        mine, theirs = self.ctx.Pipe()
        settings = self.worker_settings(number, node)
        # A forked worker reads its mini-batches from this process's memory (copy-on-write).
        source = self.mini_batch if self.forking else None
        proc = self.ctx.Process(
            target=parallel_worker.serve,
            args=(theirs, settings, source),
            name=f"prs-worker-{number}",
        )
        proc.start()
        theirs.close()
        return Worker(number, node, proc, mine)

    def worker_settings(self, number: int, node: int) -> dict[str, Any]:
        """What a worker is told (:func:`.parallel_worker.load_entry_script` reads it)."""
        return {
            "node": node,
            "process": number,
            "logDir": str(self.logs / "user"),
            "workingDir": self.cwd,
            "outputDir": self.output_dir,
            "entryScript": self.s["entryScript"],
            "arguments": self.arguments,
            "outputAction": self.s["outputAction"],
            "loggingLevel": self.s["loggingLevel"],
        }

    def replace(self, w: Worker) -> Worker:
        """Kill ``w`` and start another in its place (its ``init()`` runs again)."""
        w.proc.kill()
        w.proc.join()
        w.conn.close()
        fresh = self.spawner(w.number, w.node)
        self.workers[self.workers.index(w)] = fresh
        return fresh

    def release_workers(self) -> None:
        """Tell every worker to stop (it calls ``shutdown()`` and exits); :meth:`stop_pool`
        waits for them."""
        for w in self.workers:
            if not w.released:
                w.released = True
                try:
                    w.conn.send(None)
                except OSError:
                    pass

    def stop_pool(self) -> None:
        """Close every worker's pipe (it calls ``shutdown()`` and exits); kill stragglers."""
        self.release_workers()
        deadline = time.monotonic() + 5
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
        if self.forking:  # they were this process's children (a fork server's otherwise)
            import resource

            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.say(f"the workers' CPU time: {ru.ru_utime + ru.ru_stime:.2f} s")

    # -- the loop ------------------------------------------------------------------------------
    def go(self) -> int:
        """Run every mini-batch; returns the exit code (0: within the thresholds)."""
        from ..compute import target_config

        count = self.s["nodeCount"] * (self.s["processCountPerNode"] or os.cpu_count() or 1)
        target = self.s.get("workersTarget") or "local"
        kind, config = target_config(self.ws, target)
        t0 = time.monotonic()
        self.say(f"reading the input ({kind} workers)")
        pool = None
        if kind == "ssh":
            from .parallel_ssh import SshPool

            pool = self.pool = SshPool(self, target, config)
            self.load()
            try:
                pool.prepare()
                self.spawner, self.payload = pool.spawn, pool.payload
                per_node = self.s["processCountPerNode"] or os.cpu_count() or 1
                for n in range(count):
                    self.workers.append(pool.spawn(n, n // per_node))
            except BaseException:
                pool.stop()
                pool.finish()
                raise
        elif kind != "local":
            self.load()  # the workers are elsewhere (parallel_dask)
        elif self.forking:
            # Read first, then fork: the workers share the table and pandas with this process
            # (no import of pandas in a fork server, no mini-batch pickled).
            self.load()
            self.start_pool(count)
        else:
            # The fork server imports while the data is read here.
            self.start_pool(count)
            try:
                self.load()
            except BaseException:
                self.stop_pool()
                raise
        self.say(f"input read in {time.monotonic() - t0:.2f} s")
        total = len(self.sizes)
        self.total = total
        self.tries = [0] * total
        self.todo: collections.deque[int] = collections.deque(range(total))
        self.results: dict[int, str | None] = {}
        self.next_out = 0
        self.done = self.failed = self.failed_items = self.results_count = 0
        self.last_report = 0.0
        self.open_files()
        self.run.log("mini_batches_total", total)
        try:
            if total:
                t0 = time.monotonic()
                if kind == "dask":
                    from . import parallel_dask

                    parallel_dask.run(self, target, config)
                else:
                    if pool is not None:  # every host serves before the first mini-batch
                        pool.await_ready()
                    self.loop()
                self.say(f"mini-batches done in {time.monotonic() - t0:.2f} s")
            if pool is None:
                # Told to stop now, the workers run their shutdown() and exit while this
                # process writes its report (their exits took 10-20 ms).
                self.release_workers()
                self.finish(None)
        except StepFailed as e:
            self.finish(str(e))
            raise
        finally:
            if pool is not None:
                pool.stop()
                pool.finish()
            elif self.workers:
                self.stop_pool()
        if pool is not None:
            self.finish(None)
        return 0

    def loop(self) -> None:
        """Hand out mini-batches and take in answers until every one has ended."""
        timeout = self.s["runInvocationTimeout"]
        while self.done + self.failed < self.total:
            for w in self.workers:
                while w.ready and len(w.tasks) < PREFETCH and self.todo:
                    index = self.todo.popleft()
                    self.tries[index] += 1
                    if not w.tasks:
                        w.since = time.monotonic()
                    w.tasks.append(index)
                    w.conn.send((index, self.payload(index)))
            now = time.monotonic()
            busy = [w.since + timeout - now for w in self.workers if w.tasks]
            waiting = max(0.0, min(busy)) if busy else None
            ready = set(wait([w.conn for w in self.workers], waiting))
            for w in list(self.workers):
                if w.conn in ready:
                    self.answer(w)
            now = time.monotonic()
            for w in list(self.workers):
                if w.tasks and now - w.since > timeout:
                    index = self.drop(w)
                    self.failure(index, w, f"run() took longer than {timeout:g} s: worker killed")
            self.progress()

    def answer(self, w: Worker) -> None:
        """Take in what worker ``w`` sent (or its death)."""
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            w.proc.join(1)
            code = w.proc.exitcode
            if not w.ready:
                raise StepFailed(f"worker {w.tag} died while starting (exit code {code})") from None
            index = self.drop(w)
            if index is not None:
                self.failure(index, w, f"the worker process died (exit code {code})")
            return
        kind = msg[0]
        if kind == "beat":  # a worker on a host keeping its idle session open
            return
        if kind == "changes":  # what a worker on a host recorded in the run there
            self.pool.apply(msg[1])
            return
        if kind == "host-error":  # a worker's host cannot take this step's mini-batches
            raise StepFailed(msg[1])
        if kind == "model?":  # a worker on a host asks for a registered model
            self.pool.send_model(w, msg[1], msg[2])
            return
        if kind == "ready":
            w.ready = True
            if all(x.ready for x in self.workers):
                took = time.monotonic() - self.started_at
                self.say(f"{len(self.workers)} workers ready (init() done) after {took:.2f} s")
        elif kind == "init-error":
            raise StepFailed(f"init() of {self.s['entryScript']} failed in {w.tag}: {msg[1]}")
        elif kind == "ok":
            _, index, count, text, seconds = msg
            w.tasks.popleft()
            w.since = time.monotonic()
            self.done += 1
            self.results_count += count
            self.results[index] = text
            self.report(index, count, "Succeeded", seconds, w)
            self.flush()
        else:
            _, index, text = msg
            w.tasks.popleft()
            w.since = time.monotonic()
            self.failure(index, w, text)

    def drop(self, w: Worker) -> int | None:
        """Replace worker ``w`` (hung or dead); returns the mini-batch it was working on. The
        ones waiting in its pipe go back to the front of the queue, their try not counted."""
        index = w.tasks.popleft() if w.tasks else None
        for waiting in reversed(w.tasks):
            self.tries[waiting] -= 1
            self.todo.appendleft(waiting)
        self.replace(w)
        return index

    def failure(self, index: int, w: Worker, text: str) -> None:
        """A try of mini-batch ``index`` failed: try again, or count it against the
        thresholds."""
        tries = self.tries[index]
        self.error_log(w, f"mini-batch {index} (try {tries} of {self.s['runMaxTry']}):\n{text}")
        if tries < self.s["runMaxTry"]:
            self.todo.appendleft(index)
            return
        self.failed += 1
        self.failed_items += self.sizes[index]
        self.results[index] = None
        self.report(index, 0, "Failed", None, w)
        self.flush()
        last = text.strip().splitlines()[-1] if text.strip() else "failed"
        self.say(f"mini-batch {index} failed {tries} times: {last}")
        why = self.past_threshold()
        if why:
            raise StepFailed(f"{why}; last: mini-batch {index}: {last} (see logs/user/error)")

    def past_threshold(self) -> str | None:
        """Why the failures so far end the step, or None."""
        s = self.s
        if s["errorThreshold"] != -1 and self.failed_items > s["errorThreshold"]:
            return (
                f"{self.failed_items} items failed in {self.failed} mini-batches, more than"
                f" error_threshold={s['errorThreshold']}"
            )
        allowed = s["allowedFailedCount"]
        if allowed is not None and allowed != -1 and self.failed > allowed:
            return f"{self.failed} mini-batches failed, more than allowed_failed_count={allowed}"
        percent = s["allowedFailedPercent"]
        if percent is not None and 100.0 * self.failed / self.total > percent:
            return (
                f"{self.failed} of {self.total} mini-batches failed, more than"
                f" allowed_failed_percent={percent:g}"
            )
        return None

    # -- what is written -----------------------------------------------------------------------
    def open_files(self) -> None:
        """The output file and the report's header."""
        self.out = None
        if self.s["outputAction"] == "append_row":
            self.out = open(os.path.join(self.output_dir, self.s["appendRowFileName"]), "w")
        report = self.logs / "sys" / "job_report" / "processed_mini-batches.csv"
        report.parent.mkdir(parents=True, exist_ok=True)
        self.report_file = open(report, "w")
        self.report_file.write("mini_batch,items,results,tries,status,seconds,process\n")

    def flush(self) -> None:
        """Append the results of the mini-batches that are next in order."""
        while self.next_out in self.results:
            text = self.results.pop(self.next_out)
            if text and self.out is not None:
                self.out.write(text)
            self.next_out += 1

    def report(self, index: int, count: int, status: str, seconds: float | None, w: Worker) -> None:
        """One row of ``processed_mini-batches.csv``."""
        took = "" if seconds is None else f"{seconds:.4f}"
        self.report_file.write(
            f"{index},{self.sizes[index]},{count},{self.tries[index]},{status},{took},{w.tag}\n"
        )

    def error_log(self, w: Worker, text: str) -> None:
        """Append a failed try's text to the worker's error log."""
        path = self.logs / "user" / "error" / f"{w.tag}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text.rstrip("\n") + "\n")

    def progress(self, final: bool = False) -> None:
        """Report progress (metrics and ``job_progress_overview.txt``) about once a second."""
        now = time.monotonic()
        if not final and now - self.last_report < PROGRESS_EVERY_S:
            return
        self.last_report = now
        self.run.log("mini_batches_done", self.done)
        self.run.log("mini_batches_failed", self.failed)
        with open(self.logs / "job_progress_overview.txt", "a") as f:
            f.write(
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {self.done} mini batches processed"
                f" out of {self.total}, {self.failed} failed\n"
            )

    def finish(self, failure: str | None) -> None:
        """Close the files; write ``job_result.txt``; the last progress."""
        if self.out is not None:
            self.out.close()
        self.report_file.close()
        cpu = os.times()  # what this process took (imports, the read, hand-outs), not workers'
        self.say(f"the driver's own CPU time: {cpu.user + cpu.system:.2f} s")
        self.progress(final=True)
        self.run.log("items_failed", self.failed_items)
        took = time.monotonic() - self.started_at
        line = (
            f"{self.done} of {self.total} mini-batches succeeded, {self.failed} failed"
            f" ({self.failed_items} items); {self.results_count} results in {took:.2f} s"
        )
        (self.logs / "job_result.txt").write_text(line + "\n" + (failure or "") + "\n")
        self.say(line)

    def say(self, text: str) -> None:
        """A line of the run's driver log."""
        say(text)


def say(text: str) -> None:
    """A line of the driver log, with the time of day to the millisecond (a step's phases take
    tenths of a second: the times show where it went)."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    print(f"{stamp} ParallelRunStep: {text}", flush=True)


def main(argv: list[str]) -> int:
    """``python -m mlws.pipelines.parallel_driver SETTINGS``; the exit code of the step."""
    from ..compute.warmstart import started_warm

    say("started warm (forked from its supervisor)" if started_warm() else "started")
    try:
        return Driver(json.loads(argv[0])).go()
    except (StepFailed, MlwsError) as e:
        print(f"ParallelRunStep failed: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
