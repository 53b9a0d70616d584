"""The remote end of an ``ssh`` run: ``python -m mlws.compute.agent RUN_DIR``.

The supervising process starts it over ssh in the run's folder (rsync'd there already) and writes
one JSON line of instructions to its stdin: the run's catalog rows and its definition. The agent
makes the run's remote catalog (``compute.remote_catalog``), builds the managed environment if there
is one, starts the script in its own process group and streams JSON lines on stdout:

    {"t": "hello", "protocol": 1, "version": ..}  first, before the instructions are read
                                                (with "missing": "..." when it cannot run)
    {"t": "build", "row": {..}}                 this run built the environment (its catalog row)
    {"t": "interpreter", "path": ".."}          the environment is ready
    {"t": "started", "pid": 123, "host": "h"}   the script runs
    {"t": "log", "data": "..."}                 new driver-log text
    {"t": "changes", "changes": [...]}          remote-catalog changes (metrics, tags, child runs, ...)
    {"t": "secrets", "id": 1, "names": [..]}    the script asks for key-vault secrets
    {"t": "model", "id": 1, "name": .., "version": .., "have": [..]}  the script asks for a
                                                registered model (``hostmodels``)
    {"t": "files", "tar": "<base64>"}           just before "exit": outputs/, logs/ and the
                                                replica's blobs as a tar, when small
                                                (:data:`INLINE_MAX_BYTES`): no rsync home then
    {"t": "exit", "rc": 0}                      the script ended (rc < 0: killed by a signal)
    {"t": "beat"}                               after a second of silence, from "hello" on
                                                (keeps the session: ``sshhost.SESSION_HEARTBEAT_S``)
    {"t": "error", "message": "...", "trace": ".."}  the agent could not run the script (the
                                                run's folder stays until ``done``: logs come home)

Lines on stdin: ``cancel`` (SIGTERM to the group, SIGKILL after the grace period), ``kill``,
``done`` (outputs are home: remove the run's folder), and ``{"id": 1, "values": {..}}`` /
``{"id": 1, "error": ".."}`` answering a secrets request. Secrets never rest on the host: the
script's ``get_secret`` asks through a pipe pair (``MLWS_SECRETS_FDS``), the agent asks home.
End of stdin means the supervisor or the connection is gone: the script's group is killed, so
nothing runs on the host that nobody will collect; the run folder is kept (outputs may still be
fetched) unless ``done`` came.

``python -m mlws.compute.agent --recover RUN_DIR AFTER [kill]`` is how a supervisor whose session
dropped (a network stall) follows the run from a new connection: one JSON line with the script's
exit status once it ended (``.mlws-exit.json``, written the moment it ends), whether the agent
still runs, and the replica's changes after id ``AFTER`` (``changes`` events carry ``upto``).
"""

from __future__ import annotations

import codecs
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPLICA = ".mlws-replica"
#: Written in the run's folder when the script ends: its exit status, for ``--recover``.
EXIT_FILE = ".mlws-exit.json"
#: The agent's protocol with the supervising process; a host whose mlws speaks another one gets
#: this mlws shipped. 2: the "files" event.
PROTOCOL = 2
#: What travels in the agent's session itself (the working folder in the instructions, outputs
#: and logs back in "files") instead of by rsync: the copy home of a small run's outputs and logs
#: was ~220 ms of a ~1.1 s run here (an ssh session, rsync at both ends), on every run's path.
INLINE_MAX_BYTES = 4 << 20
INLINE_MAX_FILES = 1000
#: What the supervisor copies home after a run (``logs/`` without its own logs of the session).
HOME_FOLDERS = ("outputs", "logs", f"{REPLICA}/blobs")
#: What a run on a host imports (mlws imports most of these lazily, so check them up front).
REQUIRED = (
    "sqlite_utils",
    "filelock",
    "psutil",
    "cryptography.fernet",
    "yaml",
    "pathspec",
    "cloudpickle",
)


def check() -> None:
    """Find everything a run needs here (without importing it: the agent's start is on every
    run's path); raises ImportError naming what is missing."""
    import importlib.util

    for name in REQUIRED:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")


class _Out:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def send(self, **msg: Any) -> None:
        data = (json.dumps(msg, default=str) + "\n").encode()
        with self._lock:
            self._last = time.monotonic()
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except OSError:
                pass  # the session is gone: stdin's end tells the agent, and the run's folder stays

    def keep_alive(self, every: float) -> None:
        """From now on, send ``{"t": "beat"}`` after ``every`` seconds of silence (a silent
        script, an environment build, the wait for "done"), so a host's sshd or a firewall
        that ends idle sessions does not end this one; the supervisor drops beats."""

        def beat() -> None:
            while True:
                time.sleep(max(0.05, self._last + every - time.monotonic()))
                if time.monotonic() - self._last >= every:
                    self.send(t="beat")

        threading.Thread(target=beat, name="mlws-agent-beat", daemon=True).start()


def _serve_secrets(
    out: _Out, answers: dict[int, queue.Queue[dict[str, Any]]], run_dir: Path
) -> tuple[int, int]:
    """The script's way to the key vault at home: a pipe pair (its ends are returned, to pass to
    the script). Each request goes home as a ``secrets`` event and waits for its answer; a
    request for a registered model goes as a ``model`` event (:mod:`.hostmodels`)."""
    from . import hostmodels

    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()

    def serve() -> None:
        n = 0
        with os.fdopen(req_r, "rb") as requests, os.fdopen(resp_w, "wb") as responses:
            for line in requests:
                n += 1
                answers[n] = queue.Queue()
                try:
                    request = json.loads(line)
                except ValueError:
                    request = {}
                model = request.get("model") if isinstance(request, dict) else None
                if model is not None:
                    have = hostmodels.held(run_dir)
                    version = request.get("version")
                    listing = bool(request.get("list"))  # records only (hostmodels.home_rows)
                    out.send(t="model", id=n, name=model, version=version, have=have, list=listing)
                else:
                    try:
                        names = [str(x) for x in request["names"]]
                    except (KeyError, TypeError):
                        names = []
                    out.send(t="secrets", id=n, names=names)
                msg = answers[n].get()
                answers.pop(n, None)
                msg.pop("id", None)
                if model is not None:
                    msg = hostmodels.place(run_dir, msg)
                responses.write((json.dumps(msg) + "\n").encode())
                responses.flush()

    threading.Thread(target=serve, name="mlws-agent-secrets", daemon=True).start()
    return req_w, resp_r


def _pump(
    out: _Out, ws: Any, log_path: Path, state: dict[str, Any], decoder: codecs.IncrementalDecoder
) -> None:
    """Send new driver-log text and new remote-catalog changes."""
    from . import remote_catalog

    try:
        with open(log_path, "rb") as f:
            f.seek(state["log_offset"])
            data = f.read(1 << 20)
    except OSError:
        data = b""
    if data:
        state["log_offset"] += len(data)
        text = decoder.decode(data)
        if text:
            out.send(t="log", data=text)
    while True:
        last, changes = remote_catalog.read_changes(ws.catalog.conn, state["change_id"])
        if not changes:
            break
        state["change_id"] = last
        out.send(t="changes", changes=changes, upto=last)


def pack(
    run_dir: Path, tops: tuple[str, ...] = HOME_FOLDERS, skip: tuple[str, ...] = ()
) -> bytes | None:
    """The folders ``tops`` of ``run_dir`` (``("",)``: all of it) but the paths ``skip`` as a
    gzip'd tar of regular files and folders (modes and times kept), or ``None`` when they are
    over :data:`INLINE_MAX_BYTES` or :data:`INLINE_MAX_FILES`, or hold anything else (a link:
    then rsync copies them, with its rules for links, as before)."""
    import io
    import tarfile

    entries: list[tuple[Path, str]] = []
    size = 0
    for top in tops:
        base = run_dir / top if top else run_dir
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                rel = p.relative_to(run_dir).as_posix()
                if rel in skip:
                    continue
                if p.is_symlink() or not (p.is_file() or p.is_dir()):
                    return None
                if p.is_file():
                    size += p.stat().st_size
                entries.append((p, rel))
                if size > INLINE_MAX_BYTES or len(entries) > INLINE_MAX_FILES:
                    return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for p, name in entries:
            tar.add(str(p), arcname=name, recursive=False)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """``python -m mlws.compute.agent RUN_DIR`` (or ``--recover RUN_DIR AFTER [kill]``): run the
    script of the run in ``RUN_DIR`` as the module docstring describes. Returns the process's
    exit status: 2 for bad arguments, 1 when the run could not begin or the agent failed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) in (3, 4) and args[0] == "--recover":
        return _recover(Path(args[1]).resolve(), int(args[2]), kill=args[3:] == ["kill"])
    if len(args) != 1:
        print("usage: python -m mlws.compute.agent RUN_DIR", file=sys.stderr)
        return 2
    out = _Out()
    run_dir = Path(args[0]).resolve()
    # Say who answers first: the supervising process ships another mlws when this one cannot
    # run the script (an older version, a missing dependency).
    import mlws

    hello: dict[str, Any] = {
        "protocol": PROTOCOL,
        "version": mlws.__version__,
        "file": mlws.__file__,
    }
    package = Path(mlws.__file__).resolve().parent
    if not package.parent.name.startswith(f"mlws-{mlws.__version__}-"):
        # Not a shipped copy (whose folder is named by its hash): another checkout or install of
        # this version may hold other code, so say which (~20 ms); the supervisor ships on a
        # mismatch, as its own check before shipping does.
        from .shipping import package_hash

        hello["hash"] = package_hash(package)
    state: dict[str, Any] = {"started": False}
    try:
        # Inside the try: if the session is gone already (canceled at once), the folder the
        # snapshot was copied into still goes.
        try:
            check()
        except ImportError as e:
            out.send(t="hello", missing=f"{type(e).__name__}: {e}", **hello)
            return 0
        out.send(t="hello", **hello)
        from ..sshhost import SESSION_HEARTBEAT_S

        out.keep_alive(SESSION_HEARTBEAT_S)  # after "hello": the supervisor reads it first
        line = sys.stdin.readline()
        if not line:
            return 1  # the supervisor went away (or canceled) before the run began
        spec = json.loads(line)
        try:
            return _run(out, run_dir, spec, state)
        except Exception as e:  # noqa: BLE001 - the supervisor records the reason
            import traceback

            out.send(t="error", message=f"{type(e).__name__}: {e}", trace=traceback.format_exc())
            # The supervisor copies the logs home (a failed build's environment.log), then
            # says "done"; only then does the folder go.
            flags = state.get("flags")
            while isinstance(flags, dict) and not (flags["done"] or flags["eof"]):
                time.sleep(0.02)
            return 1
    finally:
        if not state["started"]:  # nothing of the script's to keep: leave no folder behind
            _remove_run_folder(run_dir)


def _recover(run_dir: Path, after: int, kill: bool = False) -> int:
    """``--recover RUN_DIR AFTER [kill]``: what a supervisor whose session dropped (a network
    stall) needs to finish the run from a new connection, as one JSON line: ``exit`` (the
    script's exit status once it ended, and ``endedBy``), ``agent`` (whether the agent still
    runs), the replica's changes after id ``after`` (``upto``: the last id), and ``folder``
    (False when the run's folder is gone). ``kill``: end the script's group first (a cancel)."""
    import sqlite3

    from ..processes import process_alive
    from . import remote_catalog

    info: dict[str, Any] = {"folder": run_dir.is_dir(), "exit": None, "agent": False}
    info.update(upto=after, changes=[])
    # The exit file first: once it is there, every change the script made is in the replica.
    try:
        info.update(json.loads((run_dir / EXIT_FILE).read_text()))
    except (OSError, ValueError):
        pass
    db = run_dir / REPLICA / "mlws.db"
    if db.is_file():
        conn = sqlite3.connect(str(db), timeout=30)
        try:
            me = conn.execute(
                "SELECT supervisor_pid, supervisor_start, pid, pid_start FROM runs"
                " WHERE working_dir = ?",
                (str(run_dir),),
            ).fetchone()
            if me is not None:
                info["agent"] = process_alive(me[0], me[1])
                if kill and me[2] and process_alive(me[2], me[3]):
                    try:
                        os.killpg(me[2], signal.SIGKILL)
                    except OSError:
                        pass
            while True:
                last, changes = remote_catalog.read_changes(conn, info["upto"])
                if not changes:
                    break
                info["upto"] = last
                info["changes"] += changes
        finally:
            conn.close()
    sys.stdout.write(json.dumps(info, default=str) + "\n")
    return 0


def _unpack_snapshot(data: str, run_dir: Path) -> None:
    """Write the working folder the supervisor sent (base64 of :func:`pack`'s tar) into
    ``run_dir``, as ``rsync -a`` would (modes and times kept)."""
    import base64
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(data)), mode="r:gz") as tar:
        # From home, made by pack(): plain files and folders. "fully_trusted" keeps the modes
        # as rsync -a does (Pythons without extraction filters behave so anyway).
        if hasattr(tarfile, "fully_trusted_filter"):
            tar.extractall(run_dir, filter="fully_trusted")
        else:
            tar.extractall(run_dir)  # noqa: S202 - our own tar, see above


def _remove_run_folder(run_dir: Path) -> None:
    from ..runfolder import remove_run_folder

    os.chdir(run_dir.parent)
    remove_run_folder(run_dir)


def _run(out: _Out, run_dir: Path, spec: dict[str, Any], state: dict[str, Any]) -> int:
    from ..keyvault import CHANNEL_ENV
    from ..processes import process_start_time
    from . import hostmodels
    from .script import script_argv, script_env, start_script

    if spec.get("snapshot"):
        # The working folder came in the instructions (small: no rsync before the agent).
        _unpack_snapshot(spec.pop("snapshot"), run_dir)
    os.chdir(run_dir)
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "outputs").mkdir(exist_ok=True)
    from .remote_catalog import make_replica

    ws = make_replica(run_dir / REPLICA, spec, run_dir)
    d = spec["definition"]
    run_id = spec["run"]["id"]

    flags = {"cancel": False, "kill": False, "done": False, "eof": False}
    state["flags"] = flags  # type: ignore[assignment]

    answers: dict[int, queue.Queue[dict[str, Any]]] = {}

    def read_commands() -> None:
        for cmd in sys.stdin:
            cmd = cmd.strip()
            if cmd.startswith("{"):  # the answer to a secrets request
                try:
                    msg = json.loads(cmd)
                    answers[int(msg["id"])].put(msg)
                except (ValueError, KeyError, TypeError):
                    pass
            elif cmd in flags:
                flags[cmd] = True
        flags["eof"] = True
        for q in answers.values():
            q.put({"error": "the run's supervising process is gone"})

    threading.Thread(target=read_commands, name="mlws-agent-stdin", daemon=True).start()
    secrets_fds = _serve_secrets(out, answers, run_dir)

    if d["environment"].get("managed"):
        from ..environments import Environment, resolve

        env_def = Environment.from_dict(d["environment"])
        with open(run_dir / "logs" / "environment.log", "a") as log:
            log.write(f"Environment {d['environment']['name']!r} on {socket.gethostname()}\n")
            log.flush()
            try:
                d["environment"]["interpreter"] = resolve(env_def, ws, log=log)
            except Exception as e:
                log.write(f"Failed: {e}\n")  # the log comes home and says why
                raise
            log.write(f"Ready: {d['environment']['interpreter']}\n")
        # Built by this run (the replica is new): the catalog at home records it too.
        build = ws.catalog.one(
            "SELECT * FROM environment_builds WHERE spec_hash = ?", (env_def.spec_hash(),)
        )
        if build is not None:
            out.send(t="build", row=dict(build))
        out.send(t="interpreter", path=d["environment"]["interpreter"])
        if flags["eof"] or flags["cancel"] or flags["kill"]:
            out.send(t="exit", rc=-int(signal.SIGTERM))
            return 0
    env = script_env(
        dict(os.environ),
        d,
        ws.path,
        spec["workspaceName"],
        run_id,
        spec["run"]["experiment"],
        run_dir,
        user=spec["run"].get("submitter_user"),
    )
    env[CHANNEL_ENV] = f"{secrets_fds[0]},{secrets_fds[1]}"
    env[hostmodels.ENV] = "1"  # its models are at home: the script asks down the channel
    log_path = run_dir / "logs" / "driver.log"
    from ..reaper import become_subreaper

    # What the script leaves outside its process group is re-parented here (reaper.py).
    subreaper = become_subreaper()
    # Killed with the agent even if the agent cannot kill it itself (SIGKILL of the agent).
    proc = start_script(
        script_argv(d, run_dir),
        run_dir,
        env,
        tie_to_parent=True,
        pass_fds=secrets_fds,
        read_only=d.get("readOnly"),
    )
    state["started"] = True
    for fd in secrets_fds:  # the script's ends
        os.close(fd)

    def record_exit() -> None:
        # At once, in its own thread: the main loop may be stuck writing to a stalled session,
        # and a supervisor that reconnects (--recover) reads the outcome from this file.
        rc = proc.wait()
        ended_by = "the lost connection" if flags["eof"] else None
        tmp = run_dir / f"{EXIT_FILE}.tmp"
        tmp.write_text(json.dumps({"exit": rc, "endedBy": ended_by}))
        os.replace(tmp, run_dir / EXIT_FILE)

    threading.Thread(target=record_exit, name="mlws-agent-exit", daemon=True).start()
    with ws.catalog.write() as conn:
        conn.execute(
            "UPDATE runs SET pid = ?, pid_start = ? WHERE id = ?",
            (proc.pid, process_start_time(proc.pid), run_id),
        )
    out.send(t="started", pid=proc.pid, host=socket.gethostname())

    def kill(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass

    def end_leftovers() -> None:
        """Processes the script started outside its group: below this agent, or marked."""
        from ..reaper import has_children, kill_descendants, kill_marked

        if not subreaper:
            kill_marked(ws.path, run_id)
        elif has_children():  # everything the script started is below this agent
            kill_descendants()

    pumped = {"log_offset": 0, "change_id": 0}
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    grace = float(spec.get("cancelGraceS", 10))
    cancel_at: float | None = None
    delay = 0.02
    while True:
        try:
            rc = proc.wait(timeout=delay)
            break
        except subprocess.TimeoutExpired:
            pass
        delay = min(delay * 2, 0.25)
        if flags["eof"]:
            # Nobody is listening any more: leave nothing running on the host.
            kill(signal.SIGKILL)
            proc.wait()
            end_leftovers()
            return 1
        if flags["kill"]:
            kill(signal.SIGKILL)
        if flags["cancel"] and cancel_at is None:
            cancel_at = time.monotonic()
            kill(signal.SIGTERM)
        if cancel_at is not None and time.monotonic() - cancel_at > grace:
            kill(signal.SIGKILL)
        _pump(out, ws, log_path, pumped, decoder)
    kill(signal.SIGKILL)  # what the script started and left behind
    end_leftovers()
    _pump(out, ws, log_path, pumped, decoder)
    ws.close()
    if not flags["eof"]:
        packed = pack(run_dir)
        if packed is not None:
            import base64

            out.send(t="files", tar=base64.b64encode(packed).decode("ascii"))
    out.send(t="exit", rc=rc)
    # The supervising process copies outputs, logs and files home, then says "done"; the run's
    # folder goes then (or when the supervisor is gone: nobody would come for it).
    while not (flags["done"] or flags["eof"]):
        time.sleep(0.02)
    # Only on "done" are the outputs safely home; after a lost connection the folder stays,
    # so nothing the script made is lost (remove it by hand, or re-fetch it).
    if flags["done"] and not spec.get("keep"):
        _remove_run_folder(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
