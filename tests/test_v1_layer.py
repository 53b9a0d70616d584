"""The ``azureml`` import layer (issue 12 section 1): v1 import paths, v1 training scripts in runs
and callables, a v1 driver script end to end, the real azureml-core winning over the layer, and
``mlws v1 enable|disable|status``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import driver_log, invoke, one_error_line, run_v1_driver

from mlws.processes import python_path
from mlws.v1 import SHIM_DIR
from mlws.v1 import install as v1_install

ROOT = Path(__file__).resolve().parent.parent

#: AZUREML_V1.md (a)0: the import paths v1 code really uses, all of which must import.
V1_IMPORTS = """
from azureml.core import Workspace, Experiment, ScriptRunConfig, Environment, Run, Dataset
from azureml.core import ComputeTarget, Datastore, Model, Webservice, Keyvault, RunConfiguration
from azureml.core import VERSION
from azureml.core.compute import ComputeTarget, AmlCompute, RemoteCompute
from azureml.core.compute_target import ComputeTargetException
from azureml.core.conda_dependencies import CondaDependencies
from azureml.core.runconfig import RunConfiguration, CondaDependencies, DEFAULT_CPU_IMAGE
from azureml.core.environment import Environment, CondaDependencies
from azureml.core.script_run_config import ScriptRunConfig
from azureml.core.run import Run
from azureml.core.model import Model, InferenceConfig
from azureml.core.datastore import Datastore
from azureml.core.dataset import Dataset
from azureml.core.keyvault import Keyvault
from azureml.core.webservice import AciWebservice, AksWebservice, LocalWebservice, Webservice
from azureml.core.authentication import InteractiveLoginAuthentication
from azureml.core.authentication import ServicePrincipalAuthentication
from azureml.data import OutputFileDatasetConfig
from azureml.data.datapath import DataPath, DataPathComputeBinding
from azureml.data.data_reference import DataReference
from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
from azureml.data.output_dataset_config import OutputFileDatasetConfig
from azureml.exceptions import ComputeTargetException, WebserviceException, UserErrorException
from azureml.widgets import RunDetails
from azureml.telemetry import set_diagnostics_collection
from azureml.contrib.services.aml_request import rawhttp, AMLRequest
from azureml.contrib.services.aml_response import AMLResponse
import azureml.train.hyperdrive, azureml.pipeline.core, azureml.pipeline.steps
"""


def _python(
    code: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _shim_env(**extra: str) -> dict[str, str]:
    """This process's environment with mlws's layer on PYTHONPATH as runs get it."""
    return {**os.environ, "PYTHONPATH": python_path(os.environ.get("PYTHONPATH")), **extra}


def _fake_real_sdk(folder: Path) -> Path:
    """A stand-in for an installed azureml-core: a pkgutil namespace ``azureml`` (as the real
    one) whose ``azureml.core`` says who it is."""
    pkg = folder / "azureml"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    )
    (pkg / "core" / "__init__.py").write_text("REAL = True\nVERSION = '1.61.0'\n")
    return folder


# -- imports -----------------------------------------------------------------------------------
def test_every_v1_import_path_imports_and_costs_little():
    code = (
        "import sys, time\nt0 = time.perf_counter()\nimport mlws\nt1 = time.perf_counter()\n"
        "import azureml.core\nt2 = time.perf_counter()\n"
        + V1_IMPORTS
        + "HEAVY = ('numpy', 'pandas', 'dask', 'distributed', 'joblib', 'uvicorn', 'sqlite_utils')\n"
        "print(json.dumps({'core': azureml.core.__file__, 'version': VERSION,"
        " 'heavy': [m for m in HEAVY if m in sys.modules],"
        " 'mlws_ms': (t1 - t0) * 1000, 'azureml_ms': (t2 - t1) * 1000}))\n"
    )
    r = _python("import json\n" + code, env=_shim_env())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["core"].startswith(SHIM_DIR)
    assert out["version"].startswith("1.")
    # Every name above was imported, yet nothing heavy came with them: the layer is lazy.
    assert out["heavy"] == [], out


def test_missing_v1_names_raise_a_clear_import_error_never_attribute_error():
    code = textwrap.dedent(
        """
        import importlib
        from azureml.pipeline.core import PublishedPipeline, PipelineEndpoint
        from azureml.pipeline.core.schedule import Schedule, ScheduleRecurrence
        from azureml.pipeline.steps import ParallelRunStep, ParallelRunConfig
        for mod, name in [("azureml.pipeline.steps", "DatabricksStep"),
                          ("azureml.core.compute", "DatabricksCompute"),
                          ("azureml.core.compute", "AksCompute")]:
            try:
                exec(f"from {mod} import {name}")
            except ImportError as e:
                assert type(e) is ImportError, type(e)
                print(str(e).splitlines()[0])
        """
    )
    r = _python(code, env=_shim_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert "not in mlws yet" in lines[0] and "PythonScriptStep" in lines[0]
    assert "Databricks is Azure-only" in lines[1]
    assert "Kubernetes" in lines[2]


def test_hyperdrive_names_come_from_mlws_hyperdrive():
    try:
        import mlws.hyperdrive as hd
    except ImportError:
        r = _python("from azureml.train.hyperdrive import choice", env=_shim_env())
        assert "mlws.hyperdrive" in r.stderr.splitlines()[-1]
        return
    code = (
        "import mlws.hyperdrive as hd\n"
        "from azureml.train.hyperdrive import HyperDriveConfig, choice\n"
        "from azureml.train.hyperdrive.runconfig import HyperDriveConfig as C2\n"
        "from azureml.train.hyperdrive.sampling import RandomParameterSampling\n"
        "from azureml.train.hyperdrive.run import PrimaryMetricGoal\n"
        "from azureml.train.hyperdrive.policy import BanditPolicy\n"
        "from azureml.train.hyperdrive.parameter_expressions import choice as c2\n"
        "assert HyperDriveConfig is hd.HyperDriveConfig is C2 and choice is hd.choice is c2\n"
        "assert RandomParameterSampling is hd.RandomParameterSampling\n"
        "assert PrimaryMetricGoal is hd.PrimaryMetricGoal and BanditPolicy is hd.BanditPolicy\n"
    )
    assert hd is not None
    r = _python(code, env=_shim_env())
    assert r.returncode == 0, r.stderr


def test_cloud_only_names_are_accepted_with_one_note_each():
    code = textwrap.dedent(
        """
        from azureml.core.authentication import InteractiveLoginAuthentication
        from azureml.core.webservice import AciWebservice, AksWebservice
        from azureml.telemetry import set_diagnostics_collection
        auth = InteractiveLoginAuthentication(tenant_id="t")
        InteractiveLoginAuthentication()
        set_diagnostics_collection(send_diagnostics=True)
        set_diagnostics_collection(send_diagnostics=True)
        aci = AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1)
        AciWebservice.deploy_configuration(cpu_cores=1, memory_gb=1)
        aks = AksWebservice.deploy_configuration(cpu_cores=1)
        print(auth.get_authentication_header(), aci.auth_enabled, aks.auth_enabled, aci.host)
        """
    )
    r = _python(code, env=_shim_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{'Authorization': 'Bearer '} False True 127.0.0.1"
    notes = r.stderr.splitlines()
    assert all(n.startswith("mlws: ") for n in notes)
    # auth, telemetry, ACI local + its ignored settings, AKS local + its ignored settings
    assert len(notes) == 6, notes
    assert sum("InteractiveLoginAuthentication" in n for n in notes) == 1


# -- the real azureml-core wins ------------------------------------------------------------------
def test_a_real_azureml_core_after_the_layer_on_the_path_still_wins(tmp_path):
    # site-packages come after PYTHONPATH: appended here, as site.py does
    fake = _fake_real_sdk(tmp_path / "site")
    code = (
        f"import sys; sys.path.append({str(fake)!r})\n"
        "import azureml.core, azureml\n"
        "print(getattr(azureml.core, 'REAL', False), len(azureml.__path__))\n"
        "try:\n    import azureml.widgets\nexcept ImportError as e:\n    print('widgets:', e)\n"
    )
    r = _python(code, env=_shim_env())
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert first == "True 1"  # the real package alone: nothing of the layer mixed in
    assert second == "widgets: No module named 'azureml.widgets'"  # as without the layer


def test_a_real_azureml_core_before_the_layer_keeps_the_layer_out(tmp_path):
    fake = _fake_real_sdk(tmp_path / "site")
    env = _shim_env()
    env["PYTHONPATH"] = f"{fake}{os.pathsep}{env['PYTHONPATH']}"
    r = _python(
        "import azureml.core\nprint(azureml.core.REAL)\n"
        "try:\n    import azureml.telemetry\nexcept ImportError as e:\n    print(e)\n",
        env=env,
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "True", r.stderr
    # the real package's extend_path took the layer's folder in: its parts step aside
    assert "the real azureml-core is installed in this Python" in lines[1]


# -- runs ----------------------------------------------------------------------------------------
TRAIN = """\
import os, sys
from azureml.core import Run
import azureml.core

run = Run.get_context()
run.log("accuracy", 0.91)
run.log("layer", "real" if getattr(azureml.core, "REAL", False) else "mlws")
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as f:
    f.write("weights")
"""


@pytest.fixture
def v1_src(tmp_path: Path) -> Path:
    src = tmp_path / "v1src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    return src


def test_unchanged_v1_training_script_completes_on_local(ws, v1_src):
    from mlws import Experiment, ScriptRunConfig

    run = Experiment(ws, "v1").submit(ScriptRunConfig(str(v1_src), "train.py"))
    details = run.wait_for_completion(raise_on_error=False, timeout=60)
    assert details["status"] == "Completed", driver_log(run)
    assert run.get_metrics() == {"accuracy": 0.91, "layer": "mlws"}
    assert "outputs/model.txt" in run.get_file_names()


def test_in_a_run_an_installed_azureml_core_wins(ws, v1_src, tmp_path):
    from mlws import Experiment, ScriptRunConfig

    fake = _fake_real_sdk(tmp_path / "site")
    # the fake is "installed": a site folder after everything PYTHONPATH put first
    body = f"import site; site.addsitedir({str(fake)!r})\n" + TRAIN.replace(
        "from azureml.core import Run", "from mlws import Run"
    )
    (v1_src / "train.py").write_text(body)
    run = Experiment(ws, "v1").submit(ScriptRunConfig(str(v1_src), "train.py"))
    assert run.wait_for_completion(raise_on_error=False, timeout=60)["status"] == "Completed", (
        driver_log(run)
    )
    assert run.get_metrics()["layer"] == "real"


def _v1_child(i: int) -> int:
    from azureml.core import Run  # in a joblib worker: not a run's script

    Run.get_context().log("i", i)
    return i * 2


def test_a_run_parallel_child_imports_azureml(ws):
    from mlws import Experiment, get_result, run_parallel

    parent = run_parallel(Experiment(ws, "v1-par"), _v1_child, [1, 2], max_concurrent=2)
    assert parent.get_status() == "Completed", [
        c.get_details().get("error") for c in parent.get_children()
    ]
    children = sorted(parent.get_children(), key=lambda c: c.get_metrics()["i"])
    assert [get_result(c) for c in children] == [2, 4]


# -- a v1 driver script, end to end -------------------------------------------------------------
DRIVER = """\
import json
import urllib.error
import urllib.request
from azureml.core import Environment, Experiment, ScriptRunConfig, Workspace
from azureml.core.model import InferenceConfig, Model
from azureml.core.webservice import LocalWebservice

ws = Workspace.from_config()
print("workspace", ws.name)
exp = Experiment(workspace=ws, name="v1-driver")
env = Environment("v1-env")
src = ScriptRunConfig(source_directory=".", script="train.py", environment=env)
run = exp.submit(src)
run.wait_for_completion(show_output=True)
model = run.register_model(model_name="v1model", model_path="./outputs/model.txt")
inference_config = InferenceConfig(entry_script="score.py", source_directory=".", environment=env)
deployment_config = LocalWebservice.deploy_configuration(port=PORT)
service = Model.deploy(ws, "v1svc", [model], inference_config, deployment_config)
service.wait_for_deployment(show_output=True)
print("scored", json.dumps(service.run(json.dumps({"data": [1, 2, 3]}))))
get = urllib.request.Request(service.scoring_uri)  # v1's local service has no keys
try:
    urllib.request.urlopen(get, timeout=10)
except urllib.error.HTTPError as e:
    print("GET", e.code, e.headers["X-Scorer"], e.read().decode())
service.delete()
"""

SCORE = """\
import json
from azureml.core.model import Model
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse

weights = None


def init():
    global weights
    with open(Model.get_model_path("v1model")) as f:
        weights = f.read()


@rawhttp
def run(request):
    if request.method == "GET":
        return AMLResponse("send POST", 418, {"X-Scorer": "v1"})
    data = json.loads(request.get_data(as_text=True))["data"]
    return AMLResponse({"sum": sum(data), "weights": weights}, 200, json_str=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unchanged_v1_driver_script_runs_end_to_end(tmp_path, isolated_home):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(TRAIN)
    (project / "score.py").write_text(SCORE)
    (project / "driver.py").write_text(DRIVER.replace("PORT", str(_free_port())))
    try:
        # the workspace is found through .azureml/config.json, as v1 does
        r = run_v1_driver(project, "v1demo")
    finally:  # a driver that failed half-way must not leave its service running
        from mlws.dirs import user_data_dir
        from mlws.serving import Webservice
        from mlws.workspace import Workspace

        if (user_data_dir() / "workspaces" / "v1demo" / "mlws.json").is_file():
            with Workspace(user_data_dir() / "workspaces" / "v1demo") as w:
                for service in Webservice.list(w):
                    service.delete()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "workspace v1demo" in r.stdout
    assert ": Completed" in r.stdout
    # the scoring script is @rawhttp: it got the request and answered AMLResponses
    assert 'scored {"sum": 6, "weights": "weights"}' in r.stdout
    assert "GET 418 v1 send POST" in r.stdout
    from mlws.workspace import named_workspaces

    assert "v1demo" in named_workspaces()


# -- v1's Workspace forms ------------------------------------------------------------------------
def test_v1_workspace_constructor_and_create_by_name(tmp_path, capsys):
    from mlws.errors import UserErrorException, WorkspaceNotFound
    from mlws.v1.workspace import V1Workspace as Workspace

    with pytest.raises(WorkspaceNotFound, match="no workspace named 'nope'"):
        Workspace("sub", "rg", "nope")
    with pytest.raises(UserErrorException, match="needs a workspace_name"):
        Workspace()
    created = Workspace.create(
        "v1ws", subscription_id="sub", resource_group="rg", location="westeurope"
    )
    created.close()
    with Workspace("sub", "rg", "v1ws") as ws:
        assert ws.path == created.path and ws.subscription_id == "sub"
    with Workspace.get("v1ws") as ws:
        assert ws.name == "v1ws"
    # v1's write_config form: {"Scope": ".../workspaces/<name>"}
    cfg = tmp_path / "proj" / ".azureml" / "config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(
        json.dumps(
            {
                "Scope": "/subscriptions/s/resourceGroups/r/providers/"
                "Microsoft.MachineLearningServices/workspaces/v1ws"
            }
        )
    )
    with Workspace.from_config(str(cfg.parent.parent), auth=object()) as ws:
        assert ws.path == created.path
    err = capsys.readouterr().err
    assert err.count("only matter in Azure") == 3  # Workspace, create, from_config: one note each


# -- mlws v1 enable | disable | status -------------------------------------------------------------
def test_the_layer_folder_is_one_path():
    from mlws.processes import V1_SHIM_DIR

    assert V1_SHIM_DIR == SHIM_DIR and Path(SHIM_DIR, "azureml", "__init__.py").is_file()


def test_tests_never_change_this_pythons_site_packages(tmp_path):
    assert v1_install.status().site_packages == tmp_path / "site-packages"


def test_enable_status_disable_in_a_site_packages_folder(tmp_path):
    site = tmp_path / "site-packages"
    site.mkdir()
    r = invoke("v1", "status", "--site-packages", str(site))
    assert r.exit_code == 0 and r.output.startswith("disabled")
    r = invoke("v1", "enable", "--site-packages", str(site))
    assert r.exit_code == 0 and r.output.startswith("enabled"), r.output
    assert (site / v1_install.PTH_NAME).read_text().strip() == SHIM_DIR
    # the .pth makes azureml importable, appended after the folder itself
    probe = _python(
        f"import site, sys; site.addsitedir({str(site)!r})\n"
        "import azureml.core; print(azureml.core.__file__, sys.path.index("
        f"{SHIM_DIR!r}) > sys.path.index({str(site)!r}))",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert probe.stdout.split() == [
        str(Path(SHIM_DIR) / "azureml" / "core" / "__init__.py"),
        "True",
    ], probe.stderr
    r = invoke("v1", "status", "--site-packages", str(site), "--json")
    assert json.loads(r.output)["enabled"] is True
    r = invoke("v1", "disable", "--site-packages", str(site))
    assert r.exit_code == 0 and r.output.startswith("disabled")
    assert not (site / v1_install.PTH_NAME).exists()


def test_enable_refuses_next_to_a_real_azureml_core_and_changes_nothing(tmp_path):
    site = _fake_real_sdk(tmp_path / "site-packages")
    before = sorted(p.name for p in site.iterdir())
    r = invoke("v1", "enable", "--site-packages", str(site))
    assert r.exit_code == 1
    assert one_error_line(r).startswith("Error: a real azureml-core is installed in")
    assert sorted(p.name for p in site.iterdir()) == before
    r = invoke("v1", "status", "--site-packages", str(site))
    assert r.output.startswith("real azureml-core installed")


def test_enable_into_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    r = invoke("v1", "enable", "--site-packages", str(tmp_path / "missing"))
    assert r.exit_code == 1 and one_error_line(r).startswith("Error: no site-packages folder")
    site = tmp_path / "ro"
    site.mkdir()

    def refuse(*_a, **_k):  # root writes anywhere: the refusal is injected
        raise PermissionError(13, "Permission denied", str(site))

    monkeypatch.setattr("mlws.dirs.write_atomic", refuse)
    r = invoke("v1", "enable", "--site-packages", str(site))
    assert r.exit_code == 1
    assert one_error_line(r) == (
        f"Error: cannot write to {site} (Permission denied); use a virtual environment you own,"
        " or run as the owner of this Python"
    )
    assert list(site.iterdir()) == []


def test_run_details_shows_the_run_and_its_children_in_a_terminal(ws, capsys):
    from mlws import Experiment
    from mlws.v1.widgets import RunDetails

    run = Experiment(ws, "v1-widget").start_logging()
    run.log("loss", 0.5)
    run.log("loss", 0.25)
    child = run.child_run(name="trial")
    child.log("acc", 0.75)
    child.complete()
    run.complete()
    RunDetails(run).show()  # ended: one table, then it returns
    out = capsys.readouterr().out.splitlines()
    header, rows = out[0].split(), [ln.split() for ln in out[2:] if ln.strip()]
    assert header == ["run", "status", "loss", "acc"]
    assert rows == [[run.id, "Completed", "0.25"], [child.id, "Completed", "0.75"]]


def test_run_details_of_a_sweep_shows_its_own_metrics_on_its_row(ws):
    """A sweep's get_metrics() is its trials' (v1); its row in RunDetails is its own."""
    from mlws import Experiment
    from mlws.lifecycle import insert_run
    from mlws.metrics import write_values
    from mlws.v1.widgets import snapshot

    Experiment(ws, "v1-sweep")  # created on first use
    sweep = insert_run(ws, "v1-sweep", run_type="hyperdrive", status="Running")
    trial = insert_run(
        ws, "v1-sweep", run_type="azureml.scriptrun", status="Completed", parent_id=sweep["id"]
    )
    write_values(ws.catalog, sweep["seq"], [("own", "scalar", 1, None)])
    write_values(ws.catalog, trial["seq"], [("acc", "scalar", 0.5, None)])
    rows = snapshot(ws.get_run(sweep["id"]))
    assert rows == [
        {"run": sweep["id"], "status": "Running", "own": 1},
        {"run": trial["id"], "status": "Completed", "acc": 0.5},
    ]
