"""MLflow's artifact API on ``mlws serve`` (``/api/2.0/mlflow-artifacts/artifacts/...``), so
``mlflow.log_artifact``, ``log_model``, ``download_artifacts`` and ``list_artifacts`` of a stock
client work through a served workspace, as against ``mlflow server --serve-artifacts``.

Runs (and logged models) answered over MLflow's REST API carry artifact URIs
``mlflow-artifacts:/runs/<run id>/artifacts[/path]``; MLflow's client resolves them to
``<tracking URI>/api/2.0/mlflow-artifacts/artifacts/runs/<run id>/artifacts/<path>``. Behind
those routes the files are the run's own files, stored content-addressed by the same code the
local plugin uses (:class:`mlws.mlflow.artifacts.MlwsArtifactRepository`): ``..`` and absolute
paths are refused, a file uploaded twice is stored once. Readers may list and download,
contributors upload; deleting is refused (mlws keeps a run's files).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from ..workspace import Workspace

ROOT = "/api/2.0/mlflow-artifacts/artifacts"
#: The scheme of the artifact URIs the server hands out.
SCHEME = "mlflow-artifacts:/"


def served(ws: Workspace) -> Callable[[str], str]:
    """A rewriter of JSON text: every string starting with the workspace's own MLflow URI
    (``mlws:///path/to/ws/.mlflow/``, which only this machine can open) starts with
    ``mlflow-artifacts:/`` instead. One ``str.replace`` over the answer: cheaper than walking
    a thousand runs' entities."""
    import json

    from ..mlflow import uris

    local = json.dumps(uris.tracking_uri(ws) + uris.MARK)[:-1]  # the opening quote kept
    remote = '"' + SCHEME

    def rewrite(text: str) -> str:
        return text.replace(local, remote)

    return rewrite


def split(path: str) -> tuple[str, str]:
    """``(run id, path among its files)`` of an artifact route path ``runs/<id>/artifacts[/p]``.

    :raises MlflowException: INVALID_PARAMETER_VALUE for any other path.
    """
    from mlflow.exceptions import MlflowException

    parts = path.strip("/").split("/", 3)
    if len(parts) < 3 or parts[0] != "runs" or not parts[1] or parts[2] != "artifacts":
        raise MlflowException.invalid_parameter_value(
            f"not a run artifact path: {path!r} (expected runs/<run id>/artifacts/<path>)"
        )
    if parts[1] in (".", ".."):
        raise MlflowException.invalid_parameter_value(f"invalid run id {parts[1]!r}")
    return parts[1], parts[3] if len(parts) > 3 else ""


#: Uploads up to this size are spooled in memory, larger ones in a temp file.
SPOOL_BYTES = 1024 * 1024


async def spool(request: Request, limit: int) -> Any:
    """A request's body as a binary temp file (in memory up to :data:`SPOOL_BYTES`), read no
    further than ``limit`` bytes: an upload of any size costs no more memory than that.

    :raises RequestTooLarge: a body over ``limit`` bytes, by its Content-Length or as read.
    """
    import tempfile

    from ..errors import RequestTooLarge

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(
            f"the upload is {int(length)} bytes; this server takes at most {limit} "
            "(mlws serve --max-request-mb)"
        )
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="mlws-upload-")
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(
                    f"the upload is over {limit} bytes, this server's limit "
                    "(mlws serve --max-request-mb)"
                )
            out.write(chunk)  # page-cache writes of the server's chunks: not worth a thread hop
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def routes(
    ws: Workspace,
    authenticate: Callable[[Workspace, str | None], Any],
    max_body: int | None = None,
) -> list[Route]:
    """List (``GET ROOT?path=``), download (``GET ROOT/<path>``), upload (``PUT ROOT/<path>``,
    at most ``max_body`` bytes, the server's request limit: larger is a 413) and the refused
    delete, over workspace ``ws`` (already open)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    from ..mlflow import uris
    from ..mlflow.artifacts import MlwsArtifactRepository
    from .app import DEFAULT_MAX_BODY
    from .mlflow_api import error_response, guard, json_response

    limit = DEFAULT_MAX_BODY if max_body is None else max_body

    def repo(run_id: str) -> MlwsArtifactRepository:
        return MlwsArtifactRepository(uris.run_artifact_uri(ws, run_id))

    def listing(auth: str | None, path: str) -> dict[str, Any]:
        guard(ws, authenticate, auth, "reader", f"GET {ROOT}")
        run_id, where = split(path)
        files = []
        for f in repo(run_id).list_artifacts(where or None):
            item: dict[str, Any] = {"path": f.path.rsplit("/", 1)[-1], "is_dir": f.is_dir}
            if f.file_size is not None:
                item["file_size"] = f.file_size
            files.append(item)
        return {"files": files}

    def download(auth: str | None, path: str) -> bytes:
        guard(ws, authenticate, auth, "reader", f"GET {ROOT}/...")
        run_id, name = split(path)
        return repo(run_id).read_bytes(name)

    def check_upload(auth: str | None, path: str) -> tuple[str, str]:
        guard(ws, authenticate, auth, "contributor", f"PUT {ROOT}/...")
        return split(path)

    def upload(run_id: str, name: str, body: Any) -> dict[str, Any]:
        with body:
            repo(run_id).put_stream(name, body)
        return {}

    async def list_endpoint(request: Request) -> Response:
        try:
            auth = request.headers.get("authorization")
            result = await run_in_threadpool(listing, auth, request.query_params.get("path", ""))
        except Exception as e:
            return error_response(e, "GET", request.url.path)
        return json_response(result)

    async def file_endpoint(request: Request) -> Response:
        auth = request.headers.get("authorization")
        path = request.path_params["path"]
        try:
            if request.method == "GET":
                data = await run_in_threadpool(download, auth, path)
                return Response(data, media_type="application/octet-stream")
            if request.method == "PUT":
                # Checked before the body is read: a refused upload is not received.
                run_id, name = await run_in_threadpool(check_upload, auth, path)
                body = await spool(request, limit)
                return json_response(await run_in_threadpool(upload, run_id, name, body))
            await run_in_threadpool(
                guard, ws, authenticate, auth, "contributor", f"DELETE {ROOT}/..."
            )
            raise MlflowException(
                "mlws keeps a run's files; delete the run to remove them",
                databricks_pb2.BAD_REQUEST,  # 400 (MLflow answers INVALID_STATE with a 500)
            )
        except Exception as e:
            return error_response(e, request.method, request.url.path)

    return [
        Route(ROOT, list_endpoint, methods=["GET"]),
        Route(ROOT + "/{path:path}", file_endpoint, methods=["GET", "PUT", "DELETE"]),
    ]
