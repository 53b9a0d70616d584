"""A ``ParallelRunStep`` whose ``compute_target`` is a ``dask`` target: its mini-batches are
Dask tasks spread over the cluster's workers.

The step's driver (:mod:`.parallel_driver`) runs on this machine as for ``local``; it reads
the input and cuts it into mini-batches as always, then connects to the target's scheduler
(starting mlws's local cluster for the target when it is not running) and submits one task
per mini-batch (:func:`mini_batch_task`), keeping ``node_count x process_count_per_node``
of them in flight (default: every thread of the cluster's workers). The first task a Dask
worker process gets for the step imports the entry script there and calls its ``init()``
(once per worker process, as v1 does once per process); later tasks reuse it. Answers are
taken in as they come and handled as the local pool's: retried up to ``run_max_try``,
counted against ``error_threshold``, appended to the output in mini-batch order.

A Dask worker must see the step's working folder at the same path (a cluster of this
machine does; an attached one needs a shared folder, as for any ``dask`` run). Its log is
``logs/user/entry_script_log/dask/<worker>.log.txt``; what the script prints goes to the Dask
worker's own output. Dask cannot stop a running task: a ``run()`` past
``run_invocation_timeout`` is counted as a failed try and its task is left to end by itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .parallel_driver import Driver

#: Seconds the driver waits for answers before it looks at timeouts and progress again.
WAIT_S = 0.5
#: In the Dask worker process: the loaded entry script of the step being served
#: (``key -> (module, logger, tag, init error)``); a new step's key replaces it.
_LOADED: dict[str, tuple[Any, Any, str, str | None]] = {}
_LOAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _environment(values: dict[str, str], drop: bool = False) -> Iterator[None]:
    """``os.environ`` with ``values`` set (``drop``: with those keys removed) for the block,
    then as it was: a Dask worker process serves other runs' tasks, a cluster this driver
    starts must not carry the step's run's variables."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if drop:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


class Where:
    """Where a mini-batch ran, as the driver's reports and error logs name it."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


def _worker_tag() -> str:
    """``dask/<worker name>`` of the Dask worker this runs in (a file name)."""
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = str(os.getpid())
    return "dask/" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _entry(key: str, settings: dict[str, Any]) -> tuple[Any, Any, str, str | None]:
    """The entry script loaded for step ``key`` in this worker process (``init()`` once)."""
    from . import parallel_worker

    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        for module, _logger, _tag, _error in _LOADED.values():
            shutdown = getattr(module, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - the earlier step is over either way
                    pass
        _LOADED.clear()
        tag = _worker_tag()
        try:
            # What the step's processes see: Run.get_context() in init() is the step's run.
            with _environment(settings["environment"]):
                module, logger = parallel_worker.load_entry_script(settings, tag)
            entry = (module, logger, tag, None)
        except BaseException:  # noqa: BLE001 - init() failing fails the step, with its reason
            text = traceback.format_exc().strip()
            entry = (None, None, tag, text.splitlines()[-1] if text else "init failed")
        _LOADED[key] = entry
        return entry


def mini_batch_task(key: str, settings: dict[str, Any], index: int, batch: Any) -> tuple[Any, ...]:
    """One mini-batch, as a Dask task: ``("ok", index, count, text, seconds, tag)``,
    ``("error", index, traceback, tag)`` or ``("init-error", index, reason, tag)``."""
    from . import parallel_worker

    module, logger, tag, error = _entry(key, settings)
    if error is not None:
        return ("init-error", index, error, tag)
    append = settings["outputAction"] == "append_row"
    try:
        with _environment(settings["environment"]):
            count, text, seconds = parallel_worker.run_mini_batch(module.run, batch, append)
    except Exception:
        text = traceback.format_exc()
        logger.error("mini-batch %d failed:\n%s", index, text)
        return ("error", index, text, tag)
    return ("ok", index, count, text, seconds, tag)


def run(driver: Driver, target: str, config: dict[str, Any]) -> None:
    """Run every mini-batch of ``driver`` on the Dask cluster of ``target``."""
    from distributed import Client

    from ..compute.dask import scheduler_address
    from ..keyvault import CHANNEL_ENV, ENV_KEY
    from ..rundata import PATHS_ENV
    from .parallel_driver import StepFailed

    # The step run's own variables (what its script was given), for the entry script there.
    own = ("MLWS_RUN_ID", "MLWS_WORKSPACE", PATHS_ENV)
    environment = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith(("AZUREML_", "AML_")) or k in own) and k not in (ENV_KEY, CHANNEL_ENV)
    }
    try:
        with _environment(environment, drop=True):  # a cluster started here: not the run's
            address = scheduler_address(driver.ws, target, config)
        driver.say(f"mini-batches go to the Dask cluster at {address}")
        client = Client(address, timeout=30, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise StepFailed(f"the Dask cluster of {target!r} cannot be reached: {e}") from None
    key = f"{driver.run.id}-{uuid.uuid4().hex[:8]}"
    settings = {
        **driver.worker_settings(0, 0),
        "entryScript": os.path.join(driver.cwd, driver.s["entryScript"]),
        "environment": environment,
    }
    per_node = driver.s["processCountPerNode"]
    if per_node:
        slots = driver.s["nodeCount"] * per_node
    else:
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        slots = max(1, sum(int(w.get("nthreads", 1)) for w in info))
    timeout = driver.s["runInvocationTimeout"]
    flying: dict[Any, tuple[int, float]] = {}
    # Ended tasks, put here by the client's event loop thread (Future.add_done_callback).
    ended: queue.Queue[Any] = queue.Queue()
    try:
        while driver.done + driver.failed < driver.total:
            while len(flying) < slots and driver.todo:
                index = driver.todo.popleft()
                driver.tries[index] += 1
                future = client.submit(
                    mini_batch_task,
                    key,
                    settings,
                    index,
                    driver.mini_batch(index),
                    pure=False,
                    key=f"prs-{key}-{index}-{driver.tries[index]}",
                )
                flying[future] = (index, time.monotonic())
                future.add_done_callback(ended.put)
            done = []
            try:
                done.append(ended.get(timeout=WAIT_S))
                while True:
                    done.append(ended.get_nowait())
            except queue.Empty:
                pass
            for future in done:
                if future in flying:  # not one given up on (timed out) already
                    index, _ = flying.pop(future)
                    answer(driver, future, index)
            now = time.monotonic()
            for future, (index, since) in list(flying.items()):
                if now - since > timeout:
                    del flying[future]
                    future.cancel()  # a running task is not stopped; its answer is dropped
                    driver.failure(
                        index, Where("dask/timeout"), f"run() took longer than {timeout:g} s"
                    )
            driver.progress()
    except StepFailed:
        for future in flying:
            future.cancel()
        raise
    finally:
        client.close()


def answer(driver: Driver, future: Any, index: int) -> None:
    """Take in what mini-batch ``index``'s task answered (or how it failed)."""
    from .parallel_driver import StepFailed

    try:
        msg = future.result()
    except Exception as e:  # noqa: BLE001 - a lost worker, a cancelled task: a failed try
        driver.failure(index, Where("dask/lost"), f"the Dask task failed: {type(e).__name__}: {e}")
        return
    kind, tag = msg[0], msg[-1]
    if kind == "init-error":
        raise StepFailed(f"init() of {driver.s['entryScript']} failed in {tag}: {msg[2]}")
    if kind == "error":
        driver.failure(index, Where(tag), msg[2])
        return
    _, _, count, text, seconds, _ = msg
    driver.done += 1
    driver.results_count += count
    driver.results[index] = text
    driver.report(index, count, "Succeeded", seconds, Where(tag))
    driver.flush()
