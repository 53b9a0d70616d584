"""``search_runs`` of the mlws tracking store (``mlws.mlflow.search``): what SQL answers, what
MLflow's own matching answers, and the order and pages, are those of MLflow's ``SearchUtils``
over the same runs; ``mlws serve``'s JSON of a record is that of its entity."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

# MLflow is imported by the tests that use it, not at collection: importing it took 3 s of the
# 4.5 s every pytest process (the serial pass and each xdist worker) spends collecting.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs mlflow")

N = 14


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A store over a workspace of :data:`N` runs (and a child) whose tags, params, metrics,
    names, statuses and start times cover what filters and orders compare: empty values,
    missing keys, NaN, ties of start time, a series whose latest value is not its last."""
    from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag

    from mlws import Workspace
    from mlws.mlflow import uris
    from mlws.mlflow.store import MlwsTrackingStore

    ws = Workspace.create(tmp_path_factory.mktemp("search") / "ws")
    store = MlwsTrackingStore(uris.tracking_uri(ws))
    exp = store.create_experiment("grammar")
    other = store.create_experiment("other")
    ids = []
    for i in range(N):
        tags = [RunTag("k", "v" if i % 3 == 0 else "w"), RunTag("team", f"t{i % 2}")]
        if i % 4 == 0:
            tags.append(RunTag("e", ""))
        name = f"named-{i}" if i % 2 else None
        run = store.create_run(
            exp, "someone" if i % 5 == 0 else None, 5_000 + 1000 * (i // 2), tags, name
        )
        rid = run.info.run_id
        params = [Param("p", str(i % 5))] + ([Param("q", "x")] if i % 2 == 0 else [])
        metrics = [Metric("loss", 1.0 / (i + 1), 1, 0), Metric("loss", 2.0 + i, 2, 1)]
        if i == 5:
            metrics.append(Metric("acc", math.nan, 1, 0))
        elif i != 6:
            metrics.append(Metric("acc", (i * 7 % 10) / 10, 1, 0))
        if i == 7:  # the latest value is the highest step's, logged first
            metrics += [Metric("f1", 0.9, 1, 5), Metric("f1", 0.1, 2, 3)]
        store.log_batch(rid, metrics, params, [])
        if i == 1:  # text SQLite writes into JSON: quotes, escapes, non-ASCII, a NULL value
            store.set_tag(rid, RunTag('weird "k"', 'a\\b\n\t"c" é ☃ \x01 </x>'))
            store.log_param(rid, Param("json", '{"a": [1, 2]}'))
            ws.get_run(rid).tag("nothing", None)
        if i != N - 1:
            store.update_run_info(rid, "FAILED" if i % 6 == 1 else "FINISHED", None, None)
        ids.append(rid)
    model = store.create_logged_model(exp, "m", ids[3])
    store.log_outputs(ids[3], [LoggedModelOutput(model.model_id, 2)])
    child = store.create_run(exp, None, 4_000, [RunTag("mlflow.parentRunId", ids[0])], "kid")
    store.update_run_info(child.info.run_id, "FINISHED", None, None)
    store.create_run(other, None, 4_000, [RunTag("k", "v")], "elsewhere")
    store.flush()
    yield ws, store, exp, ids + [child.info.run_id]
    ws.close()


def _reference(ws: Any, flt: str, order: list[str] | None, n: int, token: Any) -> Any:
    """MLflow's own filter, order and paging over every run of the experiment's entities."""
    from mlflow.utils.search_utils import SearchUtils

    from mlws.mlflow.search import to_runs

    runs = to_runs(ws, ws.catalog.query("SELECT * FROM runs WHERE experiment = 'grammar'"))
    runs = SearchUtils.sort(SearchUtils.filter(runs, flt), order)
    return SearchUtils.paginate(runs, token, n)


FILTERS = [
    "",
    "tags.k = 'v'",
    "tags.k != 'v'",
    "tags.e = ''",
    "tags.e != ''",
    "tags.e IS NULL",
    "tags.e IS NOT NULL",
    "params.q IS NULL",
    "params.p = '1'",
    "params.p != '1' and tags.team = 't0'",
    "metrics.acc > 0.3",
    "metrics.acc <= 0.5 and tags.k = 'w'",
    "metrics.f1 = 0.9",
    "attributes.run_name = 'named-3'",
    "run_name != 'named-3' and tags.k = 'v'",
    "tags.mlflow.runName LIKE 'named%'",
    "tags.`mlflow.parentRunId` IS NOT NULL",
    "tags.`mlflow.user` = 'someone'",
    "attributes.status = 'FAILED'",
    "params.p LIKE '1%'",
    "tags.k ILIKE 'V'",
    "attributes.start_time > 7000",
]
ORDERS = [
    None,
    ["metrics.acc DESC"],
    ["metrics.acc ASC"],
    ["params.p ASC", "metrics.loss DESC"],
    ["tags.e DESC"],
    ["params.q"],
    ["attributes.run_name ASC"],
    ["start_time ASC"],
    ["attributes.status DESC", "attributes.end_time"],
]


def test_every_filter_and_order_answers_as_mlflows_own_search(made: Any) -> None:
    ws, store, exp, ids = made
    filters = FILTERS + [f"attributes.run_id = '{ids[2]}'", f"run_id IN ('{ids[1]}', '{ids[4]}')"]
    filters.append(f"attributes.run_id NOT IN ('{ids[1]}') and tags.k = 'v'")
    for flt in filters:
        for order in ORDERS:
            want, _ = _reference(ws, flt, order, 1000, None)
            got = store.search_runs([exp], flt, 1, 1000, order)
            assert [r.info.run_id for r in got] == [r.info.run_id for r in want], (flt, order)
            assert got.token is None
    assert len(store.search_runs([exp], "", 1, 1000)) == N + 1  # the child too, not "other"'s
    got = store.search_runs([exp], "tags.k = 'v'", 1, 1000)[0]
    want = _reference(ws, "tags.k = 'v'", None, 1, None)[0][0]
    assert got.to_dictionary() == want.to_dictionary()


@pytest.mark.parametrize(
    ("flt", "order"), [("", None), ("tags.k = 'w'", None), ("", ["metrics.acc DESC"])]
)
def test_pages_are_mlflows_pages(made: Any, flt: str, order: list[str] | None) -> None:
    """Paged in SQL (no order, every clause in SQL) or over the records: MLflow's pages and
    tokens either way."""
    ws, store, exp, _ = made
    token, seen = None, []
    while True:
        want, want_token = _reference(ws, flt, order, 4, token)
        page = store.search_runs([exp], flt, 1, 4, order, token)
        assert [r.info.run_id for r in page] == [r.info.run_id for r in want]
        assert page.token == want_token
        seen += [r.info.run_id for r in page]
        if page.token is None:
            break
        token = page.token
    assert len(seen) == len(set(seen)) == len(_reference(ws, flt, None, 1000, None)[0])


def test_searched_runs_are_the_entities_mlflows_constructors_make(made: Any) -> None:
    """Every run of a search (one page of all runs, read without a sort in SQL, and pages
    sorted by SQL) equals the ``Run`` built with MLflow's own constructors from what the
    catalog holds, read row by row (no JSON): info, tags, params, latest metrics, outputs."""
    from mlflow.entities import (
        LifecycleStage,
        Metric,
        Param,
        Run,
        RunData,
        RunInfo,
        RunInputs,
        RunOutputs,
        RunTag,
    )

    from mlws.mlflow import entities, uris

    ws, store, exp, ids = made
    q = ws.catalog.query
    statuses = entities.TO_MLFLOW

    def expected(rid: str) -> Run:
        row = q("SELECT * FROM runs WHERE id = ?", (rid,))[0]
        tags = {
            k: v or ""
            for k, v in q("SELECT key, value FROM run_tags WHERE run_seq = ?", (row["seq"],))
            if k not in (entities.RUN_NAME_TAG, entities.PARENT_TAG)
            and not k.startswith(entities.LOGGED_MODEL_TAG)
        }
        tags[entities.RUN_NAME_TAG] = row["display_name"] or rid
        if row["parent_id"]:
            tags[entities.PARENT_TAG] = row["parent_id"]
        if row["submitter_user"]:
            tags.setdefault(entities.USER_TAG, row["submitter_user"])
        params = [
            Param(k, v or "")
            for k, v in q("SELECT key, value FROM run_properties WHERE run_seq = ?", (row["seq"],))
        ]
        names = [
            r[0] for r in q("SELECT name FROM metric_summary WHERE run_seq = ?", (row["seq"],))
        ]
        metrics = [max(store.get_metric_history(rid, n), key=lambda m: m.step) for n in names]
        metrics = [Metric(m.key, m.value, m.timestamp, m.step) for m in metrics]
        info = RunInfo(
            run_id=rid,
            experiment_id=exp,
            user_id=row["submitter_user"] or "",
            status=statuses[row["status"]],
            start_time=int((row["start_time"] or row["created"]) * 1000),
            end_time=None if row["end_time"] is None else int(row["end_time"] * 1000),
            lifecycle_stage=LifecycleStage.ACTIVE,
            artifact_uri=uris.run_artifact_uri(ws, rid),
            run_name=row["display_name"] or rid,
        )
        data = RunData(metrics, params, [RunTag(k, v) for k, v in tags.items()])
        outputs = store.get_run(rid).outputs
        return Run(info, data, RunInputs(dataset_inputs=[]), outputs or RunOutputs([]))

    def same(got: Run, want: Run) -> None:
        assert vars(got.info) == vars(want.info)
        assert got.data.tags == want.data.tags and got.data.params == want.data.params
        assert got.data.metrics == want.data.metrics
        key = lambda m: m.key  # noqa: E731
        assert sorted(got.data._metric_objs, key=key) == sorted(want.data._metric_objs, key=key)
        assert got.inputs == want.inputs and got.outputs == want.outputs

    every = store.search_runs([exp], "", 1, 1000)
    assert {r.info.run_id for r in every} == set(ids)
    for run in every:
        same(run, expected(run.info.run_id))
    paged = store.search_runs([exp], "", 1, 5)  # sorted and paged by SQL
    assert [r.info.run_id for r in paged] == [r.info.run_id for r in every][:5]
    for run in paged:
        same(run, expected(run.info.run_id))
    weird = store.get_run(ids[1]).data
    assert weird.tags['weird "k"'] == 'a\\b\n\t"c" é ☃ \x01 </x>'
    assert weird.tags["nothing"] == "" and weird.params["json"] == '{"a": [1, 2]}'


def test_bad_searches_are_mlflows_errors(made: Any) -> None:
    from mlflow.exceptions import MlflowException

    _, store, exp, _ = made
    for args in (
        ("metrics.acc >>> 1", None),
        ("tags.k = 'v'", ["metrics.acc SIDEWAYS"]),
        ("nonsense.k = 'v'", None),
    ):
        with pytest.raises(MlflowException) as bad:
            store.search_runs([exp], args[0], 1, 10, args[1])
        assert bad.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as bad:
        store.search_runs(["no-such-experiment"], "", 1, 10)
    assert bad.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_served_json_of_a_record_is_its_runs_json(made: Any) -> None:
    """``mlws serve`` answers records as JSON without entities: the same JSON as the entity's
    (NaN spelt as protobuf does), and the cyclic GC is back on after a search."""
    import gc

    from mlws.mlflow.search import to_run
    from mlws.server.mlflow_api import record_json, records_text, run_json

    _, store, exp, _ = made
    records, _ = store.search_records([exp], "", 1, 1000, None, None)
    assert gc.isenabled()
    for rec in records:
        assert record_json(rec) == run_json(to_run(rec))
    text = records_text(records)
    assert json.loads(text) == [record_json(r) for r in records]
    assert text == json.dumps([record_json(r) for r in records], separators=(",", ":"))
    nan = next(r for r in records if any(m[0] == "acc" and m[1] != m[1] for m in r.metrics))
    assert {"key": "acc", "value": "NaN", "timestamp": 1, "step": 0} in record_json(nan)["data"][
        "metrics"
    ]
    assert sum(1 for r in records if r.outputs) == 1  # a logged model's output is answered too


def test_records_of_a_workspace_without_logged_models_skip_their_probe(
    made: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page read for a workspace without logged models (no probe of every run's tags for
    them) gives the same records as the full read, for every run without a logged model."""
    from mlws.mlflow import search

    ws, store, exp, ids = made
    assert search.has_logged_models(ws)
    full = {r.info[0]: r for r in store.search_records([exp], "", 1, 1000, None, None)[0]}
    monkeypatch.setattr(search, "has_logged_models", lambda ws: False)
    plain = {r.info[0]: r for r in store.search_records([exp], "", 1, 1000, None, None)[0]}
    assert full.keys() == plain.keys() == set(ids)
    for rid, rec in full.items():
        other = plain[rid]
        if rec.outputs:  # the run with a logged model: the probe is what hides its tag
            assert not other.outputs and any(
                k.startswith("mlflow.loggedModel.") for k in other.tags
            )
            continue
        assert (rec.info, rec.tags, rec.params, rec.metrics) == (
            other.info,
            other.tags,
            other.params,
            other.metrics,
        )


def test_latest_metrics_are_the_logged_doubles_bit_for_bit(made: Any) -> None:
    """Latest metric values come back exactly as logged (never through SQLite's text or JSON,
    whose printf loses bits of some doubles): extremes, subnormals, infinities, NaN, an
    integer-valued double, a value SQLite's 15 digits cannot hold, and a series whose latest
    step was logged first; timestamps are the logged milliseconds."""
    import struct

    from mlflow.entities import Metric

    ws, store, _, _ = made
    exp = store.create_experiment("doubles")
    values = {
        "max": 1.7976931348623157e308,
        "big": -1.1364298245299323e229,  # SQLite's printf('%!.17g') answers ...321e+229
        "tiny": 5e-324,
        "small": 2.2250738585072014e-308,
        "third": 1 / 3,
        "sum": 0.1 + 0.2,
        "int": 9007199254740992.0,
        "inf": math.inf,
        "-inf": -math.inf,
        "nan": math.nan,
    }
    rid = store.create_run(exp, None, 1_000, [], "doubles").info.run_id
    ts = 1_796_479_972_771
    metrics = [Metric(k, v, ts + i, i) for i, (k, v) in enumerate(values.items())]
    metrics += [Metric("series", 0.7, ts, 9), Metric("series", 0.1, ts, 2)]
    store.log_batch(rid, metrics, [], [])
    store.flush()
    (run,) = store.search_runs([exp], "", 1, 10)
    bits = lambda v: struct.pack("<d", v)  # noqa: E731
    got = run.data.metrics
    assert {k: bits(v) for k, v in got.items()} == {
        **{k: bits(v) for k, v in values.items()},
        "series": bits(0.7),
    }
    objs = {m.key: (m.timestamp, m.step) for m in run.data._metric_objs}
    assert objs == {**{k: (ts + i, i) for i, k in enumerate(values)}, "series": (ts, 9)}


def test_ending_a_run_answers_the_info_a_search_shows(made: Any) -> None:
    """``update_run_info`` answers the run's info without reading the whole run: the same
    fields as the run read back (names, users, children, the default experiment, a run just
    ended, a rename)."""
    ws, store, exp, ids = made
    rid = store.create_run("0", "me", 2_000, [], None).info.run_id
    for run_id, status, name in [(i, "FINISHED", None) for i in ids[:6]] + [
        (rid, "KILLED", "renamed"),
        (ids[-1], "FINISHED", None),
    ]:
        info = store.update_run_info(run_id, status, None, name)
        assert vars(info) == vars(store.get_run(run_id).info)
    ended = store.get_run(rid).info
    assert (ended.status, ended.run_name, ended.experiment_id) == ("KILLED", "renamed", "0")


def test_a_created_run_is_the_run_read_back(made: Any) -> None:
    """``create_run`` answers the run without reading it back: the same entity as the run
    read back, whatever tags, names, users, parents and experiments it was made with."""
    from mlflow.entities import RunTag

    ws, store, exp, ids = made
    cases = [
        ("0", None, None, [], None),
        (exp, "someone", 3_000, [RunTag("z", "1"), RunTag("a", ""), RunTag("é", "x")], "n"),
        (exp, None, None, [RunTag("mlflow.runName", "tagged"), RunTag("mlflow.user", "t")], None),
        (
            exp,
            "u",
            0,
            [RunTag("mlflow.parentRunId", ids[2]), RunTag("mlflow.loggedModel.m", "{}")],
            "",
        ),
    ]
    for exp_id, user, start, tags, name in cases:
        made_run = store.create_run(exp_id, user, start, tags, name)
        read = store.get_run(made_run.info.run_id)
        assert vars(made_run.info) == vars(read.info)
        assert list(made_run.data.tags.items()) == list(read.data.tags.items())
        assert (
            (made_run.data.params, made_run.data.metrics)
            == ({}, {})
            == (read.data.params, read.data.metrics)
        )
        assert made_run.inputs == read.inputs and made_run.outputs == read.outputs
        store.update_run_info(made_run.info.run_id, "FINISHED", None, None)


def test_catalog_rows_are_plain_tuples_and_leave_query_its_rows(made: Any) -> None:
    """``Catalog.rows`` (the search's reads of many rows) gives tuples; ``query`` on the same
    connection still gives ``sqlite3.Row``; bad SQL is an MlwsError."""
    import sqlite3

    from mlws.errors import MlwsError

    ws = made[0]
    sql = "SELECT id, experiment FROM runs ORDER BY seq LIMIT 2"
    rows = ws.catalog.rows(sql)
    assert [type(r) for r in rows] == [tuple, tuple]
    assert [tuple(r) for r in ws.catalog.query(sql)] == rows
    assert isinstance(ws.catalog.query(sql)[0], sqlite3.Row)
    with pytest.raises(MlwsError):
        ws.catalog.rows("SELECT nothing FROM nowhere")


def test_an_experiment_without_runs_answers_an_empty_page(tmp_path: Path) -> None:
    """A workspace without runs, or an experiment without any, answers an empty page."""
    from mlws import Workspace
    from mlws.mlflow import uris
    from mlws.mlflow.store import MlwsTrackingStore

    ws = Workspace.create(tmp_path / "ws")
    store = MlwsTrackingStore(uris.tracking_uri(ws))
    exp = store.create_experiment("empty")
    page = store.search_runs([exp], "tags.k = 'v'", 1, 10, ["metrics.acc DESC"])
    assert list(page) == [] and page.token is None
    assert list(store.search_runs([], "", 1, 10)) == []
    ws.close()
