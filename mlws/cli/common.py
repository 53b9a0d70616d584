"""What every ``mlws`` command module shares: opening the workspace, rendering tables and JSON,
parsing ``key=value`` arguments. Imports nothing heavy: ``mlws --help`` loads it."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

#: -h as well as --help, on every group and command.
CONTEXT = {"help_option_names": ["-h", "--help"]}


def open_workspace(ctx: click.Context) -> Any:
    """The workspace of this invocation (``-w`` or discovered), closed when the command ends."""
    from ..workspace import Workspace, find_workspace_path

    obj = ctx.find_root().obj or {}
    path, create = find_workspace_path(obj.get("workspace"))
    ws = Workspace._open_or_create(path) if create else Workspace(path)
    ctx.call_on_close(ws.close)
    return ws


def when(t: float | None) -> str:
    """An epoch time as local ``YYYY-MM-DD HH:MM:SS`` ("" for none)."""
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def duration(start: float | None, end: float | None) -> str:
    """How long from START to END (or to now, while it goes on), short and human."""
    if start is None:
        return ""
    secs = (end or time.time()) - start
    if secs < 60:
        return f"{secs:.1f}s"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def table(rows: list[list[Any]], headers: list[str]) -> None:
    """Print ROWS as a plain text table, or ``(none)``."""
    from tabulate import tabulate

    click.echo(
        tabulate(rows, headers=headers, tablefmt="simple", floatfmt=".4g") if rows else "(none)"
    )


def print_json(data: Any) -> None:
    """Print DATA as indented JSON (what ``--json`` prints)."""
    click.echo(json.dumps(data, indent=2, default=str))


def stdin_text(what: str) -> str:
    """Standard input as UTF-8 text; anything else is one ``Error:`` line, not a
    UnicodeDecodeError (or a value that cannot be stored)."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text stream put in place by the caller
        return sys.stdin.read()
    data = binary.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException(f"{what} on standard input is not UTF-8 text") from None


def key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` arguments as a dict; a pair without ``=`` or key is a usage error."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise click.BadParameter(f"expected key=value, got {p!r}")
        k, v = p.split("=", 1)
        if not k.strip():
            raise click.BadParameter(f"expected key=value with a non-empty key, got {p!r}")
        out[k] = v
    return out


#: What the library's long functions take as ``progress``: called with (done, total).
Progress = Callable[[int, int], None]


def on_terminal() -> bool:
    """Whether a person is watching: standard output and standard error are both terminals
    (a pipe, a file or ``$(...)`` gets no progress bar, so nothing to strip)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(
    label: str, *, as_json: bool = False, min_total: int = 0
) -> Iterator[Progress | None]:
    """A ``progress`` callback drawing a bar on standard error while the block runs, or None
    (no bar) with ``--json`` or when not :func:`on_terminal`. The bar appears at the first call,
    so work that turns out to be empty draws nothing, and ends its line when the block ends.
    ``min_total``: work of fewer items draws nothing (it is over before a bar could help)."""
    if as_json or not on_terminal():
        yield None
        return
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total < min_total:
            return
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
        bar.length = max(total, 1)  # a total may grow as work is found
        if done > bar.pos:
            bar.update(done - bar.pos)

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


class _SpinnerLog:
    """A text stream for a library's ``log`` (e.g. an environment build's commands and pip's
    output) that shares standard error with a spinner line: each write first clears the line,
    and the spinner redraws below it."""

    FRAMES = "|/-\\"

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.frame = 0
        self.lock = threading.Lock()

    def draw(self) -> None:
        with self.lock:
            elapsed = time.monotonic() - self.started
            char = self.FRAMES[self.frame % len(self.FRAMES)]
            sys.stderr.write(f"\r\x1b[K{char} {self.label} ({elapsed:.0f} s)")
            sys.stderr.flush()
            self.frame += 1

    def clear(self) -> None:
        with self.lock:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def write(self, text: str) -> int:
        with self.lock:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


@contextlib.contextmanager
def spinner(label: str) -> Iterator[Any]:
    """A spinner line with the time so far on standard error while the block runs (work with
    phases but no count, such as an environment build), on a terminal only; yields the stream
    to give the library as its ``log`` (standard error itself when there is no spinner)."""
    if not on_terminal():
        yield sys.stderr
        return
    log = _SpinnerLog(label)
    log.draw()  # at once: a build that is already there returns before the first tick
    stop = threading.Event()

    def spin() -> None:
        while not stop.wait(0.2):
            log.draw()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield log
    finally:
        stop.set()
        thread.join()
        log.clear()


def status_commands(
    group: click.Group,
    what: str,
    argument: str,
    find: Callable[[Any, str], Any],
    example: str,
    disabled_means: str,
) -> None:
    """Add ``enable ARGUMENT`` and ``disable ARGUMENT`` to GROUP for objects with ``enable()``,
    ``disable()``, ``name``, ``id`` and ``status`` (published pipelines, endpoints, schedules).
    FIND(workspace, value) gets the object; EXAMPLE is the value shown in the help;
    DISABLED_MEANS says what disabling does."""
    for verb in ("enable", "disable"):

        def command(ctx: click.Context, verb: str = verb, **kw: str) -> None:
            obj = find(open_workspace(ctx), kw[argument])
            obj.enable() if verb == "enable" else obj.disable()
            click.echo(f"{what.capitalize()} {obj.name!r} ({obj.id}) is {obj.status}")

        says = "it is Active again" if verb == "enable" else disabled_means
        text = (
            f"{verb.capitalize()} the {what} {argument.upper()}: {says}.\n\n"
            f"\b\nExample:\n  mlws {group.name} {verb} {example}"
        )
        group.command(verb, help=text)(click.argument(argument)(click.pass_context(command)))
