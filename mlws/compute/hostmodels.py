"""Registered models for a script on an ``ssh`` host: v1's ``Model.get_model_path`` there.

The run's catalog on the host is a replica (:mod:`.remote_catalog`) that holds none of the
workspace's models, so the script asks home, down the run's channel (the pipe pair of
:data:`mlws.keyvault.CHANNEL_ENV`, as for secrets):

- the script (:func:`mlws.modelpath.model_path`) sends ``{"model": name, "version": v}``;
- the agent forwards it as a ``model`` event, with the model folders this host holds already
  (:func:`held`);
- the supervising process resolves name and version in the home catalog (an unknown one is the
  same one-line ``ModelNotFound`` as locally) and, when the host lacks that model's files,
  copies them to ``<work_dir>/models/<manifest hash>.part-..`` (:func:`answer`);
- the agent renames that folder to ``<work_dir>/models/<manifest hash>`` and links the run's
  ``azureml-models/<name>/<version>`` to it (:func:`place`), where ``get_model_path`` finds it.

The host's copy is named by the model's manifest hash (its files' contents), so it is copied
once per host, whatever run, node or version asks for the same files. Scripts must not write
into it (a link, not a copy: other runs read the same folder).

v1's ``Model(ws, name[, version])``, ``Model.list`` and ``model.download()`` in such a script go
the same way: ``Model.list`` finds nothing in the run's catalog and asks home for the records
(``{"model": name, "list": true}``: the answer carries each version's record and manifest,
no files, :func:`home_rows`); a :class:`HomeRow` reads its files from the host's copy, which the
first read has sent as above (:class:`HostFiles`).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sshhost import Connection
    from ..workspace import Workspace

#: The hosts' content-addressed model folders, under the target's ``work_dir``.
MODELS = "models"
#: Set in a script's environment on an ssh host: its models are at home (ask the channel).
ENV = "MLWS_MODELS_FROM_HOME"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"[0-9a-f]{64}\.part-[0-9a-f]{32}")


def cache_dir(run_dir: Path) -> Path:
    """The host's model folders, next to its ``runs/`` (``<work_dir>/runs/<run>``)."""
    return run_dir.parent.parent / MODELS


def held(run_dir: Path) -> list[str]:
    """The manifest hashes whose files are on this host already (complete folders only)."""
    try:
        return sorted(p.name for p in cache_dir(run_dir).iterdir() if _DIGEST.fullmatch(p.name))
    except OSError:
        return []


def answer(ws: Workspace, conn: Connection, remote_dir: str, ev: dict[str, Any]) -> dict[str, Any]:
    """At home: the answer to a host's ``model`` event (``ev``) for the run whose folder there
    is ``remote_dir``: the model's name, version and manifest hash, with ``shipped`` naming the
    folder its files were just copied to (``None``: the host has them), or ``error``."""
    from ..errors import MlwsError
    from ..models import Model

    try:
        if ev.get("list"):  # records only (Model.list, Model(ws, name) there): no files sent
            found = Model.list(ws, name=None if ev.get("name") in (None, "") else ev["name"])
            return {"id": ev.get("id"), "models": [record(ws, m) for m in found]}
        # From the host: Model checks the name; the version must be a whole number.
        version = ev.get("version")
        version = None if version is None else int(version)
        model = Model(ws, str(ev.get("name")), version=version)
        digest = model.manifest.split(":", 1)[-1]
        shipped = None
        if digest not in set(ev.get("have") or []):
            # Computed here, not taken from the host: where the target's work_dir is.
            models = posixpath.join(posixpath.dirname(posixpath.dirname(remote_dir)), MODELS)
            shipped = f"{digest}.part-{uuid.uuid4().hex}"
            with tempfile.TemporaryDirectory(prefix="mlws-model-") as tmp:
                model.download(tmp)
                dest = f"{models}/{shipped}"
                conn.rsync(f"{tmp}/", f":{dest}/", make_dest=dest)
        return {
            "id": ev.get("id"),
            "name": model.name,
            "version": model.version,
            "manifest": digest,
            "shipped": shipped,
        }
    except (MlwsError, TypeError, ValueError) as e:
        return {"id": ev.get("id"), "error": str(e)}


def record(ws: Workspace, model: Any) -> dict[str, Any]:
    """At home: what a host is told of a model version: its record as a remote workspace's
    server gives it (:func:`mlws.remote.models.row_of` reads it), and its manifest's text."""
    files = ws.blobs.read_bytes(model.manifest).decode()
    return {**model.serialize(), "manifest": model.manifest, "files": files}


def place(run_dir: Path, msg: dict[str, Any]) -> dict[str, Any]:
    """On the host: put home's answer (:func:`answer`) in place and return the script's: the
    folder to find the model under (``{"root": ..}``), the records asked for
    (``{"models": [..]}``), or ``{"error": ..}``."""
    if msg.get("error"):
        return {"error": str(msg["error"])}
    if "models" in msg:  # records only: nothing to put on the host
        models = msg["models"]
        return {"models": models} if isinstance(models, list) else {"error": "bad answer"}
    try:
        digest, name, version = str(msg["manifest"]), str(msg["name"]), int(msg["version"])
        if not _DIGEST.fullmatch(digest) or "/" in name or name in (".", ".."):
            raise ValueError(name)
        cache = cache_dir(run_dir)
        final = cache / digest
        shipped = msg.get("shipped")
        if shipped:
            if not _PART.fullmatch(str(shipped)):
                raise ValueError(shipped)
            try:
                os.rename(cache / str(shipped), final)
            except OSError:  # another run put the same files there meanwhile
                shutil.rmtree(cache / str(shipped), ignore_errors=True)
        if not final.is_dir():
            return {"error": f"model {name}:{version} did not reach this host"}
        root = run_dir / "azureml-models"
        link = root / name / str(version)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            try:
                link.symlink_to(final, target_is_directory=True)
            except FileExistsError:
                pass  # another process of the run linked it first
        return {"root": str(root)}
    except (KeyError, TypeError, ValueError, OSError) as e:
        return {"error": f"the model could not be put on this host: {type(e).__name__}: {e}"}


def _ask(request: dict[str, Any], name: str | None) -> dict[str, Any]:
    """Send ``request`` home down the run's channel (for model ``name``; None: any); its
    answer, or ModelNotFound."""
    from ..errors import KeyvaultKeyError, ModelNotFound
    from ..keyvault import CHANNEL_ENV, ask_channel

    what = f"model {name!r} is" if name else "the workspace's models are"
    if not os.environ.get(CHANNEL_ENV):
        raise ModelNotFound(
            f"{what} not on this host; only the run's first process on a host can ask for"
            " them (call Model.get_model_path or Model(ws, name) there first)"
        )
    try:
        reply = ask_channel(request)
    except KeyvaultKeyError as e:
        raise ModelNotFound(f"{what} not on this host and home cannot be asked here: {e}") from None
    if reply.get("error"):
        raise ModelNotFound(str(reply["error"]))
    return reply


def ask_home(name: str, version: int | None) -> str:
    """In a script on an ssh host: have the model put on this host; returns the folder to find
    it under (``<run folder>/azureml-models``).

    :raises ModelNotFound: home knows no such model (or could not send it)."""
    from ..errors import ModelNotFound

    reply = _ask({"model": name, "version": version}, name)
    if not reply.get("root"):
        raise ModelNotFound("home did not answer for the model")
    return str(reply["root"])


def home_rows(
    ws: Workspace,
    name: str | None = None,
    run_id: str | None = None,
    framework: str | None = None,
) -> list[Any]:
    """In a script on an ssh host whose workspace is its run's (v1 scripts use
    ``run.experiment.workspace``): the model versions home has (of ``name``; made by run
    ``run_id``; of ``framework``) as :class:`HomeRow` rows, newest version first within a
    name. Anywhere else: ``[]`` (nothing is asked).

    :raises ModelNotFound: home cannot be asked from this process.
    """
    if not os.environ.get(ENV) or str(ws.path) != os.environ.get("MLWS_WORKSPACE"):
        return []
    from ..remote.models import row_of

    reply = _ask({"model": name or "", "list": True}, name)
    rows = []
    for d in reply.get("models") or []:
        row = HomeRow(row_of(d))
        row.blobs = HostFiles(row["name"], row["version"], row["manifest"], d.get("files") or "")
        if run_id in (None, row["run_id"]) and framework in (None, row["framework"]):
            rows.append(row)
    return rows


class HomeRow(dict):  # type: ignore[type-arg]
    """A model version's row as home sent it (the catalog's ``models`` columns; absent ones
    read None); ``blobs`` is where :class:`~mlws.models.Model` reads its files."""

    blobs: HostFiles

    def __missing__(self, key: str) -> None:
        return None


class HostFiles:
    """A home model version's files for :class:`~mlws.models.Model` on an ssh host: the reading
    calls of a blob store (``read_manifest``, ``read_bytes``, ``materialize``) over the host's
    copy (``<work_dir>/models/<manifest hash>``), which the first of them has home send.

    Every file is checked against its hash as it is read, as the blob store does: the copy is
    shared by the host's runs, and a script that wrote into it must not hand out other bytes.
    """

    def __init__(self, name: str, version: int, manifest: str, text: str) -> None:
        from ..errors import BlobCorrupted
        from ..manifests import hash_bytes, parse_manifest

        data = text.encode()
        if hash_bytes(data) != manifest:
            raise BlobCorrupted(f"model {name}:{version}: home sent a manifest that is not its")
        self.name, self.version, self.manifest = name, int(version), manifest
        self.entries = parse_manifest(data)
        self._folder: Path | None = None

    def folder(self) -> Path:
        """The host's copy of the files (sent home the first time)."""
        if self._folder is None:
            self._folder = Path(ask_home(self.name, self.version)) / self.name / str(self.version)
        return self._folder

    def read_manifest(self, digest: str) -> list[Any]:
        """The model's entries (``digest`` is its manifest's hash)."""
        return list(self.entries)

    def _fill(self, path: str, digest: str) -> Any:
        def fill(fd: int) -> None:
            import hashlib

            from ..errors import BlobCorrupted, BlobNotFound

            h = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb") as out, open(self.folder() / path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
            except FileNotFoundError:
                raise BlobNotFound(
                    f"model {self.name}:{self.version}: {path} is missing from {self.folder()}"
                ) from None
            if f"sha256:{h.hexdigest()}" != digest:
                raise BlobCorrupted(
                    f"model {self.name}:{self.version}: {self.folder() / path} was changed on"
                    " this host"
                )

        return fill

    def read_bytes(self, digest: str) -> bytes:
        """The bytes of the model's file whose hash is ``digest``.

        :raises BlobNotFound: no such file. :raises BlobCorrupted: its bytes changed."""
        from ..errors import BlobCorrupted, BlobNotFound
        from ..manifests import hash_bytes

        path = next((e.path for e in self.entries if e.hash == digest), None)
        try:
            data = (self.folder() / path).read_bytes() if path is not None else None
        except FileNotFoundError:
            data = None
        if data is None:
            raise BlobNotFound(f"model {self.name}:{self.version}: no file {digest} on this host")
        if hash_bytes(data) != digest:
            raise BlobCorrupted(f"model {self.name}:{self.version}: {path} changed on this host")
        return data

    def materialize(
        self, entries: list[Any], target: Any, *, overwrite: bool = True, flag: str = ""
    ) -> int:
        """Copy ``entries`` under ``target`` as :meth:`mlws.blobs.BlobStore.materialize` does:
        every destination checked first, whole or not at all."""
        from ..filetree import plan_writes, write_all

        root = Path(target)
        self.folder()  # sent (and linked) before anything is written
        dests = plan_writes(root, [e.path for e in entries], overwrite=overwrite, flag=flag)
        write_all(
            root,
            [(d, self._fill(e.path, e.hash), e.mode) for e, d in zip(entries, dests, strict=True)],
        )
        return len(dests)
