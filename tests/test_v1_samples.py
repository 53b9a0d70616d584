"""Patterns of the public v1 samples that mlws missed, each run as the sample has it through the
``azureml`` names: short excerpts of the samples' driver cells, from
Azure/MachineLearningNotebooks at commit f1aff553 (2025-03-14); the path of each sample is
above its test. The whole list of samples tried, with their outcome, is in the README's v1
section."""

from __future__ import annotations

import json

import pytest
from helpers import driver_log

from mlws.v1 import add_to_sys_path


@pytest.fixture(autouse=True)
def azureml_importable(monkeypatch) -> None:  # noqa: ANN001
    """The layer on this process's path, as ``mlws v1 enable`` puts it; notes start afresh."""
    add_to_sys_path()
    monkeypatch.setattr("mlws.v1.names._noted", set())


# how-to-use-azureml/training/using-environments/using-environments.ipynb (cells 10-18, with
# example.py as the script) and how-to-use-azureml/training/train-on-amlcompute/
# train-on-amlcompute.ipynb (cell 26: the target set on the run configuration as an object).
EXAMPLE_PY = 'import os\n\nprint(os.environ.get("MESSAGE"))\n'


def test_get_environment_and_a_target_object_on_the_run_configuration(ws, tmp_path) -> None:  # noqa: ANN001
    from azureml.core import Environment, Experiment, ScriptRunConfig
    from azureml.core.compute import ComputeTarget

    from mlws.errors import UserErrorException

    (tmp_path / "example.py").write_text(EXAMPLE_PY)
    myenv = Environment(name="myenv")
    myenv.environment_variables["MESSAGE"] = "hello"
    myexp = Experiment(workspace=ws, name="environment-example")
    src = ScriptRunConfig(source_directory=str(tmp_path), script="example.py", environment=myenv)
    src.run_config.target = ComputeTarget(workspace=ws, name="local")
    assert src.run_config.target == "local"
    run = myexp.submit(config=src)
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Completed", driver_log(run)
    assert "hello" in driver_log(run)
    env = run.get_environment()
    assert (type(env), env.name, env.environment_variables["MESSAGE"]) == (
        Environment,
        "myenv",
        "hello",
    )
    assert env.docker.enabled is False
    with myexp.start_logging(outputs=False) as interactive:
        with pytest.raises(UserErrorException, match="not submitted with an environment"):
            interactive.get_environment()


# how-to-use-azureml/training/train-on-amlcompute/train-on-amlcompute.ipynb (cells 11, 17,
# 30-32); no run: the cluster is never started.
def test_amlcompute_sizes_status_nodes_and_update(ws) -> None:  # noqa: ANN001
    from azureml.core.compute import AmlCompute, ComputeTarget
    from azureml.core.compute_target import ComputeTargetException

    sizes = AmlCompute.supported_vmsizes(workspace=ws)
    assert [set(s) for s in sizes] == [{"name", "vCPUs", "gpus", "memoryGB", "maxResourceVolumeMB"}]
    compute_config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", max_nodes=4)
    cpu_cluster = ComputeTarget.create(ws, "cpu-cluster", compute_config)
    status = cpu_cluster.get_status()
    assert status == "Stopped"
    details = status.serialize()
    assert details["currentNodeCount"] == 0 and details["scaleSettings"]["maxNodeCount"] == 4
    json.dumps(details)
    assert cpu_cluster.list_nodes() == []
    cpu_cluster.update(idle_seconds_before_scaledown=300)
    again = ComputeTarget(workspace=ws, name="cpu-cluster")
    assert (
        again.get_status().serialize()["scaleSettings"]["nodeIdleTimeBeforeScaleDown"] == "PT300S"
    )
    with pytest.raises(ComputeTargetException, match="min_nodes"):
        cpu_cluster.update(min_nodes=5)  # above max_nodes: nothing changes
    assert ComputeTarget(workspace=ws, name="cpu-cluster").config == again.config
    assert ComputeTarget(workspace=ws, name="local").get_status().serialize() == {
        "provisioningState": "Succeeded"
    }


# how-to-use-azureml/ml-frameworks/scikit-learn/train-hyperparameter-tune-deploy-with-sklearn/
# train-hyperparameter-tune-deploy-with-sklearn.ipynb (cell 29): a curated name in lower case.
def test_curated_environment_names_match_whatever_their_case(ws) -> None:  # noqa: ANN001
    from azureml.core import Environment

    sklearn_env = Environment.get(ws, name="azureml-sklearn-1.5")
    assert sklearn_env.name == "AzureML-sklearn-1.5"
    assert Environment.get(ws, name="AzureML-sklearn-1.5").version == sklearn_env.version


# The same notebook, cells 45-48: RunDetails(hyperdrive_run).show() in a terminal; a sweep logs
# best_child_by_primary_metric, a table metric, on its own row.
def test_run_details_shows_a_table_metrics_last_row_cut_to_a_cell(
    ws, capsys, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    from azureml.core import Experiment
    from azureml.widgets import RunDetails

    from mlws.v1.widgets import CELL_CHARS

    monkeypatch.chdir(tmp_path)  # start_logging takes a snapshot of the current folder
    with Experiment(ws, "sweep-like").start_logging() as run:
        for i in (3, 7):
            run.log_row("best_child_by_primary_metric", run_id=f"HD_1_{i}", metric_value=i / 10)
    assert RunDetails(run).get_widget_data()[0]["best_child_by_primary_metric"] == {
        "run_id": "HD_1_7",
        "metric_value": 0.7,
    }
    RunDetails(run).show()
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) < len(run.id) + 2 * CELL_CHARS, lines
    assert lines[2].rstrip().endswith("…"), lines


# how-to-use-azureml/work-with-data/datasets-tutorial/scriptrun-with-data-input-output/
# how-to-use-scriptrun.ipynb (cells 11-21, on local): an environment listing the SDK itself.
DUMMY_TRAIN = """\
import sys
import os

mounted_input_path = sys.argv[1]
mounted_output_path = sys.argv[2]
with open(mounted_input_path, 'r') as f:
    content = f.read()
    with open(os.path.join(mounted_output_path, 'output.csv'), 'w') as fw:
        fw.write(content)
"""


def test_an_environment_listing_the_sdk_runs_with_the_layer(ws, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from azureml.core import Dataset, Environment, Experiment, ScriptRunConfig
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.data import OutputFileDatasetConfig

    from mlws.v1 import without_sdk

    monkeypatch.chdir(tmp_path)
    (tmp_path / "script_run").mkdir()
    (tmp_path / "script_run" / "dummy_train.py").write_text(DUMMY_TRAIN)
    (tmp_path / "iris.csv").write_text("a,b\n1,2\n")
    def_blob_store = ws.get_default_datastore()
    def_blob_store.upload_files(files=["iris.csv"], target_path="script-run/", overwrite=True)
    input_data = (
        Dataset.File.from_files(def_blob_store.path("script-run/iris.csv"))
        .as_named_input("input")
        .as_mount()
    )
    output = OutputFileDatasetConfig(destination=(def_blob_store, "sample/outputdataset"))
    myenv = Environment("myenv")
    myenv.docker.enabled = True
    myenv.python.conda_dependencies = CondaDependencies.create(pip_packages=["azureml-sdk>=1.12.0"])
    src = ScriptRunConfig(
        source_directory="script_run",
        script="dummy_train.py",
        arguments=[input_data, output],
        environment=myenv,
    )
    run = Experiment(ws, "ScriptRun_sample").submit(config=src)
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Completed", driver_log(run)
    # Nothing to build: the SDK is what the layer stands in for (the submitting Python runs it).
    assert "logs/environment.log" not in run.get_file_names()
    def_blob_store.download("got", prefix="sample/outputdataset")
    assert (
        tmp_path / "got" / "sample" / "outputdataset" / "output.csv"
    ).read_text() == "a,b\n1,2\n"
    keep, sdk = without_sdk(
        [
            "azureml-defaults",
            "azureml-dataset-runtime[pandas,fuse]",
            "azureml-core==1.48",
            "azureml-opendatasets",
            "scikit-learn",
            "azureml-sdk >=1.12",
        ]
    )
    # ... with what they brought that the run needs (here the dataset runtime's readers)
    assert keep == ["azureml-opendatasets", "scikit-learn", "pandas", "pyarrow"]
    assert len(sdk) == 4
    # azureml-mlflow is how v1 environments get MLflow (mlflow-skinny); the plugin needs filelock
    assert without_sdk(["azureml-mlflow", "numpy"]) == (
        ["numpy", "mlflow-skinny", "filelock"],
        ["azureml-mlflow"],
    )
    assert without_sdk(["azureml-mlflow", "mlflow==2.9"])[0] == ["mlflow==2.9", "filelock"]
    assert without_sdk(["pandas==2.2", "azureml-defaults"])[0] == ["pandas==2.2", "pyarrow"]


# tutorials/create-first-ml-experiment/tutorial-1st-experiment-sdk-train.ipynb (cell 15):
# models saved into ./outputs right after start_logging().
def test_v1_start_logging_makes_the_outputs_folder(ws, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from azureml.core import Experiment

    import mlws

    monkeypatch.chdir(tmp_path)
    mlws.Experiment(ws, "mlws-own").start_logging().complete()
    assert not (tmp_path / "outputs").exists()  # mlws's own API leaves the folder alone
    experiment = Experiment(workspace=ws, name="diabetes-experiment")
    for alpha in (0.1, 0.2):
        run = experiment.start_logging()
        run.log("alpha_value", alpha)
        filename = "outputs/" + f"model_alpha_{alpha}.pkl"
        with open(filename, "wb") as f:
            f.write(b"model")
        run.upload_file(name=f"model_alpha_{alpha}.pkl", path_or_stream=filename)
        run.complete()
    assert sorted(r.get_file_names()[0] for r in experiment.get_runs()) == [
        "model_alpha_0.1.pkl",
        "model_alpha_0.2.pkl",
    ]
    monkeypatch.chdir(tmp_path / "outputs")
    experiment.start_logging(outputs=False).complete()
    assert not (tmp_path / "outputs" / "outputs").exists()


# how-to-use-azureml/track-and-monitor-experiments/using-mlflow/train-remote/train-remote.ipynb:
# MLflow in a run whose environment was built (mlws is not installed there, only importable).
def test_mlws_mlflow_plugin_is_found_in_an_interpreter_without_mlws_installed() -> None:
    import subprocess
    import sys
    from pathlib import Path

    import tomllib

    from mlws.processes import V1_SHIM_DIR

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    groups = [g for g in declared if g.startswith("mlflow.")]
    # The base interpreter has neither mlws's distribution nor MLflow: a built environment.
    probe = (
        "import importlib.metadata as m, json, sys; json.dump({g: sorted((e.name, e.value) for e"
        " in m.entry_points(group=g)) for g in sys.argv[1:]}, sys.stdout)"
    )
    base = Path(sys.base_prefix) / "bin" / "python3"
    found = subprocess.run(
        [str(base), "-c", probe, *groups],
        # The layer's folder only: a checkout installed editable also has an mlws.egg-info
        # beside the package, which would answer for the layer's own dist-info.
        env={"PYTHONPATH": V1_SHIM_DIR, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # A checkout installed editable has its own mlws.egg-info beside the package (on that
    # PYTHONPATH too): the same entry points found twice are the same plugin.
    got = {
        g: sorted({tuple(e) for e in entries}) for g, entries in json.loads(found.stdout).items()
    }
    assert got == {g: sorted(declared[g].items()) for g in groups}
    # ... and the wheel carries it (package data, as the layer's modules are).
    import fnmatch

    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["mlws"]
    for f in (root / "mlws" / "v1" / "shim").glob("*.dist-info/*"):
        name = f.relative_to(root / "mlws").as_posix()
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


# how-to-use-azureml/work-with-data/datasets-tutorial/train-with-datasets (cell 19): its conda
# file pins python=3.6.2, and a pyenv machine has a python3.6 shim on the PATH that cannot run.
def test_a_pinned_python_whose_shim_cannot_run_is_noted_not_used(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import os
    import sys

    from mlws.environments import _base_python

    shim = tmp_path / "python3.6"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.6: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    python, note = _base_python("3.6.2", exact=False)
    assert python == sys.executable
    assert note is not None and "python=3.6.2 asked for" in note
