"""``OutputFileDatasetConfig.read_delimited_files()`` / ``read_parquet_files()`` (issue 13 §1):
the step that consumes the output gets a Tabular dataset view -- ``run.input_datasets[name]``
is a ``TabularDataset`` over the files the producing step wrote (``path_glob`` picks some of
them), its ``$AZUREML_DATAREFERENCE_<name>`` the folder; a ``ParallelRunStep`` scores it in
mini-batches of rows; unchanged, the consumer is reused, and how the output is read is part
of its fingerprint."""

from __future__ import annotations

import textwrap
from pathlib import Path

from helpers import write

from mlws import Experiment, OutputFileDatasetConfig
from mlws.pipelines import (
    ParallelRunConfig,
    ParallelRunStep,
    Pipeline,
    PipelineData,
    PythonScriptStep,
)

PREP = """
import argparse, os
import pandas as pd
p = argparse.ArgumentParser()
p.add_argument("--out")
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
pd.DataFrame({"id": range(0, 50), "x": [i * 2 for i in range(50)]}).to_csv(
    os.path.join(a.out, "part-0.csv"), index=False)
pd.DataFrame({"id": range(50, 120), "x": [i * 2 for i in range(50, 120)]}).to_csv(
    os.path.join(a.out, "part-1.csv"), index=False)
with open(os.path.join(a.out, "notes.txt"), "w") as f:
    f.write("not a table")
pd.DataFrame({"id": [1], "y": [2.5]}).to_parquet(os.path.join(a.out, "one.parquet"))
"""

USE = """
import json, os, sys
from mlws import Run
from mlws.tabular import TabularDataset
run = Run.get_context()
table = run.input_datasets["cleaned"]
assert isinstance(table, TabularDataset), type(table)
df = table.to_pandas_dataframe()
folder = sys.argv[1]
run.log("rows", len(df))
run.log("x_sum", int(df["x"].sum()))
run.log("is_folder", int(os.path.isdir(folder) and "part-0.csv" in os.listdir(folder)))
run.log("env_is_folder", int(os.environ["AZUREML_DATAREFERENCE_cleaned"] == folder))
"""

PARQUET = """
from mlws import Run
run = Run.get_context()
df = run.input_datasets["cleaned"].to_pandas_dataframe()
run.log("y", float(df["y"][0]))
"""

SCORE = """
def run(mini_batch):
    return [f"{r.id} {r.x + 1}" for r in mini_batch.itertuples()]
"""


def _pipeline(ws, src: Path, glob: str = "part-*.csv"):  # noqa: ANN001, ANN202
    cleaned = OutputFileDatasetConfig("cleaned")
    prep = PythonScriptStep(
        "prep.py", name="prep", arguments=["--out", cleaned], source_directory=str(src)
    )
    table = cleaned.read_delimited_files(path_glob=glob)
    use = PythonScriptStep(
        "use.py", name="use", arguments=[table.as_input("cleaned")], source_directory=str(src)
    )
    cfg = ParallelRunConfig(
        entry_script="score.py",
        source_directory=str(src),
        mini_batch_size=25,
        error_threshold=0,
        process_count_per_node=2,
    )
    score = ParallelRunStep("score", cfg, inputs=[table], output=PipelineData("scores"))
    pq = PythonScriptStep(
        "parquet.py",
        name="pq",
        inputs=[cleaned.read_parquet_files(path_glob="*.parquet")],
        source_directory=str(src),
    )
    return Pipeline(ws, [prep, use, score, pq])


def test_a_step_reads_an_upstream_output_as_a_tabular_dataset(ws, tmp_path):
    src = tmp_path / "src"
    for name, text in [("prep", PREP), ("use", USE), ("score", SCORE), ("parquet", PARQUET)]:
        write(src / f"{name}.py", textwrap.dedent(text))
    exp = Experiment(ws, "tab")
    run = exp.submit(_pipeline(ws, src))
    run.wait_for_completion(show_output=False, timeout_seconds=120)
    use = run.find_step_run("use")[0]
    m = use.get_metrics()
    assert m["rows"] == 120 and m["x_sum"] == sum(i * 2 for i in range(120))
    assert m["is_folder"] == 1 and m["env_is_folder"] == 1
    assert run.find_step_run("pq")[0].get_metrics()["y"] == 2.5
    score = run.find_step_run("score")[0]
    got = score._read_file_text("outputs/scores/parallel_run_step.txt").splitlines()
    assert sorted(got, key=lambda x: int(x.split()[0])) == [f"{i} {i * 2 + 1}" for i in range(120)]
    assert "120 rows in 5 mini-batches" in score._read_file_text("logs/driver.log")

    # Unchanged: every step is reused. Read another way (another glob): the readers run again.
    again = exp.submit(_pipeline(ws, src))
    again.wait_for_completion(show_output=False, timeout_seconds=120)
    assert {s.type for s in again.get_steps()} == {"azureml.ReusedStepRun"}
    other = exp.submit(_pipeline(ws, src, glob="part-0.csv"))
    other.wait_for_completion(show_output=False, timeout_seconds=120)
    kinds = {s.display_name: s.type for s in other.get_steps()}
    assert kinds["prep"] == "azureml.ReusedStepRun" and kinds["pq"] == "azureml.ReusedStepRun"
    assert kinds["use"] == kinds["score"] == "azureml.StepRun"
    assert other.find_step_run("use")[0].get_metrics()["rows"] == 50


NAMES = """
from mlws import OutputFileDatasetConfig
from mlws.pipelines import PythonScriptStep
a, b = OutputFileDatasetConfig(), OutputFileDatasetConfig()
prep = PythonScriptStep("prep.py", name="prep", arguments=["--out", a, "--more", b],
                        source_directory=SRC)
use = PythonScriptStep("use.py", name="use", arguments=[a.read_delimited_files()],
                       source_directory=SRC)
print(prep.outputs[0].name, prep.outputs[1].name)
"""


def test_unnamed_outputs_get_the_same_names_in_every_driver_process_and_are_reused(ws, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "src"
    # The output has no name the script knows: it takes the one table it is given.
    use = USE.replace('input_datasets["cleaned"]', "input_datasets.popitem()[1]")
    use = use.replace('os.environ["AZUREML_DATAREFERENCE_cleaned"]', "folder")
    for name, text in [("prep", PREP), ("use", use)]:
        write(src / f"{name}.py", textwrap.dedent(text))
    script = f"SRC = {str(src)!r}\n" + textwrap.dedent(NAMES)
    names = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert names[0] == names[1] and len(set(names[0])) == 2
    assert all(n.startswith("output_") and len(n) == len("output_") + 8 for n in names[0])

    def pipeline():  # noqa: ANN202
        out = OutputFileDatasetConfig()  # unnamed
        prep = PythonScriptStep(
            "prep.py", name="prep", arguments=["--out", out], source_directory=str(src)
        )
        table = out.read_delimited_files(path_glob="part-*.csv")
        use = PythonScriptStep("use.py", name="use", arguments=[table], source_directory=str(src))
        return Pipeline(ws, [prep, use]), out

    exp = Experiment(ws, "unnamed")
    first, out = pipeline()
    run = exp.submit(first)
    run.wait_for_completion(show_output=False, timeout_seconds=120)
    assert run.find_step_run("use")[0].get_metrics()["rows"] == 120
    again, out2 = pipeline()
    assert out2.pipeline_link["data"].name == out.pipeline_link["data"].name
    rerun = exp.submit(again)
    rerun.wait_for_completion(show_output=False, timeout_seconds=120)
    assert {s.type for s in rerun.get_steps()} == {"azureml.ReusedStepRun"}
