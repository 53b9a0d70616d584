"""mlws on an ssh host: what the agent there imports. The host's own mlws is used when it is
this very version and protocol; otherwise this checkout's source (and, when the host lacks them,
its dependencies' installed files) is shipped to ``<work_dir>/lib/mlws-<version>-<source hash>``
(see :mod:`mlws.compute.ssh` for the design)."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import IO, Any

from ..errors import ComputeTargetException
from ..sshhost import Connection

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def lib_path(conn: Connection) -> str:
    """Where this very mlws lives on the host once shipped (version and source hash)."""
    from .. import __version__

    return f"{conn.work_dir()}/lib/mlws-{__version__}-{source_hash()}"


def ensure_mlws(conn: Connection, log: IO[str]) -> str:
    """Make ``mlws.compute.agent`` importable by the host's Python; returns the PYTHONPATH
    to use there (the shipped copy, which wins over any other mlws on the host)."""
    import inspect

    from .. import __version__

    python = conn.config["python"]
    lib = lib_path(conn)
    # Another mlws of the same version on the host (an install, a checkout) may be another
    # development commit: it is used only when its files hash as this one's do. The shipped
    # copy is not hashed again: its folder's name carries the hash.
    probe = (
        "import sys, json, sysconfig\n"
        "from pathlib import Path\n"
        f"{inspect.getsource(package_hash)}\n"
        "r = {'py': list(sys.version_info[:2]), 'platform': sysconfig.get_platform()}\n"
        "try:\n"
        "    import mlws, mlws.compute.agent\n"
        "    mlws.compute.agent.check()\n"
        "    r['mlws'] = mlws.__version__; r['file'] = mlws.__file__\n"
        "    r['protocol'] = mlws.compute.agent.PROTOCOL\n"
        f"    if not mlws.__file__.startswith({lib + '/'!r}):\n"
        "        r['hash'] = package_hash(Path(mlws.__file__).resolve().parent)\n"
        "except Exception as e:\n"
        "    r['error'] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(r))\n"
    )
    cmd = f"PYTHONPATH={shlex.quote(lib)} {shlex.quote(python)} -"

    def ask() -> dict[str, Any]:
        out = conn.check(cmd, "checking Python", input=probe)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ComputeTargetException(
                f"{conn.node}: unexpected answer from {python}: {out!r}"
            ) from None

    from .agent import PROTOCOL

    info = ask()
    same = info.get("hash", source_hash()) == source_hash()
    if info.get("mlws") == __version__ and info.get("protocol") == PROTOCOL and same:
        where = info.get("file", "")
        if not where.startswith(lib + "/"):
            log.write(f"{conn.node}: using mlws {__version__} installed there ({where})\n")
        return lib
    there = info.get("error") or f"mlws {info.get('mlws')}"
    if "error" not in info and not same:
        there += f" of other source files, at {info.get('file')}"
    log.write(f"{conn.node}: shipping mlws {__version__} to {lib} ({there} there)\n")
    # The supervisor that ships has no terminal: its progress is these lines of the run's log.
    started = time.monotonic()
    conn.rsync(
        str(_PACKAGE_DIR) + "/",
        f":{lib}/mlws/",
        options=("--delete", "--exclude=__pycache__"),
        make_dest=lib,
    )
    files = [p for p in _PACKAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    log.write(f"{conn.node}: shipped {_amount(files)} in {time.monotonic() - started:.1f} s\n")
    info = ask()
    if "error" in info:
        # Something mlws needs is missing there: ship its dependencies too (pure-Python ones
        # work anywhere; compiled ones only on the same Python version and platform).
        log.write(f"{conn.node}: {info['error']}; shipping mlws's dependencies too\n")
        folders = _dependency_files()
        for i, (base, names) in enumerate(folders.items(), 1):
            started = time.monotonic()
            conn.rsync(base + "/", f":{lib}/", files_from="\n".join(names) + "\n")
            log.write(
                f"{conn.node}: dependencies {i}/{len(folders)}: shipped"
                f" {_amount([Path(base, n) for n in names])} from {base}"
                f" in {time.monotonic() - started:.1f} s\n"
            )
            log.flush()
        info = ask()
    if "error" in info:
        raise ComputeTargetException(
            f"{conn.node}: {python} cannot run mlws even after shipping it ({info['error']});"
            f" install mlws's dependencies there: {python} -m pip install {_requirements()}"
        )
    return lib


def _amount(files: list[Path]) -> str:
    size = 0
    for p in files:
        try:
            size += p.stat().st_size
        except OSError:
            pass
    return f"{len(files)} files, {size / 1e6:.1f} MB"


_SOURCE_HASH: str | None = None


def package_hash(folder: Path) -> str:
    """A hash of a package folder's source files (names and contents, ``__pycache__`` left
    out). The probe runs this very function's source on the host, so the same files give the
    same hash on both sides."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(folder).as_posix().encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def source_hash() -> str:
    """A hash of this mlws's source files: a changed checkout ships again."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        _SOURCE_HASH = package_hash(_PACKAGE_DIR)
    return _SOURCE_HASH


def _requirements() -> str:
    from importlib import metadata

    try:
        reqs = metadata.requires("mlws") or []
    except metadata.PackageNotFoundError:
        return "mlws"
    return " ".join(shlex.quote(r.split(";")[0].strip()) for r in reqs if "extra ==" not in r)


def runtime_distributions() -> list[Any]:
    """The installed distributions (``importlib.metadata``) of mlws's runtime dependencies,
    recursively (not its extras'), mlws's own excluded."""
    from importlib import metadata

    found = []
    seen: set[str] = set()
    todo = ["mlws"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            if "extra ==" not in req:
                m = re.match(r"[A-Za-z0-9._-]+", req)
                if m:
                    todo.append(m.group())
        if key != "mlws":  # shipped from its source folder
            found.append(dist)
    return found


def _dependency_files() -> dict[str, list[str]]:
    """The installed files of mlws's runtime dependencies (recursively), by site folder."""
    out: dict[str, list[str]] = {}
    for dist in runtime_distributions():
        base = str(dist.locate_file(""))
        for f in dist.files or []:
            if f.parts and f.parts[0] != ".." and "__pycache__" not in f.parts:
                out.setdefault(base.rstrip("/"), []).append(f.as_posix())
    return out
