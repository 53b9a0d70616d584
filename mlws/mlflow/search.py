"""MLflow's ``search_runs`` over the catalog: the filter in SQL where it maps exactly, the runs of
the page read in one query per kind of data, as plain records.

A :class:`RunRecord` is what MLflow's ``Run`` shows (its info fields, its tags as MLflow sees
them, params, latest metrics, logged-model outputs) without the entity objects: the store turns
records into ``Run`` objects (:func:`to_run`), ``mlws serve`` turns them into MLflow's JSON
without any (:mod:`mlws.server.mlflow_api`). The rules are MLflow's own, clause by clause:

- a filter clause SQL answers exactly (a param or a plain tag compared with ``=``/``!=``, or
  ``IS [NOT] NULL``; ``run_id`` and ``run_name`` compared with ``=``/``!=``/``IN``/``NOT IN``) is
  a condition of the runs query; every other clause (metrics, ``LIKE``, statuses, times, MLflow's
  system tags) is MLflow's own matching (``SearchUtils``) on the runs the query found;
- the order is MLflow's (start time descending, then run id; each ``order_by`` a stable sort
  with missing values last), computed on the records; with no ``order_by`` and every clause in
  SQL, the query itself orders and pages, so only the page's runs are read;
- page tokens are MLflow's offsets (``SearchUtils.create_page_token``).

Parsing a filter or an ``order_by`` (``sqlparse``) costs more than finding a hundred runs: the
parsed forms are cached by their text.
"""

from __future__ import annotations

import json
import math
import sqlite3
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from mlflow.entities import LifecycleStage, Metric, Run, RunInfo, RunInputs, RunOutputs
from mlflow.entities.logged_model_output import LoggedModelOutput
from mlflow.utils.search_utils import SearchUtils

from ..metrics import decode
from . import entities, uris

if TYPE_CHECKING:
    from ..workspace import Workspace

#: RunInfo's fields, in the order of :attr:`RunRecord.info`.
INFO_KEYS = (
    "run_id",
    "experiment_id",
    "user_id",
    "status",
    "start_time",
    "end_time",
    "lifecycle_stage",
    "artifact_uri",
    "run_name",
)
_INFO_INDEX = {k: i for i, k in enumerate(INFO_KEYS)}
#: MLflow's start time of a run, in SQL as :func:`entities.ms` computes it in Python
#: (``int((start or created) * 1000)``: both truncate the same double).
_START_MS = (
    "CAST((CASE WHEN r.start_time IS NULL OR r.start_time = 0 THEN r.created"
    " ELSE r.start_time END) * 1000 AS INTEGER)"
)
#: Tags MLflow shows that are run fields in mlws (not rows of run_tags).
_SYSTEM_TAGS = (entities.RUN_NAME_TAG, entities.PARENT_TAG, entities.USER_TAG)
#: Tags MLflow shows from the run's fields whatever run_tags holds.
_FIELD_TAGS = (entities.RUN_NAME_TAG, entities.PARENT_TAG)
#: Run seqs per ``IN (...)`` list: under SQLite's limit of variables, 32,766 since SQLite 3.32,
#: 999 before (a page of MLflow's default 1,000 runs is one list).
_CHUNK = 10_000 if sqlite3.sqlite_version_info >= (3, 32) else 900


class RunRecord:
    """One run as MLflow shows it, in plain values: ``info`` (RunInfo's fields in
    :data:`INFO_KEYS` order), ``tags`` (MLflow's, system tags included), ``params``,
    ``metrics`` (``[(key, value, timestamp ms, step)]``, the latest value of each), ``outputs``
    (``[(logged model id, step)]``)."""

    __slots__ = ("info", "metrics", "outputs", "params", "seq", "tags")

    def __init__(
        self,
        seq: int,
        info: tuple[Any, ...],
        tags: dict[str, str],
        params: dict[str, str],
        metrics: list[tuple[str, float, int, int]],
        outputs: list[tuple[str, int]],
    ) -> None:
        self.seq = seq
        self.info = info
        self.tags = tags
        self.params = params
        self.metrics = metrics
        self.outputs = outputs


@lru_cache(maxsize=256)
def parse_filter(filter_string: str | None) -> tuple[dict[str, Any], ...]:
    """MLflow's parsed filter (``SearchUtils.parse_search_filter``), cached by its text. The
    clauses are shared: never change them.

    :raises MlflowException: INVALID_PARAMETER_VALUE, a filter MLflow refuses.
    """
    return tuple(SearchUtils.parse_search_filter(filter_string))


@lru_cache(maxsize=256)
def parse_order(clause: str) -> tuple[str, str, bool]:
    """``(type, key, ascending)`` of one ``order_by`` clause by MLflow's rules, cached.

    :raises MlflowException: INVALID_PARAMETER_VALUE.
    """
    kind, key, ascending = SearchUtils.parse_order_by_for_search_runs(clause)
    return kind, SearchUtils.translate_key_alias(key), ascending


def _sql_clause(c: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """The SQL condition on ``runs r`` of clause ``c`` when it means exactly what MLflow's
    matching does, else None."""
    kind, key, op, value = c["type"], c["key"], c["comparator"].upper(), c["value"]
    if kind in ("tag", "parameter"):
        if kind == "tag" and (key in _SYSTEM_TAGS or key.startswith(entities.LOGGED_MODEL_TAG)):
            return None
        table = "run_tags" if kind == "tag" else "run_properties"
        has = f"r.seq IN (SELECT run_seq FROM {table} WHERE key = ?"
        if op == "IS NULL":
            return f"NOT {has})", [key]
        if op == "IS NOT NULL":
            return f"{has})", [key]
        if not isinstance(value, str):
            return None
        # A NULL value is MLflow's "" (entities); a non-empty value can use the index as is.
        if op == "=":
            if value:
                return f"{has} AND value = ?)", [key, value]
            return f"{has} AND coalesce(value, '') = '')", [key]
        if op == "!=":
            return f"{has} AND coalesce(value, '') != ?)", [key, value]
        return None
    if kind == "attribute":
        key = SearchUtils.translate_key_alias(key)
        column = {
            "run_id": "r.id",
            "run_name": "(CASE WHEN coalesce(r.display_name, '') = '' THEN r.id"
            " ELSE r.display_name END)",
        }.get(key)
        if column is None:
            return None
        if op in ("=", "!=") and isinstance(value, str):
            return f"{column} {op} ?", [value]
        if op in ("IN", "NOT IN") and isinstance(value, (tuple, list)):
            if not value:
                return None
            if not all(isinstance(v, str) for v in value):
                return None
            return f"{column} {op} ({','.join('?' * len(value))})", list(value)
    return None


def _chunks(seqs: list[int]) -> Any:
    for i in range(0, len(seqs), _CHUNK):
        chunk = seqs[i : i + _CHUNK]
        yield chunk, ",".join("?" * len(chunk))


#: A page of runs as one JSON document SQLite writes: per run its fields (:data:`_RUN_FIELDS`),
#: its MLflow tags, params and logged-model tags as JSON objects. Strings and integers are exact
#: in SQLite's JSON and one ``json.loads`` builds the dicts in C: reading 7 tag and param rows
#: per run as tuples and filling dicts in Python cost twice as much. Metric values never go
#: through it: SQLite writes a double in JSON with 15 digits, which loses bits.
_DOC_HEAD = (
    "SELECT json_group_array(json_array(p.seq, p.id, p.experiment, p.display_name,"
    " p.submitter_user, p.parent_id, p.status, p.start_ms, p.end_ms,"
    " (SELECT json_group_object(key, coalesce(value, '')) FROM run_tags t"
    "  WHERE t.run_seq = p.seq AND t.key NOT IN (?, ?){cut}),"
    " (SELECT json_group_object(key, coalesce(value, '')) FROM run_properties q"
    "  WHERE q.run_seq = p.seq),"
)
_PAGE_DOC = _DOC_HEAD.format(cut=" AND NOT (t.key >= ? AND t.key < ?)") + (
    " (SELECT json_group_object(key, coalesce(value, '')) FROM run_tags o"
    "  WHERE o.run_seq = p.seq AND o.key >= ? AND o.key < ?))) FROM ({runs}) p"
)
#: :data:`_PAGE_DOC` for a workspace with no logged-model tag at all (most): the probe of every
#: run's tags for them was an eighth of the document's time.
_PAGE_DOC_NO_MODELS = _DOC_HEAD.format(cut="") + " NULL)) FROM ({runs}) p"
#: The runs columns of a page, in SQL: MLflow's start and end times already in milliseconds.
_RUN_FIELDS = (
    "r.seq, r.id, r.experiment, r.display_name, r.submitter_user, r.parent_id, r.status,"
    f" {_START_MS} AS start_ms, CAST(r.end_time * 1000 AS INTEGER) AS end_ms"
)
#: The key range of the logged-model tags (``mlflow.loggedModel.`` then any text: ``/`` is the
#: character after ``.``), so the run_tags primary key finds them.
_MODEL_RANGE = (entities.LOGGED_MODEL_TAG, entities.LOGGED_MODEL_TAG[:-1] + "/")


#: The run id and start time (ms) of a run in the page document.
_BY_ID, _BY_START = itemgetter(1), itemgetter(7)


def has_logged_models(ws: Workspace) -> bool:
    """Whether any run of ``ws`` has a logged-model tag: one probe of the run_tags (key, value)
    index, which spares a workspace without MLflow 3 logged models (most) a probe of every
    run's tags for them."""
    return bool(
        ws.catalog.rows("SELECT 1 FROM run_tags WHERE key >= ? AND key < ? LIMIT 1", _MODEL_RANGE)
    )


def read_page(
    ws: Workspace,
    where: str,
    args: list[Any],
    tail: str = "",
    tail_args: tuple[Any, ...] = (),
    exp_ids: dict[str, str] | None = None,
) -> list[RunRecord]:
    """Records of the runs ``SELECT ... FROM runs r WHERE <where> <tail>`` finds (``tail``: an
    ``ORDER BY``/``LIMIT`` with ``tail_args``), in MLflow's default order (start time
    descending, then run id; a ``tail`` pages in that order too): the runs, their tags and params
    in one JSON document (:data:`_PAGE_DOC`), their latest metrics as rows
    (:func:`_latest_metrics`). ``exp_ids``: the MLflow id of each mlws experiment the runs are in
    (read from the catalog if not given)."""
    runs = f"SELECT {_RUN_FIELDS} FROM runs r WHERE {where} {tail}"
    if has_logged_models(ws):
        sql, head = _PAGE_DOC, [*_FIELD_TAGS, *_MODEL_RANGE, *_MODEL_RANGE]
    else:
        sql, head = _PAGE_DOC_NO_MODELS, list(_FIELD_TAGS)
    doc = ws.catalog.rows(sql.format(runs=runs), head + list(args) + list(tail_args))[0][0]
    page = json.loads(doc)
    if not page:
        return []
    # MLflow's order whatever order the aggregate took the rows in, sorted here, not by SQL (a
    # sort of computed start times in a temporary b-tree was a fifth of the page's query): two
    # stable sorts on C-level keys, a third of the time of one on a Python key.
    page.sort(key=_BY_ID)
    page.sort(key=_BY_START, reverse=True)
    metrics = _latest_metrics(ws, [p[0] for p in page])
    if exp_ids is None:
        exp_ids = {
            name: entities.experiment_id(name, eid)
            for name, eid in ws.catalog.query("SELECT name, id FROM experiments")
        }
    artifact_uri = uris.run_artifact_uris(ws)
    to_status = entities.TO_MLFLOW
    active = LifecycleStage.ACTIVE
    name_tag, parent_tag, user_tag = entities.RUN_NAME_TAG, entities.PARENT_TAG, entities.USER_TAG
    cut = len(entities.LOGGED_MODEL_TAG)
    out = []
    for seq, run_id, exp, display, user, parent, status, start, end, tags, params, models in page:
        user = user or ""
        name = display or run_id
        tags[name_tag] = name
        if parent:
            tags[parent_tag] = parent
        if user and user_tag not in tags:
            tags[user_tag] = user
        outputs = []
        if models:
            outputs = [
                (k[cut:], int(step))
                for k, v in models.items()
                if (step := json.loads(v or "{}").get("output_step")) is not None
            ]
        info = (
            run_id,
            exp_ids.get(exp, ""),
            user,
            to_status.get(status, "RUNNING"),
            start,
            end,
            active,
            artifact_uri(run_id),
            name,
        )
        out.append(RunRecord(seq, info, tags, params, metrics.get(seq, []), outputs))
    return out


def _latest_metrics(ws: Workspace, seqs: list[int]) -> dict[int, list[tuple[str, float, int, int]]]:
    """``{run seq: [(name, value, timestamp ms, step)]}``: the value at each scalar metric's
    highest step, of the runs ``seqs``.

    A run whose every metric was logged once (``metric_summary.count``: most runs a search
    lists, a value per name) is read by scanning its rows on the metrics key; a run with a
    series, by one index probe per name for its highest step, never a scan of the series.
    Joining the summary for every run cost a third more than the scan. The rows come as plain
    tuples with the timestamp already in milliseconds (SQL's ``CAST`` truncates the same double
    as Python's ``int``): ``sqlite3.Row`` objects and the conversion in Python were a third of
    the time. Metric values never go through SQLite's text or JSON: a double is written there
    with 15 or 17 digits by SQLite's own printf, which does not round-trip every double."""
    metrics: dict[int, list[tuple[str, float, int, int]]] = {}
    rows_of = ws.catalog.rows
    for chunk, marks in _chunks(seqs):
        series = {
            r[0]
            for r in rows_of(
                f"SELECT DISTINCT run_seq FROM metric_summary WHERE run_seq IN ({marks})"
                " AND count > 1",
                chunk,
            )
        }
        rows: list[Any] = []
        single = [s for s in chunk if s not in series] if series else chunk
        if single:
            rows += rows_of(
                "SELECT run_seq, name, value, CAST(time * 1000 AS INTEGER), step, data"
                f" FROM metrics WHERE run_seq IN ({','.join('?' * len(single))})"
                " AND kind = 'scalar' ORDER BY run_seq, name, step",
                single,
            )
        if series:
            rows += rows_of(
                "SELECT m.run_seq, m.name, m.value, CAST(m.time * 1000 AS INTEGER), m.step, m.data"
                " FROM metric_summary s JOIN metrics m ON m.run_seq = s.run_seq AND m.name = s.name"
                f" WHERE s.run_seq IN ({','.join('?' * len(series))}) AND s.kind = 'scalar'"
                " AND m.step = (SELECT max(step) FROM metrics x"
                " WHERE x.run_seq = s.run_seq AND x.name = s.name)"
                " ORDER BY s.run_seq, s.name",
                list(series),
            )
        last_seq, last_name = None, None
        items: list[tuple[str, float, int, int]] = []
        for seq, name, value, t, step, data in rows:
            if data is None and type(value) is float:  # the common case in one test
                item = (name, value, t, step)
            else:
                v = value if data is None else decode(value, data)
                if not isinstance(v, (int, float)) or type(v) is bool:
                    continue
                item = (name, float(v), t, int(step))
            if seq != last_seq:
                items = metrics.setdefault(seq, [])
                last_seq, last_name = seq, None
            if name == last_name:  # a summary that undercounts: the higher step wins
                items[-1] = item
            else:
                items.append(item)
                last_name = name
    return metrics


def search(
    ws: Workspace,
    experiments: dict[str, str],
    filter_string: str | None,
    max_results: int,
    order_by: list[str] | None,
    page_token: Any,
) -> tuple[list[RunRecord], Any]:
    """``(records of the page, next page token or None)``: the runs (children included) of
    the mlws experiments ``experiments`` (``{name: MLflow id}``) matching MLflow filter
    ``filter_string``, in ``order_by``'s order (see the module docstring).

    :raises MlflowException: INVALID_PARAMETER_VALUE (a filter, order or token MLflow refuses).
    """
    from ..lifecycle import reconcile_active

    clauses = parse_filter(filter_string)
    orders = [parse_order(o) for o in order_by or ()]
    start = SearchUtils.parse_start_offset_from_page_token(page_token)
    if not experiments:
        return [], None
    reconcile_active(ws)  # a dead process's run is not shown Running
    where = [f"r.experiment IN ({','.join('?' * len(experiments))})"]
    args: list[Any] = list(experiments)
    rest = []
    for c in clauses:
        sql = _sql_clause(c)
        if sql is None:
            rest.append(c)
        else:
            where.append(sql[0])
            args += sql[1]
    condition = " AND ".join(where)
    sortable = all(k != "attribute" or key in _INFO_INDEX for k, key, _ in orders)
    if not rest and not orders and start == 0:
        # Counted no further than one past the page: a big experiment costs no full count.
        (total,) = ws.catalog.one(
            f"SELECT count(*) FROM (SELECT 1 FROM runs r WHERE {condition} LIMIT ?)",
            [*args, max_results + 1],
        )
        if total <= max_results:  # one page holds every run, in read_page's order
            return read_page(ws, condition, args, exp_ids=experiments), None
    if not rest and not orders:
        # The whole search in SQL: one more run than the page says whether another follows.
        records = read_page(
            ws,
            condition,
            args,
            f"ORDER BY {_START_MS} DESC, r.id LIMIT ? OFFSET ?",
            (max_results + 1, start),
            experiments,
        )
        more = len(records) > max_results
        token = SearchUtils.create_page_token(start + max_results) if more else None
        return records[:max_results], token
    records = read_page(ws, condition, args, exp_ids=experiments)
    if rest:
        records = _match(records, rest, filter_string)
    if sortable:
        for kind, key, ascending in reversed(orders):
            records.sort(key=_sort_key(kind, key, ascending), reverse=not ascending)
    else:  # an attribute a record does not hold: MLflow's sort of the entities
        runs = SearchUtils.sort([to_run(rec) for rec in records], order_by)
        by_id = {rec.info[0]: rec for rec in records}
        records = [by_id[r.info.run_id] for r in runs]
    page = records[start : start + max_results]
    more = start + max_results < len(records)
    return page, SearchUtils.create_page_token(start + max_results) if more else None


def _match(
    records: list[RunRecord], clauses: list[dict[str, Any]], filter_string: str | None
) -> list[RunRecord]:
    """The records whose runs match every clause by MLflow's own matching of one clause (its
    whole filter again, should that classmethod ever be gone)."""
    match = getattr(SearchUtils, "_does_run_match_clause", None)
    if match is None:
        runs = SearchUtils.filter([to_run(rec) for rec in records], filter_string)
        kept = {r.info.run_id for r in runs}
        return [rec for rec in records if rec.info[0] in kept]
    return [rec for rec in records if all(match(run, c) for run in (to_run(rec),) for c in clauses)]


def _sort_key(kind: str, key: str, ascending: bool) -> Any:
    """MLflow's sort key of one ``order_by`` (``SearchUtils._get_value_for_sort``) on records:
    missing values last, NaN after every number."""
    fill = math.inf if ascending else -math.inf

    def value(rec: RunRecord) -> Any:
        if kind == "metric":
            return next((m[1] for m in reversed(rec.metrics) if m[0] == key), None)
        if kind == "parameter":
            return rec.params.get(key)
        if kind == "tag":
            return rec.tags.get(key)
        return rec.info[_INFO_INDEX[key]]

    def sort_key(rec: RunRecord) -> tuple[bool, Any]:
        v = value(rec)
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        if v is None:
            v = fill
        elif missing:
            v = -fill
        return (missing, v) if ascending else (not missing, v)

    return sort_key


def _positional_info() -> bool:
    """Whether MLflow's ``RunInfo`` takes its fields positionally in :data:`INFO_KEYS` order
    and keeps what its keywords would (checked once against the installed MLflow; else
    :func:`to_run` names them). Positionally, its constructor is the cheapest way to make one
    (0.24 µs: Python 3.11 keeps such attributes without a dict), cheaper than writing its
    ``__dict__`` (0.6 µs) or passing keywords (1.2 µs)."""
    try:
        values = tuple("abcdefghi")
        named = RunInfo(**dict(zip(INFO_KEYS, values, strict=True)))
        return vars(RunInfo(*values)) == vars(named) and list(vars(named).values()) == list(values)
    except Exception:  # another MLflow: keywords it is
        return False


_POSITIONAL_INFO = _positional_info()


def _info(info: tuple[Any, ...]) -> RunInfo:
    if _POSITIONAL_INFO:
        return RunInfo(*info)
    return RunInfo(**dict(zip(INFO_KEYS, info, strict=True)))


def to_run(rec: RunRecord) -> Run:
    """The record as MLflow's ``Run``; it takes the record's tag and param dicts (a record
    is made for one answer)."""
    info = RunInfo(*rec.info) if _POSITIONAL_INFO else _info(rec.info)
    metrics = []
    values = {}
    for k, v, t, s in rec.metrics:
        metrics.append(Metric(k, v, t, s))
        values[k] = v
    data = entities.run_data(metrics, rec.params, rec.tags, values)
    outputs = [LoggedModelOutput(m, s) for m, s in rec.outputs] if rec.outputs else []
    return Run(info, data, RunInputs(dataset_inputs=[]), RunOutputs(model_outputs=outputs))


def _info_fields(ws: Workspace, row: Any, exp_id: str) -> tuple[Any, ...]:
    """A record's ``info`` (:data:`INFO_KEYS`) of a ``runs`` row in MLflow experiment
    ``exp_id``, computed as the page query computes it (:data:`_START_MS`)."""
    started = row["start_time"] or row["created"]
    return (
        row["id"],
        exp_id,
        row["submitter_user"] or "",
        entities.TO_MLFLOW.get(row["status"], "RUNNING"),
        int(started * 1000),
        entities.ms(row["end_time"]),
        LifecycleStage.ACTIVE,
        uris.run_artifact_uris(ws)(row["id"]),
        row["display_name"] or row["id"],
    )


def run_info(ws: Workspace, row: Any) -> RunInfo:
    """MLflow's ``RunInfo`` of a ``runs`` row (``sqlite3.Row``), as a search shows it, without
    reading the run's tags, params and metrics (``update_run_info`` answers only this)."""
    exp = ws.catalog.one("SELECT id FROM experiments WHERE name = ?", (row["experiment"],))
    exp_id = entities.experiment_id(row["experiment"], exp["id"] if exp else "")
    return _info(_info_fields(ws, row, exp_id))


def created_run(ws: Workspace, row: Any, exp_id: str, tags: dict[str, str | None]) -> Run:
    """The ``Run`` a search shows of the run of ``row`` just created in MLflow experiment
    ``exp_id`` with ``tags`` (as stored), built without reading it back: it has no params,
    metrics or logged models yet, and its MLflow tags are the stored ones (logged-model tags
    hidden, in key order as the catalog keeps them) with the system tags of its fields."""
    info = _info_fields(ws, row, exp_id)
    shown = {
        k: v or ""
        for k, v in sorted(tags.items())
        if k not in _FIELD_TAGS and not k.startswith(entities.LOGGED_MODEL_TAG)
    }
    shown[entities.RUN_NAME_TAG] = info[8]
    if row["parent_id"]:
        shown[entities.PARENT_TAG] = row["parent_id"]
    if info[2]:
        shown.setdefault(entities.USER_TAG, info[2])
    return to_run(RunRecord(row["seq"], info, shown, {}, [], []))


def to_runs(ws: Workspace, rows: list[Any]) -> list[Run]:
    """``runs`` rows (``sqlite3.Row`` with column ``seq``) as MLflow runs, in their order."""
    by_seq: dict[int, RunRecord] = {}
    for chunk, marks in _chunks([r["seq"] for r in rows]):
        by_seq.update((rec.seq, rec) for rec in read_page(ws, f"r.seq IN ({marks})", chunk))
    return [to_run(by_seq[r["seq"]]) for r in rows]
