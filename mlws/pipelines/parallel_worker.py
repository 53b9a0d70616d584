"""One worker process of a ``ParallelRunStep`` (started by :mod:`.parallel_driver`), and v1's
``azureml_user.parallel_run.EntryScript`` that entry scripts use inside it.

A worker puts its standard output and error in ``logs/user/stdout/<node>/process<NNN>.stdout.txt``
and ``.stderr.txt`` of the step's run folder, sets ``sys.argv`` to the entry script and the
step's arguments (v1 scripts parse them in ``init()``), imports the entry script and calls its
``init()`` once; then, for each mini-batch the driver sends, ``run(mini_batch)``, answering with
the number of results and -- for ``append_row`` -- their lines (a DataFrame's rows with their
values separated by spaces, a list's elements). An exception in ``run`` is answered with its
traceback; the worker carries on with the next mini-batch. ``shutdown()`` is called, when the
script has one, as the driver closes the pipe.

Imports little (no pandas unless the script or the data needs it): the driver starts workers
from a fork server that has imported this module.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

#: This worker's settings once it is serving (what ``EntryScript`` reports).
_SETTINGS: dict[str, Any] = {}
LOGGER_NAME = "azureml_user.parallel_run"


class EntryScript:
    """v1's ``EntryScript`` (``from azureml_user.parallel_run import EntryScript``): inside a
    ParallelRunStep worker, ``logger`` writes to the worker's file under
    ``logs/user/entry_script_log/``; ``output_dir`` is the folder of the step's output,
    ``log_dir`` the run's ``logs/user``, ``working_dir`` the run's folder. Outside a worker the
    logger is a plain logger and the folders are the current one."""

    @property
    def logger(self) -> logging.Logger:
        """The entry script's logger."""
        return logging.getLogger(LOGGER_NAME)

    def get_logger(self) -> logging.Logger:
        """The entry script's logger (older v1 spelling)."""
        return self.logger

    @property
    def log_dir(self) -> str:
        """Where a script may put logs of its own (the run's ``logs/user``)."""
        return str(_SETTINGS.get("logDir") or os.getcwd())

    @property
    def working_dir(self) -> str:
        """The step run's working folder."""
        return str(_SETTINGS.get("workingDir") or os.getcwd())

    @property
    def output_dir(self) -> str:
        """The folder of the step's output (where ``summary_only`` scripts write)."""
        return str(_SETTINGS.get("outputDir") or os.getcwd())


def _redirect(path: str, fd: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(f, fd)
    os.close(f)


def _lines(result: Any, append: bool) -> tuple[int, str]:
    """``(number of results, their text)`` of what ``run`` returned."""
    if result is None:
        if append:
            raise TypeError("run(mini_batch) returned None; append_row needs a list or a DataFrame")
        return 0, ""
    if hasattr(result, "to_csv") and hasattr(result, "columns"):  # a DataFrame
        if not append:
            return len(result), ""
        return len(result), result.to_csv(sep=" ", header=False, index=False)
    if isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
        raise TypeError(
            f"run(mini_batch) returned {type(result).__name__}; it returns a list or a DataFrame"
        )
    if not append:
        return len(result), ""
    if type(result) is list and set(map(type, result)) == {str}:
        # Strings only (what ``Series.tolist()`` of text gives): one join, 4x faster than
        # formatting each one (the same text: ``f"{x}"`` of a ``str`` is itself).
        return len(result), "\n".join(result) + "\n"
    return len(result), "".join(f"{x}\n" for x in result)


def load_entry_script(settings: dict[str, Any], tag: str) -> tuple[Any, logging.Logger]:
    """Set up ``EntryScript`` (its settings, its logger writing to
    ``logs/user/entry_script_log/<tag>.log.txt``) and ``sys.argv``, import the entry script
    and call its ``init()``; returns the module and the logger. Raises what the script
    raises."""
    _SETTINGS.clear()
    _SETTINGS.update(settings)
    log_file = os.path.join(settings["logDir"], "entry_script_log", tag + ".log.txt")
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(
        logging.Formatter("%(asctime)s|%(levelname)s|%(process)d|%(name)s|%(message)s")
    )
    logger = logging.getLogger(LOGGER_NAME)
    for old in logger.handlers:
        old.close()
    logger.handlers[:] = [handler]
    logger.setLevel(settings["loggingLevel"])
    logger.propagate = False
    script = os.path.abspath(settings["entryScript"])
    sys.argv = [script, *settings["arguments"]]
    for folder in (os.path.dirname(script), settings["workingDir"]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(script))[0]
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if hasattr(module, "init"):
        module.init()
    return module, logger


def run_mini_batch(run: Callable[[Any], Any], batch: Any, append: bool) -> tuple[int, str, float]:
    """``run(batch)`` as ``(number of results, their text, seconds)``; raises what it raises."""
    t0 = time.perf_counter()
    count, text = _lines(run(batch), append)
    return count, text, time.perf_counter() - t0


def serve(
    conn: Connection,
    settings: dict[str, Any],
    source: Callable[[int], Any] | None = None,
) -> None:
    """The worker's life: set up logs and ``sys.argv``, import the entry script, ``init()``, then
    answer mini-batches until the pipe closes. A message is ``(index, mini_batch)``; with
    ``source`` (a forked worker: the driver's data is in its memory) the mini-batch is
    ``source(index)`` and the message carries ``None``. Messages sent: ``("ready", pid)``,
    ``("init-error", text)``, ``("ok", index, count, text, seconds)``, ``("error", index,
    text)``."""
    tag = f"{settings['node']}/process{settings['process']:03d}"
    base = os.path.join(settings["logDir"], "stdout", tag)
    _redirect(base + ".stdout.txt", 1)
    _redirect(base + ".stderr.txt", 2)
    append = settings["outputAction"] == "append_row"
    try:
        module, logger = load_entry_script(settings, tag)
        run = module.run
    except BaseException:
        text = traceback.format_exc()
        sys.stderr.write(text)
        conn.send(("init-error", text.strip().splitlines()[-1] if text.strip() else "init failed"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        index, batch = msg
        if batch is None and source is not None:
            batch = source(index)
        try:
            count, text, seconds = run_mini_batch(run, batch, append)
        except Exception:
            text = traceback.format_exc()
            logger.error("mini-batch %d failed:\n%s", index, text)
            conn.send(("error", index, text))
            continue
        conn.send(("ok", index, count, text, seconds))
    shutdown = getattr(module, "shutdown", None)
    if callable(shutdown):
        shutdown()
