"""Pipelines with v1's other data classes (issue 13 §1): an ``OutputFileDatasetConfig`` written
by one step and read by the next through ``.as_input()`` (or the object itself), uploaded to
its destination and registered when the producing step completes; a ``DataReference`` read by
a step, whose content feeds reuse; the same from a v1 driver through the ``azureml`` layer; what
is refused, in one line and recording nothing."""

from __future__ import annotations

import json
import textwrap

import pytest
from helpers import SCRIPT_PRELUDE, kill_run_processes, run_driver, workspace_fingerprint, write

from mlws import Dataset, Datastore, Experiment, OutputFileDatasetConfig, ScriptRunConfig
from mlws.datastores import DataReference  # what azureml.data.data_reference gives
from mlws.errors import PipelineValidationError, UserErrorException
from mlws.pipelines import Pipeline, PipelineParameter, PythonScriptStep

PREP = """
import argparse, glob
p = argparse.ArgumentParser(); p.add_argument("--raw"); p.add_argument("--out")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
words = sum(len(open(f).read().split()) for f in sorted(glob.glob(a.raw + "/*.txt")))
open(os.path.join(a.out, "count.txt"), "w").write(str(words))
assert os.environ["AZUREML_DATAREFERENCE_raw"] == a.raw  # the DataReference's name, as v1
"""

USE = """
import argparse, json
p = argparse.ArgumentParser(); p.add_argument("--data"); a = p.parse_args()
n = int(open(os.path.join(a.data, "count.txt")).read())
try:
    open(os.path.join(a.data, "count.txt"), "w")
    writable = True
except OSError:
    writable = False
os.makedirs("outputs", exist_ok=True)
json.dump({"n": n, "writable": writable, "env": os.environ.get("AZUREML_DATAREFERENCE_counted")},
          open("outputs/seen.json", "w"))
"""


def _source(tmp_path):
    src = tmp_path / "src"
    write(src / "prep.py", SCRIPT_PRELUDE + textwrap.dedent(PREP))
    write(src / "use.py", SCRIPT_PRELUDE + textwrap.dedent(USE))
    return src


def _pipeline(ws, src, raw, *, direct=False):
    """prep (reads the datastore path ``raw``, writes ``counted``) -> use (reads ``counted``)."""
    store = ws.get_default_datastore()
    out = OutputFileDatasetConfig("counted", destination=(store, "counted/{run-id}"))
    out = out.register_on_complete("word_counts", description="words per batch")
    prep = PythonScriptStep(
        "prep.py",
        name="prep",
        arguments=["--raw", raw, "--out", out],
        source_directory=str(src),
    )
    use = PythonScriptStep(
        "use.py",
        name="use",
        arguments=["--data", out if direct else out.as_input()],
        source_directory=str(src),
    )
    return Pipeline(ws, [use]), prep, use


def _types(run):
    return {s.display_name: s.type for s in run.get_steps()}


def _seen(run, tmp_path):
    step = next(s for s in run.get_steps() if s.display_name in ("use", "use.py"))
    dest = tmp_path / "seen" / f"{step.id}.json"
    step.download_file("outputs/seen.json", str(dest))
    return json.loads(dest.read_text())


def test_an_output_file_dataset_config_flows_to_the_next_step_uploads_registers_and_reuses(
    ws, tmp_path
):
    src = _source(tmp_path)
    store = ws.get_default_datastore()
    write(tmp_path / "raw" / "1.txt", "a b c")
    write(tmp_path / "raw" / "2.txt", "d e")
    store.upload(str(tmp_path / "raw"), "raw", show_progress=False)
    exp = Experiment(ws, "ofd")
    try:
        # 1. The closure reaches prep through the output; use reads a read-only copy of it.
        pipeline, prep, use = _pipeline(ws, src, store.path("raw", data_reference_name="raw"))
        assert pipeline.steps == [prep, use]
        first = exp.submit(pipeline)
        first.wait_for_completion(show_output=False, timeout_seconds=60)
        assert first.get_status() == "Completed"
        seen = _seen(first, tmp_path)
        assert seen["n"] == 5 and seen["writable"] is False
        assert seen["env"] and seen["env"].endswith("counted")
        # The producing step uploaded to its destination and registered the dataset.
        p = first.find_step_run("prep")[0]
        assert (store.root / "counted" / p.id / "count.txt").read_text() == "5"
        ds = Dataset.get_by_name(ws, "word_counts")
        assert ds.version == 1 and ds.description == "words per batch"
        assert ds.to_path() == [f"/counted/{p.id}/count.txt"]
        assert {k: v.id for k, v in p.output_datasets.items()} == {"counted": "word_counts:1"}

        # 2. Nothing changed: both steps are reused (and nothing is registered again).
        second = exp.submit(
            _pipeline(ws, src, store.path("raw", data_reference_name="raw"), direct=True)[0]
        )
        second.wait_for_completion(show_output=False, timeout_seconds=30)
        assert set(_types(second).values()) == {"azureml.ReusedStepRun"}
        assert Dataset.get_by_name(ws, "word_counts").version == 1

        # 3. A file under the datastore path changes: prep runs again, and so does use (its
        # input changed); the new output is the next version of the dataset.
        write(tmp_path / "raw" / "2.txt", "d e f g")
        store.upload(str(tmp_path / "raw"), "raw", overwrite=True, show_progress=False)
        third = exp.submit(_pipeline(ws, src, store.path("raw", data_reference_name="raw"))[0])
        third.wait_for_completion(show_output=False, timeout_seconds=60)
        assert _types(third) == {"prep": "azureml.StepRun", "use": "azureml.StepRun"}
        assert _seen(third, tmp_path)["n"] == 7
        assert Dataset.get_by_name(ws, "word_counts").version == 2

        # 4. A new registration name is new work for prep (use's input is the same files);
        # the output read through as_input() in the step's inputs, its variable in arguments.
        fourth_out = OutputFileDatasetConfig("counted").register_on_complete("other_counts")
        prep2 = PythonScriptStep(
            "prep.py",
            name="prep",
            arguments=[
                "--raw",
                DataReference(store, data_reference_name="raw", path_on_datastore="raw"),
            ]
            + ["--out", fourth_out],
            source_directory=str(src),
        )
        use2 = PythonScriptStep(
            "use.py",
            name="use",
            inputs=[fourth_out.as_input()],
            arguments=["--data", "$AZUREML_DATAREFERENCE_counted"],
            source_directory=str(src),
        )
        assert use2.upstream() == [prep2]
        fourth = exp.submit(Pipeline(ws, [use2]))
        fourth.wait_for_completion(show_output=False, timeout_seconds=60)
        assert _types(fourth)["prep"] == "azureml.StepRun"
        assert _seen(fourth, tmp_path)["n"] == 7
        p4 = fourth.find_step_run("prep")[0]
        # No destination: the default datastore at dataset/{run-id}/{output-name}, as v1.
        assert Dataset.get_by_name(ws, "other_counts").to_path() == [
            f"/dataset/{p4.id}/counted/count.txt"
        ]

        # 5. The datastore path as a DataPath pipeline parameter, given at submission.
        write(tmp_path / "raw2" / "1.txt", "x y")
        write(tmp_path / "raw2" / "2.txt", "z")
        store.upload(str(tmp_path / "raw2"), "raw2", show_progress=False)
        fifth = exp.submit(
            _data_path_pipeline(ws, src, store)[0], pipeline_parameters={"raw": store.path("raw2")}
        )
        fifth.wait_for_completion(show_output=False, timeout_seconds=60)
        assert _seen(fifth, tmp_path)["n"] == 3
        assert json.loads(fifth.get_properties()["azureml.parameters"]) == {
            "raw": {"datastore": store.name, "path": "raw2"}
        }
    finally:
        kill_run_processes(ws)


def _data_path_pipeline(ws, src, store):
    """prep reading the files a DataPath parameter ``raw`` names (default: ``raw``) -> use."""
    from mlws.v1.data import DataPathComputeBinding

    raw = PipelineParameter("raw", default_value=DataReference(store, "raw"))
    return _pipeline(ws, src, (raw, DataPathComputeBinding(mode="download")))


def test_unsupported_data_uses_get_one_line_and_record_nothing(ws, tmp_path):
    src = _source(tmp_path)
    exp = Experiment(ws, "x")
    before = workspace_fingerprint(ws.path)
    out = OutputFileDatasetConfig("counted")
    for call, kwargs, match in [
        (out.read_delimited_files, {"partition_format": "{x}/f.csv"}, "not supported"),
        (out.read_parquet_files, {"set_column_types": {"a": "int"}}, "not supported"),
        (out.read_delimited_files, {"separator": ";;"}, "separator is one character"),
        (out.read_delimited_files, {"path_glob": "../*.csv"}, "path_glob is a pattern inside"),
    ]:
        with pytest.raises(UserErrorException, match=match) as e:
            call(**kwargs)
        assert "\n" not in str(e.value)
    # A single run cannot read an output as a table either.
    with pytest.raises(UserErrorException, match="later pipeline step"):
        exp.submit(ScriptRunConfig(str(src), "use.py", arguments=[out.read_delimited_files()]))
    with pytest.raises(UserErrorException, match="invalid data reference name 'raw-1'"):
        ws.get_default_datastore().path("raw", data_reference_name="raw-1")
    # A single run cannot read an output as an input: no step writes it.
    with pytest.raises(UserErrorException, match="later pipeline step") as e:
        exp.submit(ScriptRunConfig(str(src), "use.py", arguments=["--data", out.as_input()]))
    assert "\n" not in str(e.value)
    # Two steps cannot both write one output.
    PythonScriptStep("prep.py", name="a", outputs=[out], source_directory=str(src))
    with pytest.raises(UserErrorException, match="is an output of step 'a' already"):
        PythonScriptStep("prep.py", name="b", outputs=[out], source_directory=str(src))
    # An unregistered destination, a datastore path with no file: refused at submit.
    gone = Datastore.register_local(ws, "gone", tmp_path / "gone")
    empty = ws.get_default_datastore().path("nothing_here")
    gone.unregister()
    before = workspace_fingerprint(ws.path)
    cases = [
        (OutputFileDatasetConfig("o", destination=(gone, "x/{run-id}")), "raw", "'gone'"),
        (OutputFileDatasetConfig("o"), empty, "input"),
    ]
    raw_a, raw_b = (ws.get_default_datastore().path(p, data_reference_name="r") for p in "ab")
    cases.append((OutputFileDatasetConfig("o"), raw_a, "two different inputs are named 'r'"))
    for output, raw, expected in cases:
        args = ["--raw", raw, "--out", output] + (["--x", raw_b] if raw is raw_a else [])
        step = PythonScriptStep("prep.py", name="p", arguments=args, source_directory=src)
        with pytest.raises(PipelineValidationError) as e:
            exp.submit(Pipeline(ws, [step]))
        assert expected in str(e.value) and "\n" not in str(e.value)
    # A DataPath parameter given no DataPath, a datastore or a path that is not there.
    store = ws.get_default_datastore()
    write(tmp_path / "raw" / "1.txt", "a")
    store.upload(str(tmp_path / "raw"), "raw", show_progress=False)
    pipeline = _data_path_pipeline(ws, src, store)[0]
    before = workspace_fingerprint(ws.path)
    for value, expected in [
        ("raw", "'raw' takes a DataPath"),
        (DataReference(gone, "x"), "no datastore named 'gone'"),
        (store.path("nothing_here"), "'nothing_here') matches no file"),
        ({"DataStoreName": store.name}, "'raw' takes a DataPath"),
    ]:
        with pytest.raises(PipelineValidationError) as e:
            exp.submit(pipeline, pipeline_parameters={"raw": value})
        assert expected in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PipelineValidationError, match="'x' takes a value, not a DataPath"):
        bad = PythonScriptStep(
            "prep.py", name="q", arguments=[PipelineParameter("x", 1)], source_directory=src
        )
        exp.submit(Pipeline(ws, [bad]), pipeline_parameters={"x": store.path("raw")})
    assert workspace_fingerprint(ws.path) == before
    # Not given: the default path's files.
    from mlws.pipelines.graph import freeze

    spec = freeze(pipeline)
    assert spec["parameters"] == {"raw": {"datastore": store.name, "path": "raw"}}
    (prep,) = [s for s in spec["steps"] if s["name"] == "prep"]
    (raw,) = prep["datasets"]
    assert raw["dataPathParameter"] == "raw" and raw["mode"] == "download"


V1_DRIVER = """
from azureml.core import Workspace, Experiment
from azureml.data import OutputFileDatasetConfig
from azureml.data.data_reference import DataReference
from azureml.pipeline.core import Pipeline
from azureml.pipeline.steps import PythonScriptStep

ws = Workspace.from_config()
store = ws.get_default_datastore()
raw = DataReference(datastore=store, data_reference_name="raw", path_on_datastore="raw")
out = OutputFileDatasetConfig(name="counted", destination=(store, "v1/{run-id}"))
prep = PythonScriptStep(script_name="prep.py", source_directory="src", compute_target="local",
                        arguments=["--raw", raw, "--out", out.register_on_complete("v1_counts")])
use = PythonScriptStep(script_name="use.py", source_directory="src",
                       arguments=["--data", out.as_input(name="counted")])
run = Experiment(ws, "v1-ofd").submit(Pipeline(workspace=ws, steps=[use]))
print(run.id)
"""


def test_a_v1_driver_passes_an_output_file_dataset_config_and_a_data_reference(ws, tmp_path):
    project = tmp_path / "project"
    for name, body in (("prep.py", PREP), ("use.py", USE)):
        write(project / "src" / name, SCRIPT_PRELUDE + textwrap.dedent(body))
    write(tmp_path / "raw" / "1.txt", "one two")
    write(tmp_path / "raw" / "2.txt", "three")  # (a folder of one file would be given the file)
    store = ws.get_default_datastore()
    store.upload(str(tmp_path / "raw"), "raw", show_progress=False)
    write(project / "driver.py", V1_DRIVER)
    try:
        r = run_driver(project, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        run = ws.get_run(r.stdout.strip().splitlines()[-1])
        run.wait_for_completion(show_output=False, timeout_seconds=60)
        assert run.get_status() == "Completed"
        assert _seen(run, tmp_path)["n"] == 3
        p = run.find_step_run("prep.py")[0]
        assert (store.root / "v1" / p.id / "count.txt").read_text() == "3"
        assert Dataset.get_by_name(ws, "v1_counts").to_path() == [f"/v1/{p.id}/count.txt"]
    finally:
        kill_run_processes(ws)
