"""Runs that are Python callables: one submitted like a script, or many fanned out on joblib.

``FunctionRunConfig(func, args, kwargs)`` pickles the call (cloudpickle, which joblib uses too) into
a tiny source folder and submits it through the same runner as a script, so status, logs,
outputs, cancel and time limits behave exactly the same; the return value is stored as the run
file ``outputs/result.pkl`` (:func:`get_result`).

:func:`run_parallel` fans one callable out over many inputs as child runs of one parent, at most
``max_concurrent`` at a time, on joblib workers (loky processes locally). Inside each call,
``Run.get_context()`` is that child run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserErrorException

if TYPE_CHECKING:
    from .experiments import Experiment
    from .runs import Run

FUNCTION_RUN = "mlws.function"
PAYLOAD = "_mlws_call.pkl"
DRIVER = "_mlws_call.py"
RESULT = "outputs/result.pkl"

_DRIVER_SOURCE = """\
# Written by mlws: runs the pickled call in _mlws_call.pkl and stores its result.
from mlws.functions import _call_from_payload

_call_from_payload()
"""


def _dumps(obj: Any) -> bytes:
    import cloudpickle

    func = obj[0] if isinstance(obj, tuple) and obj else obj
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    # A function from the user's own code (a script, a notebook, a test file) may not be
    # importable where it runs: send it by value. Library functions go by reference.
    if module is not None and module.__name__ != "__main__":
        path = getattr(module, "__file__", None) or ""
        stdlib = sysconfig.get_paths()["stdlib"]
        if path and "site-packages" not in path and not path.startswith(stdlib):
            cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps(obj)


class FunctionRunConfig:
    """A call of ``func(*args, **kwargs)`` to submit as a run (``exp.submit(config)``)."""

    def __init__(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        compute_target: str = "local",
        environment: Any = None,
        max_run_duration_seconds: int | None = None,
    ) -> None:
        if not callable(func):
            raise UserErrorException(
                f"FunctionRunConfig needs a callable, got {type(func).__name__}"
            )
        self.func = func
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.compute_target = compute_target
        self.environment = environment
        self.max_run_duration_seconds = max_run_duration_seconds

    def _submit(self, experiment: Experiment, tags: dict[str, Any] | None = None, **_: Any) -> Run:
        from .runconfig import ScriptRunConfig

        payload = _dumps((self.func, self.args, self.kwargs))
        with tempfile.TemporaryDirectory(prefix="mlws-call-") as src:
            Path(src, PAYLOAD).write_bytes(payload)
            Path(src, DRIVER).write_text(_DRIVER_SOURCE)
            config = ScriptRunConfig(
                src,
                DRIVER,
                compute_target=self.compute_target,
                environment=self.environment,
                max_run_duration_seconds=self.max_run_duration_seconds,
            )
            run = experiment.submit(config, tags=tags)
        run.add_properties({"mlws.function": _qualname(self.func)})
        return run


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _call_from_payload() -> None:
    """Inside a submitted function run: load the call, run it, store the result."""
    with open(PAYLOAD, "rb") as f:
        func, args, kwargs = pickle.load(f)
    result = func(*args, **kwargs)
    os.makedirs("outputs", exist_ok=True)
    with open(RESULT, "wb") as f:
        f.write(_dumps(result))


def get_result(run: Run) -> Any:
    """The return value of a function run (or of a :func:`run_parallel` child)."""
    if RESULT not in run.get_file_names():
        raise UserErrorException(f"run {run.id} has no result (status {run.get_status()})")
    blob = run._stored_blob(RESULT)
    data = (
        run.workspace.blobs.read_bytes(blob) if blob else Path(run._live_file(RESULT)).read_bytes()  # type: ignore[arg-type]
    )
    return pickle.loads(data)


# -- fan-out on joblib workers ------------------------------------------------------------------
def run_parallel(
    experiment: Experiment,
    func: Callable[[Any], Any],
    inputs: Iterable[Any],
    *,
    max_concurrent: int | None = None,
    backend: str = "loky",
    tags: dict[str, Any] | None = None,
    display_name: str | None = None,
    compute_target: str | None = None,
) -> Run:
    """Call ``func(item)`` for every item, each as a tracked child run of one parent run,
    ``max_concurrent`` at a time on joblib workers (``backend``), or as Dask tasks when
    ``compute_target`` names a ``dask`` target. Returns the parent once all have ended:
    ``Completed`` when every child completed, else ``Failed`` saying how many did not.

    Inside ``func``, ``Run.get_context()`` is the child run (log metrics to it); what it
    returns is kept as the child's ``outputs/result.pkl`` (:func:`get_result`).
    """
    import joblib

    from .lifecycle import insert_run, process_start_time

    items = list(inputs)
    ws = experiment.workspace
    dask_config = None
    if compute_target is not None and compute_target != "local":
        from .compute import target_config

        kind, dask_config = target_config(ws, str(compute_target))
        if kind != "dask":
            raise UserErrorException(
                f"run_parallel runs callables locally or on a dask target; {compute_target!r}"
                f" is a {kind!r} target (submit a FunctionRunConfig to it instead)"
            )
    parent = experiment.start_logging(display_name=display_name or _qualname(func), tags=tags)
    parent.add_properties({"mlws.function": _qualname(func), "mlws.children": str(len(items))})
    me, my_start = os.getpid(), process_start_time(os.getpid())
    child_ids = []
    for i in range(len(items)):
        # Queued under this process: if it dies before a worker takes a child, the child is
        # reconciled to Failed instead of waiting forever.
        row = insert_run(
            ws,
            experiment.name,
            run_type=FUNCTION_RUN,
            status="Queued",
            parent_id=parent.id,
            # The target too: a Dask cluster stays up while it has active runs.
            fields={"pid": me, "pid_start": my_start, "target": compute_target},
            tags={"mlws.index": i},
        )
        child_ids.append(row["id"])
    payload = _dumps(func)
    n_jobs = max_concurrent or os.cpu_count() or 1
    with _cascade_cancel(ws, parent.id):
        if dask_config is not None:
            statuses = _on_dask(
                ws, str(compute_target), dask_config, payload, child_ids, items, n_jobs
            )
        else:
            statuses = joblib.Parallel(n_jobs=n_jobs, backend=backend)(
                joblib.delayed(_run_child)(str(ws.path), cid, payload, item)
                for cid, item in zip(child_ids, items, strict=True)
            )
    failed = sum(1 for s in statuses if s != "Completed")
    if failed:
        parent.fail(
            f"{failed} of {len(items)} child runs did not complete", error_code="ChildRunsFailed"
        )
    else:
        parent.complete()
    return parent


#: How often a fan-out (and each running call) looks for a cancel: the catalog read is ~50 us.
CANCEL_POLL_S = 0.1
_CANCELING = ("CancelRequested", "Canceled")


@contextlib.contextmanager
def _cascade_cancel(ws: Any, parent_id: str) -> Iterator[None]:
    """While the fan-out runs: once its parent is canceled (from any process), cancel every
    child that has not ended. A queued child is Canceled at once (no worker will start it); a
    running one gets CancelRequested, which its worker turns into an interrupt of the call
    (:func:`_interrupt_on_cancel`)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(CANCEL_POLL_S):
            status = ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (parent_id,))
            if status in _CANCELING:
                cancel_children(ws, parent_id)
                return

    thread = threading.Thread(target=watch, name=f"mlws-cancel-{parent_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (parent_id,)) in _CANCELING:
        cancel_children(ws, parent_id)  # canceled in the moment the last child ended


def cancel_children(ws: Any, parent_id: str) -> None:
    """Cancel every child of ``parent_id`` that has not ended: queued ones are Canceled, ones a
    worker runs are asked to stop (CancelRequested)."""
    from .lifecycle import set_status

    for r in ws.catalog.query(
        "SELECT id, status FROM runs WHERE parent_id = ? AND status NOT IN"
        " ('Completed', 'Failed', 'Canceled', 'CancelRequested')",
        (parent_id,),
    ):
        if r["status"] in ("NotStarted", "Queued"):
            set_status(ws, r["id"], "Canceled")
        # A child that moved on since the query (or was queued a moment ago): asked to stop.
        set_status(ws, r["id"], "CancelRequested")


class ChildRunCanceled(BaseException):
    """Raised inside a fan-out call whose child run was canceled. A ``BaseException``, like
    ``KeyboardInterrupt``: the call's own ``except Exception`` must not swallow the cancel."""


#: Interrupts a call in a worker's main thread, even inside a blocking system call.
CANCEL_SIGNAL = signal.SIGUSR2


@contextlib.contextmanager
def _interrupt_on_cancel(ws: Any, run_id: str) -> Iterator[None]:
    """Raise :class:`ChildRunCanceled` in this thread once ``run_id`` is canceled.

    In a process's main thread (loky workers, ``n_jobs=1``) a signal does it, which also breaks
    a blocking system call (a long ``sleep``, a socket read). In another thread (Dask's task
    threads) only an asynchronous exception can: it is raised at the call's next Python
    bytecode, so a call blocked inside C code stops when that returns."""
    import ctypes

    me = threading.current_thread()
    in_main = me is threading.main_thread()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def on_signal(_signum: int, _frame: Any) -> None:
        if state["fired"] and not state["done"]:
            raise ChildRunCanceled()

    previous = signal.signal(CANCEL_SIGNAL, on_signal) if in_main else None

    def watch() -> None:
        while True:
            with lock:
                if state["done"]:
                    return
            status = ws.catalog.scalar("SELECT status FROM runs WHERE id = ?", (run_id,))
            with lock:
                if state["done"]:
                    return
                if status in _CANCELING:
                    state["fired"] = True
                    if in_main:
                        os.kill(os.getpid(), CANCEL_SIGNAL)
                    else:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(me.ident or 0), ctypes.py_object(ChildRunCanceled)
                        )
                    return
            threading.Event().wait(CANCEL_POLL_S)

    watcher = threading.Thread(target=watch, name=f"mlws-watch-{run_id}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            if state["fired"] and not in_main:
                # Not raised yet (the call ended first): it must not hit whatever runs next.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(me.ident or 0), None)
        watcher.join()
        if previous is not None:
            signal.signal(CANCEL_SIGNAL, previous)


def _on_dask(
    ws: Any,
    target: str,
    config: dict[str, Any],
    payload: bytes,
    child_ids: list[str],
    items: list[Any],
    max_concurrent: int,
) -> list[str]:
    """The children as Dask tasks, at most ``max_concurrent`` submitted at a time."""
    from distributed import Client, as_completed

    from .compute.dask import scheduler_address
    from .lifecycle import set_status

    address = scheduler_address(ws, target, config)
    pending = iter(zip(child_ids, items, strict=True))
    statuses: list[str] = []
    with Client(address, timeout=30, set_as_default=False) as client:

        def submit_next() -> Any:
            for cid, item in pending:
                fut = client.submit(
                    _run_child,
                    str(ws.path),
                    cid,
                    payload,
                    item,
                    key=f"mlws-child-{cid}",
                    pure=False,
                )
                fut.run_id = cid  # type: ignore[attr-defined]
                return fut
            return None

        first = [f for f in (submit_next() for _ in range(max(1, max_concurrent))) if f]
        queue = as_completed(first, loop=client.loop)
        for fut in queue:
            try:
                statuses.append(fut.result())
            except Exception as e:  # noqa: BLE001 - a lost task fails its child, the rest go on
                set_status(
                    ws,
                    fut.run_id,
                    "Failed",
                    error={"code": "SystemError", "message": f"the Dask task failed: {e}"},
                )
                statuses.append("Failed")
            nxt = submit_next()
            if nxt is not None:
                queue.add(nxt)
    return statuses


_worker_workspaces: dict[str, Any] = {}
# One call at a time per process: a call's run context (``Run.get_context()``) and its working
# folder (the process's cwd, holding ``outputs/``) are process-wide. Threads of one worker
# (a Dask worker with threads_per_worker > 1) take turns.
_CHILD_LOCK = threading.Lock()


def _run_child(ws_path: str, run_id: str, payload: bytes, item: Any) -> str:
    """In a joblib worker or Dask task: run one call as the child run ``run_id``."""
    with _CHILD_LOCK:
        return _run_child_locked(ws_path, run_id, payload, item)


def _run_child_locked(ws_path: str, run_id: str, payload: bytes, item: Any) -> str:
    from .lifecycle import TERMINAL, process_start_time, set_status
    from .runs import Run
    from .workspace import Workspace

    ws = _worker_workspaces.get(ws_path)
    if ws is None:
        ws = _worker_workspaces[ws_path] = Workspace(ws_path)
    row = ws.catalog.one("SELECT status FROM runs WHERE id = ?", (run_id,))
    if row is None or row[0] in TERMINAL:
        return row[0] if row else "Failed"  # canceled while queued
    me = os.getpid()
    # The host with the pid: a worker on another machine is not reconciled from this one.
    if not set_status(
        ws, run_id, "Running", pid=me, pid_start=process_start_time(me), host=socket.gethostname()
    ):
        return "Canceled"
    from .v1 import add_to_sys_path

    add_to_sys_path()  # v1 code in the call imports azureml (this worker is not a run's script)
    run = ws.get_run(run_id)
    previous = Run._context
    Run._context = run
    cwd = os.getcwd()
    workdir = tempfile.mkdtemp(prefix=f"mlws-{run_id}-")
    try:
        os.chdir(workdir)
        func = pickle.loads(payload)
        try:
            with _interrupt_on_cancel(ws, run_id):
                result = func(item)
        except ChildRunCanceled:
            # Canceled (by itself or through its parent): what it wrote so far is kept.
            if os.path.isdir("outputs"):
                run.upload_folder("outputs", "outputs")
            run.cancel()  # flushes its metrics, then Canceled
            return "Canceled"
        os.makedirs("outputs", exist_ok=True)
        Path(RESULT).write_bytes(_dumps(result))
        run.upload_folder("outputs", "outputs")
        run.complete()
    except Exception as e:  # noqa: BLE001 - the child fails with the reason; the fan-out goes on
        run.upload_file("logs/traceback.txt", _bytes_io(traceback.format_exc()))
        run.fail(f"{type(e).__name__}: {e}", error_code="UserError")
    finally:
        Run._context = previous
        os.chdir(cwd)
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return run.get_status()


def _bytes_io(text: str) -> Any:
    import io

    return io.BytesIO(text.encode())
