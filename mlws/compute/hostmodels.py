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


def place(run_dir: Path, msg: dict[str, Any]) -> dict[str, Any]:
    """On the host: put home's answer (:func:`answer`) in place and return the script's: the
    folder to find the model under (``{"root": ..}``), or ``{"error": ..}``."""
    if msg.get("error"):
        return {"error": str(msg["error"])}
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


def ask_home(name: str, version: int | None) -> str:
    """In a script on an ssh host: have the model put on this host; returns the folder to find
    it under (``<run folder>/azureml-models``).

    :raises ModelNotFound: home knows no such model (or could not send it)."""
    from ..errors import KeyvaultKeyError, ModelNotFound
    from ..keyvault import CHANNEL_ENV, ask_channel

    if not os.environ.get(CHANNEL_ENV):
        raise ModelNotFound(
            f"model {name!r} is not on this host; only the run's first process on a host can"
            " have it sent (call Model.get_model_path there first)"
        )
    try:
        reply = ask_channel({"model": name, "version": version})
    except KeyvaultKeyError as e:
        raise ModelNotFound(
            f"model {name!r} is not on this host and home cannot be asked here: {e}"
        ) from None
    if reply.get("error") or not reply.get("root"):
        raise ModelNotFound(str(reply.get("error") or "home did not answer for the model"))
    return str(reply["root"])
