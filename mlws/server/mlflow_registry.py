"""MLflow's model registry REST API on ``mlws serve`` (``/api/2.0/mlflow/registered-models/...``
and ``/model-versions/...``, as MLflow 3's ``RestStore`` calls them), so ``mlflow.register_model``
and ``MlflowClient``'s registry calls of a stock client register into the served workspace.

There is one mapping of MLflow's registry onto mlws's: :class:`mlws.mlflow.registry.
MlwsModelRegistryStore`, the store local MLflow code uses; each route here parses MLflow's JSON,
calls it and answers MLflow's JSON. So a registered model is an mlws model name, a version an
mlws model version whose files are the run's model folder; stages and aliases are refused with
``NOT_IMPLEMENTED`` as by the local store. A version registered here records the token's user as
its creator. Readers read (``get``, ``search``, ``get-latest-versions``, ``get-download-uri``),
contributors register, tag, describe and delete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: The POST routes that only read (a GET only reads anyway; an alias's POST and DELETE write).
READS = frozenset({"/registered-models/get-latest-versions"})
#: The request field that carries the token's user to the handlers (not one of MLflow's).
USER_FIELD = "_mlws_user"


def _entity(e: Any) -> dict[str, Any]:
    from mlflow.utils.proto_json_utils import message_to_json

    return json.loads(message_to_json(e.to_proto()))


def _tags(items: Any, cls: Any) -> list[Any]:
    return [cls(i["key"], i.get("value", "")) for i in items or []]


def _paged(key: str, page: Any) -> dict[str, Any]:
    """A page of MLflow entities as MLflow's answer: the list under ``key``, and the token of
    the next page when there is one."""
    out: dict[str, Any] = {key: [_entity(e) for e in page]}
    if page.token:
        out["next_page_token"] = page.token
    return out


def _max(q: dict[str, Any], default: int) -> int:
    return int(q.get("max_results") or default)


def _order(q: dict[str, Any]) -> list[str] | None:
    order = q.get("order_by")
    return [order] if isinstance(order, str) else order


def handlers(store: Any) -> dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]]:
    """``{(method, path): handler(request fields) -> response}`` over ``store`` (an
    :class:`~mlws.mlflow.registry.MlwsModelRegistryStore`)."""
    from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag

    def create_model(q: dict[str, Any]) -> dict[str, Any]:
        model = store.create_registered_model(
            q["name"], _tags(q.get("tags"), RegisteredModelTag), q.get("description")
        )
        return {"registered_model": _entity(model)}

    def search_models(q: dict[str, Any]) -> dict[str, Any]:
        page = store.search_registered_models(
            q.get("filter"), _max(q, 100), _order(q), q.get("page_token")
        )
        return _paged("registered_models", page)

    def latest(q: dict[str, Any]) -> dict[str, Any]:
        stages = q.get("stages")
        stages = [stages] if isinstance(stages, str) else stages
        return {
            "model_versions": [_entity(v) for v in store.get_latest_versions(q["name"], stages)]
        }

    def create_version(q: dict[str, Any]) -> dict[str, Any]:
        version = store.create_model_version(
            q["name"],
            q["source"],
            q.get("run_id") or None,
            _tags(q.get("tags"), ModelVersionTag),
            description=q.get("description"),
            model_id=q.get("model_id") or None,
            created_by=q.get(USER_FIELD),
        )
        return {"model_version": _entity(version)}

    def search_versions(q: dict[str, Any]) -> dict[str, Any]:
        page = store.search_model_versions(
            q.get("filter"), _max(q, 10000), _order(q), q.get("page_token")
        )
        return _paged("model_versions", page)

    def version_tag(q: dict[str, Any]) -> dict[str, Any]:
        store.set_model_version_tag(
            q["name"], q["version"], ModelVersionTag(q["key"], q.get("value", ""))
        )
        return {}

    def model_tag(q: dict[str, Any]) -> dict[str, Any]:
        store.set_registered_model_tag(q["name"], RegisteredModelTag(q["key"], q.get("value", "")))
        return {}

    def transition(q: dict[str, Any]) -> dict[str, Any]:
        version = store.transition_model_version_stage(
            q["name"], q["version"], q["stage"], bool(q.get("archive_existing_versions"))
        )
        return {"model_version": _entity(version)}

    return {
        ("POST", "/registered-models/create"): create_model,
        ("GET", "/registered-models/get"): lambda q: {
            "registered_model": _entity(store.get_registered_model(q["name"]))
        },
        ("GET", "/registered-models/search"): search_models,
        ("PATCH", "/registered-models/update"): lambda q: {
            "registered_model": _entity(
                store.update_registered_model(q["name"], q.get("description", ""))
            )
        },
        ("POST", "/registered-models/rename"): lambda q: {
            "registered_model": _entity(store.rename_registered_model(q["name"], q["new_name"]))
        },
        ("DELETE", "/registered-models/delete"): lambda q: (
            store.delete_registered_model(q["name"]) or {}
        ),
        ("POST", "/registered-models/get-latest-versions"): latest,
        ("GET", "/registered-models/get-latest-versions"): latest,
        ("POST", "/registered-models/set-tag"): model_tag,
        ("DELETE", "/registered-models/delete-tag"): lambda q: (
            store.delete_registered_model_tag(q["name"], q["key"]) or {}
        ),
        ("POST", "/registered-models/alias"): lambda q: (
            store.set_registered_model_alias(q["name"], q["alias"], q["version"]) or {}
        ),
        ("DELETE", "/registered-models/alias"): lambda q: (
            store.delete_registered_model_alias(q["name"], q["alias"]) or {}
        ),
        ("GET", "/registered-models/alias"): lambda q: {
            "model_version": _entity(store.get_model_version_by_alias(q["name"], q["alias"]))
        },
        ("POST", "/model-versions/create"): create_version,
        ("GET", "/model-versions/get"): lambda q: {
            "model_version": _entity(store.get_model_version(q["name"], q["version"]))
        },
        ("GET", "/model-versions/search"): search_versions,
        ("GET", "/model-versions/get-download-uri"): lambda q: {
            "artifact_uri": store.get_model_version_download_uri(q["name"], q["version"])
        },
        ("PATCH", "/model-versions/update"): lambda q: {
            "model_version": _entity(
                store.update_model_version(q["name"], q["version"], q.get("description", ""))
            )
        },
        ("DELETE", "/model-versions/delete"): lambda q: (
            store.delete_model_version(q["name"], q["version"]) or {}
        ),
        ("POST", "/model-versions/set-tag"): version_tag,
        ("DELETE", "/model-versions/delete-tag"): lambda q: (
            store.delete_model_version_tag(q["name"], q["version"], q["key"]) or {}
        ),
        ("POST", "/model-versions/transition-stage"): transition,
    }
