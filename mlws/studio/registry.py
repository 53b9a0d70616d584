"""Page data of the workspace's registries as plain JSON-able dicts: models, services, datasets
and datastores, compute targets and environments (the run pages are :mod:`.data`'s).

Lists are read a page at a time (:data:`LIST_PAGE` rows, one more to say whether a next page
exists), straight from the catalog. A service's keys live in the key vault and are never read
here; any config entry whose name says it is a secret is dropped before it reaches a page.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from ..errors import DatasetNotFound, ModelNotFound, UserErrorException, WebserviceException

if TYPE_CHECKING:
    from ..workspace import Workspace

#: Rows per page of a registry list.
LIST_PAGE = 100
#: Versions shown on a model or dataset page (the newest).
MAX_VERSIONS = 100
#: Versions of a dataset whose data is compared with its fingerprint when its page opens (the
#: newest; each costs a stat of every file, and a hash of those whose size or time changed).
MAX_CHANGE_CHECKS = 20
#: Rows of a tabular dataset's preview.
PREVIEW_ROWS = 20
#: Config names never shown (a datastore or service config could carry a credential).
SECRET = re.compile(r"key|secret|token|password|credential|sas", re.IGNORECASE)


def check_page(page: Any) -> int:
    """``page`` as a whole number >= 1.

    :raises UserErrorException: anything else.
    """
    try:
        number = int(page)
    except (TypeError, ValueError):
        number = 0
    if isinstance(page, bool) or number < 1 or number >= 2**31:
        raise UserErrorException(f"page is a whole number >= 1, got {page!r}")
    return number


def _paged(ws: Workspace, sql: str, args: tuple[Any, ...], page: int) -> tuple[list[Any], bool]:
    rows = ws.catalog.query(
        f"{sql} LIMIT ? OFFSET ?", (*args, LIST_PAGE + 1, (page - 1) * LIST_PAGE)
    )
    return rows[:LIST_PAGE], len(rows) > LIST_PAGE


def public(config: Any) -> Any:
    """``config`` without the entries whose names look like secrets (at any depth)."""
    if isinstance(config, dict):
        return {k: public(v) for k, v in config.items() if not SECRET.search(str(k))}
    if isinstance(config, list):
        return [public(v) for v in config]
    return config


def _loads(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _flat(items: dict[str, Any]) -> dict[str, Any]:
    """``items`` with every value a scalar a table cell shows (lists and dicts as JSON)."""
    return {
        k: v if isinstance(v, (str, int, float, bool, type(None))) else json.dumps(v)
        for k, v in items.items()
    }


# -- models ---------------------------------------------------------------------------------------
def models(ws: Workspace, page: int = 1) -> dict[str, Any]:
    """One page of registered model names: latest version, number of versions, last registered."""
    page = check_page(page)
    rows, more = _paged(
        ws,
        "SELECT name, max(version) AS latest, count(*) AS versions, max(created) AS updated"
        " FROM models GROUP BY name ORDER BY name",
        (),
        page,
    )
    return {
        "page": page,
        "has_next": more,
        "models": [
            {
                "name": r["name"],
                "latest": r["latest"],
                "versions": r["versions"],
                "updated": r["updated"],
            }
            for r in rows
        ],
    }


def model(ws: Workspace, name: str) -> dict[str, Any]:
    """A model's versions, newest first, each with its tags, properties, framework, the run it
    came from, its datasets and the services deployed with it.

    :raises ModelNotFound: no model of that name.
    """
    from ..models import services_using

    rows = ws.catalog.query(
        "SELECT * FROM models WHERE name = ? ORDER BY version DESC LIMIT ?",
        (name, MAX_VERSIONS),
    )
    if not rows:
        raise ModelNotFound(f"no model {name!r}")
    versions = [
        {
            "version": r["version"],
            "id": f"{r['name']}:{r['version']}",
            "description": r["description"],
            "framework": r["framework"],
            "framework_version": r["framework_version"],
            "tags": _loads(r["tags"], {}),
            "properties": _loads(r["properties"], {}),
            "datasets": _loads(r["datasets"], []),
            "run_id": r["run_id"],
            "experiment": r["experiment"],
            "created": r["created"],
            "created_by": r["created_by"],
            "path": r["path"],
            "services": services_using(ws, name, r["version"]),
        }
        for r in rows
    ]
    total = ws.catalog.scalar("SELECT count(*) FROM models WHERE name = ?", (name,))
    return {"name": name, "versions": versions, "total_versions": total}


# -- services -------------------------------------------------------------------------------------
def _scoring_uri(row: Any) -> str | None:
    if not row["port"]:
        return None
    host = row["host"]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{row['port']}/score"


def services(ws: Workspace, page: int = 1) -> dict[str, Any]:
    """One page of deployed services: state, replicas, scoring URI and models."""
    page = check_page(page)
    rows, more = _paged(ws, "SELECT * FROM services ORDER BY name", (), page)
    out = []
    for r in rows:
        config = _loads(r["config"], {})
        out.append(
            {
                "name": r["name"],
                "state": r["state"],
                "replicas": config.get("replicas"),
                "scoring_uri": _scoring_uri(r),
                "models": _loads(r["models"], []),
                "updated": r["updated"],
            }
        )
    # Services deployed from clients of ``mlws serve`` run on those machines: the server keeps
    # only their records (last reported state, where they run, who deployed them).
    recorded = [
        {
            "name": r["name"],
            "state": r["state"],
            "machine": r["machine"],
            "scoring_uri": r["scoring_uri"],
            "models": _loads(r["models"], []),
            "created_by": r["created_by"],
            "updated": r["updated"],
        }
        for r in ws.catalog.query("SELECT * FROM service_records ORDER BY name")
    ]
    return {"page": page, "has_next": more, "services": out, "recorded": recorded}


def telemetry(ws: Workspace, name: str) -> dict[str, Any]:
    """A summary of the service's recorded requests: count, errors (status >= 400), latency
    (mean, p50, p95, max in ms) and the last request's time. Request bodies are not shown."""
    row = ws.catalog.one(
        "SELECT count(*) AS n, sum(status >= 400) AS errors, avg(latency_ms) AS mean,"
        " max(latency_ms) AS worst, max(time) AS last FROM service_requests WHERE service = ?",
        (name,),
    )
    out: dict[str, Any] = {
        "requests": row["n"],
        "errors": row["errors"] or 0,
        "mean_ms": row["mean"],
        "p50_ms": None,
        "p95_ms": None,
        "max_ms": row["worst"],
        "last": row["last"],
    }
    for label, q in (("p50_ms", 0.5), ("p95_ms", 0.95)):
        if row["n"]:
            # The q-th latency by rank: one ordered, offset query (no table of latencies in Python).
            out[label] = ws.catalog.scalar(
                "SELECT latency_ms FROM service_requests WHERE service = ?"
                " ORDER BY latency_ms LIMIT 1 OFFSET ?",
                (name, min(row["n"] - 1, int(q * row["n"]))),
            )
    return out


#: Buckets of a service's telemetry charts, and the span they cover at most (the latest hour
#: of requests; a service deployed later than that covers its life).
TELEMETRY_BUCKETS = 60
TELEMETRY_WINDOW_S = 3600.0
#: Requests read for the charts at most (the newest): bounds the page at any request rate.
TELEMETRY_ROWS = 200_000


def telemetry_series(ws: Workspace, name: str, created: float = 0.0) -> dict[str, Any]:
    """Time series of the service's requests since it was ``created``, in up to
    :data:`TELEMETRY_BUCKETS` buckets over the last :data:`TELEMETRY_WINDOW_S` seconds up to
    its latest request: ``t`` (bucket starts, unix seconds), ``rps`` (requests per second),
    ``p50``/``p95`` (latency in ms, None where a bucket had no request), ``errors_4xx`` and
    ``errors_5xx`` (per second), and ``bucket_s``."""
    last = ws.catalog.scalar(
        "SELECT max(time) FROM service_requests WHERE service = ? AND time >= ?", (name, created)
    )
    empty = {"t": [], "rps": [], "p50": [], "p95": [], "errors_4xx": [], "errors_5xx": []}
    if last is None:
        return {**empty, "bucket_s": None}
    first = ws.catalog.scalar(
        "SELECT min(time) FROM service_requests WHERE service = ? AND time >= ?",
        (name, max(created, last - TELEMETRY_WINDOW_S)),
    )
    # Whole seconds, at least one per bucket; the last bucket holds the latest request.
    width = max(1.0, math.ceil((last - first) / TELEMETRY_BUCKETS))
    start = last - width * TELEMETRY_BUCKETS
    rows = ws.catalog.query(
        "SELECT time, status, latency_ms FROM service_requests WHERE service = ? AND time > ?"
        " ORDER BY time DESC LIMIT ?",
        (name, max(start, created - 1e-9), TELEMETRY_ROWS),
    )
    buckets: list[list[Any]] = [[] for _ in range(TELEMETRY_BUCKETS)]
    for t, status, ms in rows:
        buckets[min(TELEMETRY_BUCKETS - 1, int((t - start) // width))].append((status, ms))
    out: dict[str, Any] = {**empty, "bucket_s": width}
    for i, b in enumerate(buckets):
        lat = sorted(ms for _, ms in b)
        out["t"].append(round(start + i * width, 3))
        out["rps"].append(round(len(b) / width, 3))
        out["p50"].append(lat[int(0.5 * (len(lat) - 1))] if lat else None)
        out["p95"].append(lat[int(round(0.95 * (len(lat) - 1)))] if lat else None)
        out["errors_4xx"].append(round(sum(1 for s, _ in b if 400 <= s < 500) / width, 3))
        out["errors_5xx"].append(round(sum(1 for s, _ in b if s >= 500) / width, 3))
    return out


def service(ws: Workspace, name: str) -> dict[str, Any]:
    """A service: state, scoring URI, models, its configuration (no keys) and request telemetry.

    :raises WebserviceException: no service of that name.
    """
    r = ws.catalog.one("SELECT * FROM services WHERE name = ?", (name,))
    if r is None:
        raise WebserviceException(f"no service {name!r}")
    config = public(_loads(r["config"], {}))
    return {
        "name": r["name"],
        "state": r["state"],
        "scoring_uri": _scoring_uri(r),
        "models": _loads(r["models"], []),
        "generation": r["generation"],
        "applied_generation": r["applied_generation"],
        "machine": r["machine"],
        "error": _loads(r["error"], None) if r["error"] else None,
        "created": r["created"],
        "updated": r["updated"],
        "config": _flat(config),
        "telemetry": telemetry(ws, name),
        "series": telemetry_series(ws, name, r["created"]),
        "logs": recent_logs(ws, name),
        "by_status": {
            str(status): n
            for status, n in ws.catalog.query(
                "SELECT status, count(*) FROM service_requests WHERE service = ?"
                " GROUP BY status ORDER BY status",
                (name,),
            )
        },
    }


#: How much of the end of each of a service's log files its page shows.
LOG_TAIL_BYTES = 16 * 1024


def recent_logs(ws: Workspace, name: str) -> list[dict[str, str]]:
    """The end of each log file of service ``name`` (supervisor, replicas): ``[{"name",
    "text"}]``. Only the last :data:`LOG_TAIL_BYTES` are read (a busy service's log is large);
    a partial first line is dropped."""
    from ..serving.service import service_dir

    logs = service_dir(ws, name) / "logs"
    out = []
    for f in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        try:
            with f.open("rb") as fh:
                size = fh.seek(0, 2)
                fh.seek(max(0, size - LOG_TAIL_BYTES))
                data = fh.read(LOG_TAIL_BYTES)
        except OSError:
            continue
        if size > LOG_TAIL_BYTES:
            data = data.partition(b"\n")[2]
        out.append({"name": f.name, "text": data.decode("utf-8", "replace")})
    return out


def service_keys(ws: Workspace, name: str) -> dict[str, str | None]:
    """``{"primaryKey", "secondaryKey"}`` of service ``name`` (None when its auth is off): what
    the page shows when a contributor asks (never in a page's GET or its JSON).

    :raises WebserviceException: no service of that name.
    """
    from ..serving import Webservice

    if ws.catalog.scalar("SELECT 1 FROM services WHERE name = ?", (name,)) is None:
        raise WebserviceException(f"no service {name!r}")
    primary, secondary = Webservice(ws, name).get_keys()
    return {"primaryKey": primary, "secondaryKey": secondary}


# -- datasets and datastores ----------------------------------------------------------------------
def datasets(ws: Workspace, page: int = 1) -> dict[str, Any]:
    """One page of registered datasets (latest version, versions count, kind) and every
    datastore (name, type, default)."""
    page = check_page(page)
    rows, more = _paged(
        ws,
        "SELECT d.name, d.version AS latest, d.definition, d.description, d.created,"
        " (SELECT count(*) FROM datasets WHERE name = d.name) AS versions FROM datasets d"
        " WHERE d.version = (SELECT max(version) FROM datasets WHERE name = d.name)"
        " ORDER BY d.name",
        (),
        page,
    )
    stores = ws.catalog.query(
        "SELECT name, type, config, is_default, created FROM datastores ORDER BY name"
    )
    return {
        "page": page,
        "has_next": more,
        "datasets": [
            {
                "name": r["name"],
                "latest": r["latest"],
                "versions": r["versions"],
                "kind": _loads(r["definition"], {}).get("type"),
                "description": r["description"],
                "created": r["created"],
            }
            for r in rows
        ],
        "datastores": [
            {
                "name": s["name"],
                "type": s["type"],
                "default": bool(s["is_default"]),
                "config": public(_loads(s["config"], {})),
                "created": s["created"],
            }
            for s in stores
        ],
    }


def _preview(ds: Any) -> dict[str, Any] | None:
    """The first :data:`PREVIEW_ROWS` rows of a tabular dataset as ``{"columns", "rows"}``, or
    ``{"error": ...}`` when they cannot be read (a file gone, pandas missing)."""
    from ..errors import MlwsError

    try:
        frame = ds.take(PREVIEW_ROWS).to_pandas_dataframe()
    except (MlwsError, OSError, ValueError) as e:
        return {"error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    rows = [[None if v != v else v for v in row] for row in frame.astype(object).values.tolist()]
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


#: Most runs listed per dataset version (the newest), as consumers or producers.
RUNS_PER_VERSION = 20


def dataset_runs(ws: Workspace, name: str, versions: list[int]) -> dict[int, list[dict[str, Any]]]:
    """``{version: [{"id", "status", "direction", "input"}]}``: the newest
    :data:`RUNS_PER_VERSION` runs that consumed (``input``) or produced (``output``) each
    listed version of dataset ``name`` (read on the ``(dataset_name, dataset_version)`` index)."""
    if not versions:
        return {}
    marks = ",".join("?" * len(versions))
    out: dict[int, list[dict[str, Any]]] = {}
    for r in ws.catalog.query(
        "SELECT * FROM (SELECT rd.dataset_version AS version, rd.direction, rd.name AS input,"
        " r.id, r.status, row_number() OVER (PARTITION BY rd.dataset_version"
        " ORDER BY r.created DESC, r.seq DESC) AS k"
        " FROM run_datasets rd JOIN runs r ON r.seq = rd.run_seq"
        f" WHERE rd.dataset_name = ? AND rd.dataset_version IN ({marks}))"
        " WHERE k <= ? ORDER BY version DESC, k",
        [name, *versions, RUNS_PER_VERSION],
    ):
        out.setdefault(r["version"], []).append(
            {"id": r["id"], "status": r["status"], "direction": r["direction"], "input": r["input"]}
        )
    return out


def dataset(ws: Workspace, name: str) -> dict[str, Any]:
    """A dataset's versions, newest first (fingerprint, whether the data changed since each was
    registered), and a preview of the latest version's first rows when it is tabular.

    :raises DatasetNotFound: no dataset of that name.
    """
    from ..datasets import Dataset
    from ..errors import MlwsError

    rows = ws.catalog.query(
        "SELECT version, fingerprint FROM datasets WHERE name = ? ORDER BY version DESC LIMIT ?",
        (name, MAX_VERSIONS),
    )
    if not rows:
        raise DatasetNotFound(f"no dataset {name!r}")
    versions = []
    for i, r in enumerate(rows):
        ds = Dataset.get_by_name(ws, name, r["version"])
        changed: bool | None | str = "not checked"
        if i < MAX_CHANGE_CHECKS:
            try:
                # Cheap when nothing moved: files are hashed again only when their size or
                # mtime changed (the stat cache).
                changed = ds.has_changed()
            except MlwsError:
                changed = None  # a source that is not reachable from here
        versions.append(
            {
                "version": ds.version,
                "kind": ds.definition.get("type"),
                "description": ds.description,
                "tags": ds.tags,
                "fingerprint": r["fingerprint"],
                "changed": changed,
                "created": ds.created_time,
                "definition": json.dumps(ds.definition),
            }
        )
    used = dataset_runs(ws, name, [v["version"] for v in versions])
    for v in versions:
        v["runs"] = used.get(v["version"], [])
    latest = Dataset.get_by_name(ws, name, rows[0]["version"])
    preview = _preview(latest) if latest.definition.get("type") == "tabular" else None
    return {"name": name, "versions": versions, "preview": preview}


# -- compute and environments ---------------------------------------------------------------------
def compute_use(ws: Workspace) -> dict[str, dict[str, int]]:
    """``{target: {"running", "queued"}}``: a target's runs holding a slot (started, not yet
    ended) and waiting for one (``Queued``/``NotStarted``), from the catalog (active runs are
    as last recorded: a listing of runs reconciles them with their processes)."""
    from ..lifecycle import ACTIVE

    out: dict[str, dict[str, int]] = {}
    marks = ",".join("?" * len(ACTIVE))
    for r in ws.catalog.query(
        # A pipeline or a sweep runs no script of its own: its steps and trials hold the slots.
        # Interactive runs (start_logging) hold none either.
        f"SELECT coalesce(target, 'local') AS target, status, count(*) AS n FROM runs"
        f" WHERE status IN ({marks}) AND coalesce(type, '') NOT IN"
        " ('azureml.PipelineRun', 'hyperdrive', 'interactive') GROUP BY 1, 2",
        list(ACTIVE),
    ):
        use = out.setdefault(r["target"], {"running": 0, "queued": 0})
        use["queued" if r["status"] in ("NotStarted", "Queued") else "running"] += r["n"]
    return out


def compute_slots(ws: Workspace, kind: str, config: dict[str, Any]) -> int | None:
    """How many runs a target runs at once (``None``: not limited by slots): ``local`` as
    configured or one per CPU, ``ssh`` runs per host times hosts, ``dask`` its most workers."""
    if kind == "local":
        from ..compute.local import max_concurrent_runs

        return max_concurrent_runs(ws)
    if kind == "ssh":
        return int(config.get("maxConcurrentRunsPerNode", 1)) * max(
            1, len(config.get("nodes") or [])
        )
    if kind == "dask" and config.get("maxNodes"):
        return int(config["maxNodes"])
    return None


def compute(ws: Workspace) -> dict[str, Any]:
    """Every compute target (name, type, config without secrets, slots and their use: runs
    running and queued) and every environment version."""
    targets = [
        {
            "name": r["name"],
            "type": r["type"],
            "config": public(_loads(r["config"], {})),
            "created": r["created"],
        }
        for r in ws.catalog.query("SELECT * FROM compute_targets ORDER BY name")
    ]
    if not any(t["name"] == "local" for t in targets):
        targets.insert(0, {"name": "local", "type": "local", "config": {}, "created": None})
    busy = compute_use(ws)
    for t in targets:
        t.update(busy.get(t["name"], {"running": 0, "queued": 0}))
        t["slots"] = compute_slots(ws, t["type"], t["config"])
    envs = [
        {
            "name": r["name"],
            "version": r["version"],
            "spec_hash": r["spec_hash"],
            "created": r["created"],
        }
        for r in ws.catalog.query(
            "SELECT name, version, spec_hash, created FROM environments"
            " ORDER BY name, version DESC LIMIT 1000"
        )
    ]
    builds = environment_builds(ws)
    for e in envs:
        # A build's id is the spec hash, "-<hash of extra packages>" after it for a service's.
        mine = [
            b
            for b in builds
            if e["spec_hash"] and b["id"].partition("-")[0] == e["spec_hash"].partition("-")[0]
        ]
        e["builds"] = len(mine)
        if not e["spec_hash"]:
            # user_managed_dependencies: runs use that Python as it is; nothing is built.
            e["state"] = "user-managed (never built)"
        else:
            e["state"] = "built" if mine else "not built yet"
        for b in mine:
            b["environments"].append(f"{e['name']}:{e['version']}")
    return {"compute_targets": targets, "environments": envs, "builds": builds}


#: Most environment builds the compute page lists (the newest).
MAX_BUILDS = 200


def environment_builds(ws: Workspace) -> list[dict[str, Any]]:
    """The environments built on the machines of this workspace, newest first: build id (the
    spec hash), host, tool (uv or pip), Python, seconds it took, when, and how many packages its
    ``pip freeze`` recorded; ``environments`` is filled in by :func:`compute`."""
    return [
        {
            "id": r["spec_hash"],
            "host": r["host"],
            "tool": r["tool"],
            "python": r["python"],
            "seconds": r["seconds"],
            "created": r["created"],
            "packages": len([line for line in (r["freeze"] or "").splitlines() if line.strip()]),
            "environments": [],
        }
        for r in ws.catalog.query(
            "SELECT spec_hash, host, tool, python, freeze, seconds, created"
            " FROM environment_builds ORDER BY created DESC LIMIT ?",
            (MAX_BUILDS,),
        )
    ]


# -- pipelines ------------------------------------------------------------------------------------
def pipelines(ws: Workspace) -> dict[str, Any]:
    """Published pipelines (with their number of steps), pipeline endpoints (default version and
    its pipeline) and schedules (what they submit, recurrence or watched datastore path, the last
    run and error), newest first, at most :data:`LIST_PAGE` of each."""
    published = [
        {
            "id": r["id"],
            "name": r["name"],
            "description": r["description"],
            "version": r["version"],
            "status": r["status"],
            "steps": len(_loads(r["definition"], {}).get("steps") or []),
            "created": r["created"],
        }
        for r in ws.catalog.query(
            "SELECT * FROM published_pipelines ORDER BY created DESC LIMIT ?", (LIST_PAGE,)
        )
    ]
    endpoints = [
        {
            "id": r["id"],
            "name": r["name"],
            "description": r["description"],
            "status": r["status"],
            "default_version": r["default_version"],
            "default_pipeline": r["pipeline_id"],
            "versions": r["versions"],
            "created": r["created"],
        }
        for r in ws.catalog.query(
            "SELECT e.*, v.pipeline_id,"
            " (SELECT count(*) FROM pipeline_endpoint_versions WHERE endpoint_id = e.id) AS versions"
            " FROM pipeline_endpoints e LEFT JOIN pipeline_endpoint_versions v"
            " ON v.endpoint_id = e.id AND v.version = CAST(e.default_version AS INTEGER)"
            " ORDER BY e.created DESC LIMIT ?",
            (LIST_PAGE,),
        )
    ]
    schedules = [
        {
            "id": r["id"],
            "name": r["name"],
            "status": r["status"],
            "pipeline_id": r["pipeline_id"],
            "pipeline_endpoint_id": r["pipeline_endpoint_id"],
            "experiment": r["experiment_name"],
            "recurrence": _loads(r["recurrence"], None),
            "watches": (
                f"{r['datastore']}:{r['path_on_datastore'] or ''}" if r["datastore"] else None
            ),
            "last_fire": r["last_fire"],
            "last_run_id": r["last_run_id"],
            "last_error": r["last_error"],
            "created": r["created"],
        }
        for r in ws.catalog.query(
            "SELECT * FROM schedules ORDER BY created DESC LIMIT ?", (LIST_PAGE,)
        )
    ]
    return {"published": published, "endpoints": endpoints, "schedules": schedules}


def _runs_with_property(ws: Workspace, key: str, value: str) -> list[dict[str, Any]]:
    """The newest :data:`LIST_PAGE` runs whose property ``key`` is ``value``."""
    return [
        {"id": r["id"], "status": r["status"], "created": r["created"]}
        for r in ws.catalog.query(
            "SELECT r.id, r.status, r.created FROM run_properties p JOIN runs r"
            " ON r.seq = p.run_seq WHERE p.key = ? AND p.value = ?"
            " ORDER BY r.created DESC, r.seq DESC LIMIT ?",
            (key, value, LIST_PAGE),
        )
    ]


def _schedules_of(ws: Workspace, column: str, value: str) -> list[dict[str, Any]]:
    return [
        {"id": r["id"], "name": r["name"], "status": r["status"]}
        for r in ws.catalog.query(
            f"SELECT id, name, status FROM schedules WHERE {column} = ? ORDER BY created DESC",
            (value,),
        )
    ]


def published_pipeline(ws: Workspace, pipeline_id: str) -> dict[str, Any]:
    """A published pipeline: its steps (script, arguments, what they wait for, reuse), its
    parameters' defaults, its runs (newest first), the endpoint versions and schedules using it.

    :raises PipelineNotFound: no published pipeline with that id.
    """
    from ..errors import PipelineNotFound

    r = ws.catalog.one("SELECT * FROM published_pipelines WHERE id = ?", (pipeline_id,))
    if r is None:
        raise PipelineNotFound(f"no published pipeline {pipeline_id!r}")
    definition = _loads(r["definition"], {})
    steps = [
        {
            "name": st.get("name"),
            "script": st.get("script") or st.get("command"),
            "arguments": json.dumps(st.get("arguments") or []),
            "upstream": list(st.get("upstream") or []),
            "outputs": list(st.get("outputs") or []),
            "allow_reuse": st.get("allowReuse"),
        }
        for st in definition.get("steps") or []
    ]
    endpoints = [
        {"name": e["name"], "version": e["version"], "default": e["version"] == e["dflt"]}
        for e in ws.catalog.query(
            "SELECT e.name, v.version, CAST(e.default_version AS INTEGER) AS dflt"
            " FROM pipeline_endpoint_versions v JOIN pipeline_endpoints e ON e.id = v.endpoint_id"
            " WHERE v.pipeline_id = ? ORDER BY e.name, v.version",
            (pipeline_id,),
        )
    ]
    return {
        "id": r["id"],
        "name": r["name"],
        "description": r["description"],
        "version": r["version"],
        "status": r["status"],
        "created": r["created"],
        "parameters": _flat(definition.get("parameters") or {}),
        "steps": steps,
        "runs": _runs_with_property(ws, "azureml.pipelineid", r["id"]),
        "endpoints": endpoints,
        "schedules": _schedules_of(ws, "pipeline_id", r["id"]),
    }


def pipeline_endpoint(ws: Workspace, name: str) -> dict[str, Any]:
    """A pipeline endpoint (by name or id): its versions (each a published pipeline), which is
    the default, and the schedules submitting it.

    :raises PipelineNotFound: no endpoint of that name or id.
    """
    from ..errors import PipelineNotFound

    r = ws.catalog.one("SELECT * FROM pipeline_endpoints WHERE name = ? OR id = ?", (name, name))
    if r is None:
        raise PipelineNotFound(f"no pipeline endpoint {name!r}")
    versions = [
        {
            "version": v["version"],
            "pipeline_id": v["pipeline_id"],
            "pipeline_name": v["pname"],
            "created": v["created"],
            "default": str(v["version"]) == str(r["default_version"]),
        }
        for v in ws.catalog.query(
            "SELECT v.version, v.pipeline_id, v.created, p.name AS pname"
            " FROM pipeline_endpoint_versions v LEFT JOIN published_pipelines p"
            " ON p.id = v.pipeline_id WHERE v.endpoint_id = ? ORDER BY v.version DESC LIMIT ?",
            (r["id"], MAX_VERSIONS),
        )
    ]
    return {
        "id": r["id"],
        "name": r["name"],
        "description": r["description"],
        "status": r["status"],
        "default_version": r["default_version"],
        "created": r["created"],
        "versions": versions,
        "schedules": _schedules_of(ws, "pipeline_endpoint_id", r["id"]),
    }


def schedule(ws: Workspace, schedule_id: str) -> dict[str, Any]:
    """A schedule: what it submits (a published pipeline or an endpoint), when (recurrence or
    the datastore path it watches), with which parameters, and the runs it started.

    :raises ScheduleNotFound: no schedule with that id.
    """
    from ..errors import ScheduleNotFound

    r = ws.catalog.one("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
    if r is None:
        raise ScheduleNotFound(f"no schedule {schedule_id!r}")
    endpoint = None
    if r["pipeline_endpoint_id"]:
        endpoint = ws.catalog.scalar(
            "SELECT name FROM pipeline_endpoints WHERE id = ?", (r["pipeline_endpoint_id"],)
        )
    return {
        "id": r["id"],
        "name": r["name"],
        "description": r["description"],
        "status": r["status"],
        "pipeline_id": r["pipeline_id"],
        "pipeline_endpoint": endpoint,
        "experiment": r["experiment_name"],
        "recurrence": _loads(r["recurrence"], None),
        "watches": f"{r['datastore']}:{r['path_on_datastore'] or ''}" if r["datastore"] else None,
        "polling_interval": r["polling_interval"],
        "parameters": _flat(_loads(r["pipeline_parameters"], {})),
        "created": r["created"],
        "last_fire": r["last_fire"],
        "last_run_id": r["last_run_id"],
        "last_error": r["last_error"],
        "runs": _runs_with_property(ws, "azureml.scheduleid", r["id"]),
    }
