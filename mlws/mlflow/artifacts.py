"""``MlwsArtifactRepository``: MLflow's artifacts of a run are the run's files.

MLflow finds it through the ``mlflow.artifact_repository`` entry point for run artifact URIs
(``mlws:///path/to/ws/.mlflow/runs/<run id>/artifacts``, see :mod:`mlws.mlflow.uris`). Files go
into the workspace's blob store (content-addressed: a file logged twice, or by two runs, is
stored once) and are named in the run's files, so ``mlws run download``, the Studio and
``run.get_file_names()`` see them; a folder is recorded in one catalog transaction.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from ..blobs import Entry, check_relpath, file_mode
from ..runfiles import add_run_files
from . import uris
from .uris import mlflow_errors


class MlwsArtifactRepository(ArtifactRepository):
    """The files of one mlws run, under the path the artifact URI names."""

    def __init__(
        self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
    ) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self.ws_path, self.run_id, self.base = uris.parse_artifact_uri(artifact_uri)

    def _run(self) -> Any:
        ws = uris.open_workspace(self.ws_path)
        with mlflow_errors():
            return ws.get_run(self.run_id)

    def _name(self, *parts: str | None) -> str:
        """The run file path of ``parts`` below the base path, checked to stay inside the run.

        :raises MlflowException: INVALID_PARAMETER_VALUE for an absolute path or ``..``.
        """
        given = [p.strip("/") if p else "" for p in parts]
        for p in given:
            if ".." in p.split("/") or (p and os.path.isabs(p)):
                raise MlflowException(
                    f"Invalid artifact path: {p!r} (no '..' and no absolute paths)",
                    databricks_pb2.INVALID_PARAMETER_VALUE,
                )
        name = posixpath.join(self.base, *[p for p in given if p]).strip("/")
        if name:
            with mlflow_errors():
                check_relpath(name)
        return name

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        """Store a local file as run file ``<artifact_path>/<its name>``."""
        name = self._name(artifact_path, os.path.basename(local_file))
        run = self._run()
        with mlflow_errors():
            run.upload_file(name, local_file)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Store every file under ``local_dir`` as run files under ``artifact_path``, recorded in
        one transaction."""
        prefix = self._name(artifact_path)
        run = self._run()
        root = Path(local_dir)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        entries = []
        with mlflow_errors():
            blobs = run.workspace.blobs
            with blobs.batch():
                for p in files:
                    name = posixpath.join(prefix, p.relative_to(root).as_posix()).strip("/")
                    check_relpath(name)
                    digest, size, _ = blobs.put_file(p)
                    entries.append(Entry(name, digest, size, file_mode(p.stat().st_mode)))
            if entries:
                add_run_files(run.workspace, run.seq, entries)

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """The files and folders directly under ``path`` (paths relative to the artifact URI)."""
        where = self._name(path)
        run = self._run()
        with mlflow_errors():
            names = run.get_file_names()
            sizes = dict(
                run.workspace.catalog.query(
                    "SELECT path, size FROM run_files WHERE run_seq = ?", (run.seq,)
                )
            )
        start = where + "/" if where else ""
        skip = len(self.base) + 1 if self.base else 0
        seen: dict[str, FileInfo] = {}
        for n in names:
            if not n.startswith(start):
                continue
            head, sep, _ = n[len(start) :].partition("/")
            full = start + head
            rel = full[skip:]
            if sep:
                seen.setdefault(rel, FileInfo(rel, True, None))
            else:
                seen[rel] = FileInfo(rel, False, sizes.get(full))
        return [seen[k] for k in sorted(seen)]

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        """Copy one run file (checked against its hash) to ``local_path``."""
        name = self._name(remote_file_path)
        run = self._run()
        with mlflow_errors():
            run.download_file(name, local_path)

    def put_stream(self, path: str, stream: Any) -> None:
        """Store the binary ``stream`` as the run file ``path`` (below the base path): what an
        upload over ``mlws serve``'s artifact API becomes (spooled to a temp file first).

        :raises MlflowException: INVALID_PARAMETER_VALUE for an empty path, ``..`` or an
            absolute path (nothing is stored then).
        """
        name = self._name(path)
        if not name or name == self.base:
            raise MlflowException(
                "an artifact upload needs a file path", databricks_pb2.INVALID_PARAMETER_VALUE
            )
        run = self._run()
        with mlflow_errors():
            digest, size, _ = run.workspace.blobs.put_stream(stream)
            add_run_files(run.workspace, run.seq, [Entry(name, digest, size)])

    def read_bytes(self, path: str) -> bytes:
        """The content of run file ``path`` (below the base path), checked against its hash."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="mlws-artifact-") as tmp:
            target = os.path.join(tmp, "file")
            self._download_file(path, target)
            return Path(target).read_bytes()

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        """Refused: a run's files are kept (``mlws gc`` removes unreferenced blobs)."""
        raise MlflowException(
            "mlws keeps a run's files; delete the run to remove them",
            databricks_pb2.INVALID_STATE,
        )
