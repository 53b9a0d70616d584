"""v1 semantics where mlws's own API differs (issue 12 section 2), through the ``azureml`` names:
workspace properties, the variables and argument placeholders a run's script gets, environments
that build their conda dependencies, conda packages without conda, services' key defaults and
``reload()``, curated environments, Docker settings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import driver_log, make_source

from mlws.v1 import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION, add_to_sys_path


@pytest.fixture(autouse=True)
def azureml_importable(monkeypatch) -> None:
    """The layer on this process's path, as ``mlws v1 enable`` puts it (after everything);
    the once-per-process notes start afresh and are forgotten after the test (another test
    in this worker process counts its own)."""
    add_to_sys_path()
    monkeypatch.setattr("mlws.v1.names._noted", set())


def _completed(run, timeout: float = 90) -> dict:  # noqa: ANN001 - a Run
    details = run.wait_for_completion(raise_on_error=False, timeout=timeout)
    assert details["status"] == "Completed", driver_log(run)
    return details


# -- 4: the workspace, the run, the environment's variables ----------------------------------------
def test_workspace_dict_properties_map_names_to_objects(tmp_path):
    from azureml.core import VERSION, Dataset, Environment, Experiment, Model, Workspace
    from azureml.core.compute import ComputeTarget

    assert isinstance(VERSION, str) and VERSION.startswith("1.")
    ws = Workspace.create("semws", show_output=False)
    with ws:
        assert (ws.subscription_id, ws.resource_group, ws.location) == (
            LOCAL_SUBSCRIPTION,
            LOCAL_RESOURCE_GROUP,
            "local",
        )
        assert Workspace.get("semws").path == ws.path
        assert Workspace("sub-1", "rg-1", "semws").resource_group == "rg-1"
        Experiment(ws, "exp-a")
        env = Environment("env-a")
        env.register(ws)
        env.environment_variables["X"] = "2"
        env.register(ws)  # a second version: the dict holds the latest
        (tmp_path / "m.txt").write_text("weights")
        Model.register(ws, str(tmp_path / "m.txt"), "model-a")
        Model.register(ws, str(tmp_path / "m.txt"), "model-a")
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "a.csv").write_text("x\n1\n")
        Dataset.File.from_files(str(tmp_path / "data")).register(ws, "data-a")

        assert list(ws.experiments) == ["exp-a"]
        assert ws.environments["env-a"].version == "2"
        assert ws.models["model-a"].version == 2 and list(ws.models) == ["model-a"]
        assert ws.datasets["data-a"].name == "data-a"
        assert "workspaceblobstore" in ws.datastores
        assert all(isinstance(t, ComputeTarget) for t in ws.compute_targets.values())
        assert ComputeTarget.list(ws) == list(ws.compute_targets.values())
        assert ws.webservices == {}


ENV_SCRIPT = """\
import json, os, sys
from azureml.core import Run
run = Run.get_context()
keys = ["GREETING", "AZUREML_RUN_ID", "AZUREML_ARM_SUBSCRIPTION", "AZUREML_ARM_RESOURCEGROUP",
        "AZUREML_ARM_WORKSPACE_NAME", "AZUREML_ARM_PROJECT_NAME", "AZUREML_SERVICE_ENDPOINT",
        "AZUREML_RUN_TOKEN", "AZUREML_DATAREFERENCE_ref", "AML_PARAMETER_lr"]
os.makedirs("outputs", exist_ok=True)
with open("outputs/seen.json", "w") as f:
    json.dump({"env": {k: os.environ.get(k) for k in keys},
               "pythonpath": os.environ["PYTHONPATH"].split(os.pathsep),
               "argv": sys.argv[1:], "mine": __import__("mymod").VALUE}, f)
"""


def test_environment_variables_and_azureml_variables_reach_the_script(ws, tmp_path):
    from azureml.core import Environment, Experiment, ScriptRunConfig

    src = make_source(tmp_path, ENV_SCRIPT, prelude="")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mymod.py").write_text("VALUE = 'from the user PYTHONPATH'\n")
    env = Environment("vars")
    env.environment_variables = {"GREETING": "hello", "PYTHONPATH": str(lib)}
    config = ScriptRunConfig(
        str(src),
        "train.py",
        arguments=[
            "--ref",
            "$AZUREML_DATAREFERENCE_ref/x.csv",
            "--lr=$AML_PARAMETER_lr",
            "${AML_PARAMETER_lr}",
            "$AML_PARAMETER_unknown",
            "DatasetConsumptionConfig:none",
        ],
        environment=env,
    )
    config.run_config.environment_variables = {
        "AML_PARAMETER_lr": "0.5",
        "AZUREML_DATAREFERENCE_ref": "/data/ref",
    }
    run = Experiment(ws, "vars-exp").submit(config)
    _completed(run)
    seen = json.loads(run._read_file_text("outputs/seen.json"))
    assert seen["env"] == {
        "GREETING": "hello",
        "AZUREML_RUN_ID": run.id,
        "AZUREML_ARM_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
        "AZUREML_ARM_RESOURCEGROUP": LOCAL_RESOURCE_GROUP,
        "AZUREML_ARM_WORKSPACE_NAME": ws.name,
        "AZUREML_ARM_PROJECT_NAME": "vars-exp",
        "AZUREML_SERVICE_ENDPOINT": "",
        "AZUREML_RUN_TOKEN": "",
        "AZUREML_DATAREFERENCE_ref": "/data/ref",
        "AML_PARAMETER_lr": "0.5",
    }
    # the user's PYTHONPATH is kept, first; mlws's entries (mlws itself, the layer) follow
    import mlws
    from mlws.v1 import SHIM_DIR

    assert seen["pythonpath"][0] == str(lib)
    assert str(Path(mlws.__file__).parent.parent) in seen["pythonpath"]
    assert seen["pythonpath"][-1] == SHIM_DIR
    assert seen["mine"] == "from the user PYTHONPATH"
    # v1's placeholders expanded as its runtime does; unknown ones left as they are
    assert seen["argv"] == [
        "--ref",
        "/data/ref/x.csv",
        "--lr=0.5",
        "0.5",
        "$AML_PARAMETER_unknown",
        "DatasetConsumptionConfig:none",
    ]
    # get_status()/get_details() in the shapes v1 scripts read
    assert run.get_status() == "Completed"
    details = run.get_details()
    assert details["runId"] == run.id and details["status"] == "Completed"
    assert {"startTimeUtc", "endTimeUtc", "properties", "logFiles", "target"} <= set(details)


DATA_SCRIPT = """\
import json, os, sys
os.makedirs("outputs", exist_ok=True)
with open(sys.argv[1]) as f:
    first = f.read()
with open("outputs/seen.json", "w") as f:
    json.dump({"first": first, "argv": sys.argv[1:],
               "ref": os.environ["AZUREML_DATAREFERENCE_rows"]}, f)
os.makedirs(sys.argv[3], exist_ok=True)
"""


def test_data_placeholders_expand_to_the_runs_input_paths(ws, tmp_path):
    from azureml.core import Dataset, Experiment, ScriptRunConfig
    from azureml.data import OutputFileDatasetConfig

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x\n1\n")
    (tmp_path / "data" / "b.csv").write_text("x\n2\n")
    rows = Dataset.File.from_files(str(tmp_path / "data")).as_named_input("rows").as_download()
    out = OutputFileDatasetConfig(name="result")
    src = make_source(tmp_path, DATA_SCRIPT, prelude="")
    config = ScriptRunConfig(
        str(src),
        "train.py",
        # the objects once (so the run has them), v1's placeholder forms besides
        arguments=["$AZUREML_DATAREFERENCE_rows/a.csv", rows, out, "DatasetOutputConfig:result"],
    )
    run = Experiment(ws, "data-exp").submit(config)
    _completed(run)
    seen = json.loads(run._read_file_text("outputs/seen.json"))
    first, rows_path, out_path, out_again = seen["argv"]
    assert seen["first"] == "x\n1\n"
    assert first == os.path.join(rows_path, "a.csv") and seen["ref"] == rows_path
    assert ".mlws-data" in rows_path and out_path == out_again and ".mlws-data" in out_path


def test_expand_argument_leaves_unknown_names_and_plain_text_alone():
    from mlws.rundata import expand_argument

    definition = {
        "inputs": [{"name": "a", "dataset": {"name": None}}],
        "outputs": [],
        "dataPaths": {"inputs": {"a": "in/a"}, "outputs": {}},
        "environment": {"variables": {"AML_PARAMETER_p": "7"}},
        "environmentVariables": {},
    }
    run_dir = "/r"
    assert expand_argument("$AML_PARAMETER_p", definition, run_dir) == "7"
    assert expand_argument("x$AML_PARAMETER_px", definition, run_dir) == "x$AML_PARAMETER_px"
    assert expand_argument("DatasetConsumptionConfig:a", definition, run_dir) == "/r/in/a"
    assert expand_argument("DatasetOutputConfig:a", definition, run_dir) == "DatasetOutputConfig:a"
    assert expand_argument("prefix DatasetConsumptionConfig:a", definition, run_dir) == (
        "prefix DatasetConsumptionConfig:a"
    )
    assert expand_argument("$AZUREML_DATAREFERENCE_a", definition, run_dir) == "/r/in/a"
    assert expand_argument("$HOME", definition, run_dir) == "$HOME"


# -- 1, 2: v1 environments build their conda dependencies; conda packages come from PyPI --------
PKG_SCRIPT = """\
import sys
from azureml.core import Run
import tabulate, six
Run.get_context().log("python", sys.executable)
"""


def test_v1_environment_builds_its_conda_dependencies(ws, tmp_path):
    from azureml.core import Environment, Experiment, ScriptRunConfig
    from azureml.core.conda_dependencies import CondaDependencies

    from mlws.environments import envs_dir

    env = Environment("v1-deps")
    assert env.python.user_managed_dependencies is False  # v1's default
    assert env.environment_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    env.python.conda_dependencies = CondaDependencies.create(
        pip_packages=["tabulate"], conda_packages=["six", "pip"], python_version="3.1"
    )
    src = make_source(tmp_path, PKG_SCRIPT, prelude="")
    run = Experiment(ws, "v1-env").submit(ScriptRunConfig(str(src), "train.py", environment=env))
    _completed(run, timeout=300)
    assert run.get_metrics()["python"].startswith(str(envs_dir()))
    log = "".join(run.iter_log("logs/environment.log"))
    assert "Note: conda package six installed from PyPI as six" in log
    # the pinned Python is not here: noted, built with this one (v1 code pins one by default)
    assert "Note: python=3.1 asked for; no python3.1 on this machine" in log
    assert "pip" not in [ln.split()[3] for ln in log.splitlines() if ln.startswith("Note: conda")]


def test_v1_environment_declaring_nothing_runs_on_the_submitting_python(ws, tmp_path):
    from azureml.core import Environment, Experiment, ScriptRunConfig
    from azureml.core.conda_dependencies import CondaDependencies

    env = Environment("v1-bare")
    env.python.conda_dependencies = CondaDependencies.create(conda_packages=["python=3.8", "pip"])
    assert not env.managed
    src = make_source(
        tmp_path,
        "from azureml.core import Run\nimport sys\n"
        "Run.get_context().log('python', sys.executable)\n",
        prelude="",
    )
    run = Experiment(ws, "v1-env").submit(ScriptRunConfig(str(src), "train.py", environment=env))
    _completed(run)
    assert run.get_metrics()["python"] == sys.executable
    assert "logs/environment.log" not in run.get_file_names()
    # mlws's own Environment keeps its default: user-managed, the packages are not built
    from mlws import Environment as MlwsEnvironment

    assert MlwsEnvironment("own").python.user_managed_dependencies is True


def test_registered_v1_environment_comes_back_with_v1_defaults(ws):
    from azureml.core import Environment

    env = Environment("reg")
    env.python.conda_dependencies.add_pip_package("tabulate")
    env.docker.enabled = True
    env.register(ws)
    back = Environment.get(ws, "reg")
    assert type(back) is Environment and back.managed and back.docker.enabled
    assert back.environment_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    assert list(Environment.list(ws)) == ["reg"]


def test_a_conda_package_pypi_lacks_fails_the_run_naming_it(ws, tmp_path):
    from azureml.core import Environment, Experiment, ScriptRunConfig

    env = Environment("v1-missing")
    env.python.conda_dependencies.add_conda_package("conda-forge::no-such-conda-pkg-mlws=2.1")
    env.python.conda_dependencies.add_conda_package("cudatoolkit=11.3")
    src = make_source(tmp_path, "print('never')\n", prelude="")
    run = Experiment(ws, "v1-env").submit(ScriptRunConfig(str(src), "train.py", environment=env))
    details = run.wait_for_completion(raise_on_error=False, timeout=300)
    assert details["status"] == "Failed"
    message = details["error"]["error"]["message"]
    assert "conda package conda-forge::no-such-conda-pkg-mlws=2.1 could not be installed" in message
    log = "".join(run.iter_log("logs/environment.log"))
    assert "cudatoolkit=11.3 skipped" in log


@pytest.mark.parametrize(
    ("spec", "requirement"),
    [
        ("numpy", "numpy"),
        ("numpy=1.26", "numpy==1.26.*"),
        ("numpy 1.26", "numpy==1.26.*"),
        ("numpy==1.26.4", "numpy==1.26.4"),
        ("numpy>=1.2,<2", "numpy>=1.2,<2"),
        ("conda-forge::scikit-learn=1.5.1=py311_0", "scikit-learn==1.5.1.*"),
        ("pytorch=2.13.0", "torch==2.13.0.*"),
        ("py-xgboost", "xgboost"),
        ("cudatoolkit=11.3", None),
    ],
)
def test_conda_specs_read_as_pip_requirements(spec, requirement):
    from mlws.environments import conda_as_pip

    assert conda_as_pip(spec)[0] == requirement


def test_a_bad_conda_spec_is_one_error_and_builds_nothing(tmp_path):
    from mlws.environments import EnvironmentBuildError, envs_dir, resolve
    from mlws.v1.environment import V1Environment

    env = V1Environment("bad")
    env.python.conda_dependencies.add_conda_package("=1.0")
    with pytest.raises(EnvironmentBuildError, match="not a conda package: '=1.0'"):
        resolve(env)
    assert not envs_dir().exists() or list(envs_dir().iterdir()) == []


# -- 6: curated environments ----------------------------------------------------------------------
def test_curated_environment_names_resolve_to_local_equivalents(ws, capsys):
    from azureml.core import Environment

    from mlws.errors import EnvironmentNotFound
    from mlws.v1.curated import CURATED

    env = Environment.get(ws, "AzureML-sklearn-1.5")
    assert env.managed and env.version == "1"
    assert env.python.conda_dependencies.pip_packages[0] == "scikit-learn==1.5.*"
    again = Environment.get(ws, "AzureML-sklearn-1.5", version="18")  # any version: the one
    assert again.version == "1"
    assert "AzureML-sklearn-1.5" in ws.environments
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "curated" in ln]
    assert len(notes) == 1 and "built on first use" in notes[0]
    torch = Environment.get(ws, "AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu")
    assert "torch==2.13.0" in torch.python.conda_dependencies.pip_packages
    for name, packages in CURATED.items():
        assert all(not p.startswith("torch") or p == "torch==2.13.0" for p in packages), name
    with pytest.raises(EnvironmentNotFound, match="no environment AzureML-nope"):
        Environment.get(ws, "AzureML-nope")
    assert "AzureML-nope" not in ws.environments


def test_curated_minimal_environment_runs_on_the_submitting_python(ws, tmp_path):
    from azureml.core import Environment, Experiment, ScriptRunConfig

    env = Environment.get(ws, "AzureML-Minimal")
    src = make_source(
        tmp_path,
        "import sys\nfrom azureml.core import Run\nRun.get_context().log('py', sys.executable)\n",
        prelude="",
    )
    run = Experiment(ws, "curated").submit(ScriptRunConfig(str(src), "train.py", environment=env))
    _completed(run)
    assert run.get_metrics()["py"] == sys.executable


def test_an_environment_with_torch_is_built_by_uv_from_pips_find_links(monkeypatch, tmp_path):
    import mlws.environments as environments
    from mlws.v1.environment import V1Environment

    calls = []

    def record(argv, log, should_stop=None):  # noqa: ANN001 - _run_logged's signature
        calls.append(argv)
        if "install" in argv:
            raise environments.EnvironmentBuildError("stopped by the test")

    monkeypatch.setattr(environments, "_run_logged", record)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    env = V1Environment("t")
    env.python.conda_dependencies.add_pip_package("torch==2.13.0")
    with pytest.raises(environments.EnvironmentBuildError, match="stopped by the test"):
        environments.resolve(env)
    # uv reads no pip configuration: it is given the folders where a CPU build may lie
    assert calls[0][1] == "venv" and f"--find-links={tmp_path}" in calls[1], calls


# -- 5: services through the v1 names: v1's key defaults, reload() ---------------------------------
def test_v1_deploy_configurations_keep_v1_key_defaults():
    from azureml.core.webservice import AciWebservice, AksWebservice, LocalWebservice

    from mlws.serving import LocalWebservice as MlwsLocalWebservice

    assert LocalWebservice.deploy_configuration().auth_enabled is False
    assert LocalWebservice.deploy_configuration(port=8890, auth_enabled=True).auth_enabled is True
    assert AciWebservice.deploy_configuration().auth_enabled is False
    assert AciWebservice.deploy_configuration(auth_enabled=True).auth_enabled is True
    assert AksWebservice.deploy_configuration().auth_enabled is True
    assert MlwsLocalWebservice.deploy_configuration().auth_enabled is True  # mlws's own: keys on
    for config in (LocalWebservice.deploy_configuration(), AksWebservice.deploy_configuration()):
        assert config.host == "127.0.0.1"


V1_SCORE = """\
import json

def init():
    pass

def run(raw_data):
    return {"answer": FACTOR * sum(json.loads(raw_data)["data"])}
"""


def test_v1_service_has_no_keys_and_reload_serves_the_changed_script(ws, tmp_path, model, services):
    from azureml.core import Model, Webservice
    from azureml.core.model import InferenceConfig
    from azureml.core.webservice import LocalWebservice
    from serving_helpers import call

    from mlws.errors import WebserviceException

    src = tmp_path / "score-src"
    src.mkdir()
    (src / "score.py").write_text(V1_SCORE.replace("FACTOR", "1"))
    # no deployment configuration: v1 deploys to ACI, keys off
    service = Model.deploy(
        ws, "v1svc", [model], InferenceConfig(entry_script="score.py", source_directory=str(src))
    )
    service.wait_for_deployment(timeout_sec=60)
    assert service.config["authEnabled"] is False and service.get_keys() == (None, None)
    assert service._row["host"] == "127.0.0.1"
    status, _, body = call(service.port, body={"data": [1, 2]})  # no Authorization header
    assert (status, json.loads(body)) == (200, {"answer": 3})
    assert isinstance(LocalWebservice(ws, "v1svc"), Webservice)

    generation = service._row["generation"]
    service.reload()  # nothing changed: nothing restarts
    assert service._row["generation"] == generation
    (src / "score.py").write_text(V1_SCORE.replace("FACTOR", "10"))
    service.reload(wait=True)
    assert service.run(json.dumps({"data": [1, 2]})) == {"answer": 30}
    assert service._row["generation"] == generation + 1

    (src / "score.py").unlink()
    with pytest.raises(WebserviceException, match="entry script .*score.py is gone"):
        service.reload()
    assert service.run(json.dumps({"data": [1]})) == {"answer": 10}  # still serving

    # v1's LocalWebservice has no keys: get_keys/regen_key/get_token raise as v1's do.
    local = LocalWebservice(ws, "v1svc")
    for call_it in (local.get_keys, lambda: local.regen_key("Primary"), local.get_token):
        with pytest.raises(NotImplementedError, match="do not support auth keys"):
            call_it()
    (src / "score.py").write_text(V1_SCORE.replace("FACTOR", "2"))
    ic = InferenceConfig(entry_script="score.py", source_directory=str(src))
    config = LocalWebservice.deploy_configuration()
    again = Model.deploy(ws, "v1svc", [model], ic, config, overwrite=True)
    assert isinstance(again, LocalWebservice)
    again.wait_for_deployment(timeout_sec=60)
    with pytest.raises(NotImplementedError, match="do not support auth keys"):
        again.get_keys()
    assert again.run(json.dumps({"data": [1, 2]})) == {"answer": 6}


# -- 3: Docker --------------------------------------------------------------------------------------
def test_a_run_asking_for_docker_runs_without_it_with_a_note(ws, tmp_path, monkeypatch):
    from azureml.core import Environment, Experiment, ScriptRunConfig
    from azureml.core.environment import DEFAULT_CPU_IMAGE as ENV_IMAGE
    from azureml.core.environment import DockerSection
    from azureml.core.runconfig import DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE, DockerConfiguration

    assert ENV_IMAGE == DEFAULT_CPU_IMAGE and DEFAULT_GPU_IMAGE.startswith("mcr.microsoft.com/")
    # no daemon answers there, whatever the machine has (the runs' supervisors probe it)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    src = make_source(tmp_path, "print('ran')\n", prelude="")
    env = Environment("dockered")
    assert isinstance(env.docker, DockerSection) and env.docker.enabled is False
    env.docker.enabled = True
    env.docker.base_image = DEFAULT_CPU_IMAGE
    exp = Experiment(ws, "docker")
    by_env = exp.submit(ScriptRunConfig(str(src), "train.py", environment=env))
    by_config = exp.submit(
        ScriptRunConfig(
            str(src), "train.py", docker_runtime_config=DockerConfiguration(use_docker=True)
        )
    )
    plain = exp.submit(ScriptRunConfig(str(src), "train.py"))
    for run in (by_env, by_config, plain):
        _completed(run)
    import shutil

    why = (
        "no Docker daemon is reachable (docker info failed)"
        if shutil.which("docker")
        else "there is no docker command on this machine"
    )
    assert driver_log(by_env).splitlines()[0] == (
        f"Note: Docker was asked for (image {DEFAULT_CPU_IMAGE}), but {why}: the script ran"
        " without Docker"
    )
    # ScriptRunConfig's own environment is v1's, with v1's default image
    assert (
        driver_log(by_config)
        .splitlines()[0]
        .startswith(f"Note: Docker was asked for (image {DEFAULT_CPU_IMAGE}), but")
    )
    assert "ran" in driver_log(by_config) and "Docker" not in driver_log(plain)


def test_docker_configuration_round_trips_in_a_saved_run_configuration(tmp_path):
    from azureml.core import RunConfiguration
    from azureml.core.runconfig import DockerConfiguration

    rc = RunConfiguration()
    rc.docker = DockerConfiguration(use_docker=True, shm_size="2g")
    back = RunConfiguration.load(rc.save(tmp_path / "docker.yml"))
    assert back.docker.use_docker is True and back.docker.shm_size == "2g"
    assert RunConfiguration().docker.use_docker is False


def test_docker_unreachable_says_why(monkeypatch):
    import mlws.runconfig

    monkeypatch.setenv("PATH", "/nonexistent")
    assert mlws.runconfig.docker_unreachable() == "there is no docker command on this machine"


def test_from_config_reports_the_scope_of_the_config_file(tmp_path, monkeypatch):
    from azureml.core import Workspace

    Workspace.create("scoped", show_output=False).close()
    project = tmp_path / "project"
    (project / ".azureml").mkdir(parents=True)
    cfg = project / ".azureml" / "config.json"
    cfg.write_text(
        json.dumps(
            {"subscription_id": "sub-9", "resource_group": "rg-9", "workspace_name": "scoped"}
        )
    )
    monkeypatch.delenv("MLWS_WORKSPACE")
    monkeypatch.chdir(project)
    with Workspace.from_config() as ws:
        assert (ws.name, ws.subscription_id, ws.resource_group) == ("scoped", "sub-9", "rg-9")
    cfg.write_text(
        json.dumps(
            {
                "Id": None,
                "Scope": "/subscriptions/sub-7/resourceGroups/rg-7/providers/"
                "Microsoft.MachineLearningServices/workspaces/scoped",
            }
        )
    )
    with Workspace.from_config(str(cfg)) as ws:
        assert (ws.subscription_id, ws.resource_group) == ("sub-7", "rg-7")
    with Workspace.from_config(str(ws.path)) as ws:  # a workspace folder: no config, local scope
        assert ws.subscription_id == LOCAL_SUBSCRIPTION


def test_command_runs_get_v1_placeholders_expanded(ws, tmp_path):
    from azureml.core import Experiment, ScriptRunConfig

    src = tmp_path / "cmd-src"
    src.mkdir()
    (src / "echo.py").write_text("import sys\nprint('args', *sys.argv[1:])\n")
    exp = Experiment(ws, "cmd")
    runs = []
    for command in (
        [sys.executable, "echo.py", "$AML_PARAMETER_n", "${AML_PARAMETER_n}x"],
        f"{sys.executable} echo.py $AML_PARAMETER_n",  # the shell expands it from the env
    ):
        config = ScriptRunConfig(str(src), command=command)
        config.run_config.environment_variables = {"AML_PARAMETER_n": "42"}
        runs.append(exp.submit(config))
    for run in runs:
        _completed(run)
    assert "args 42 42x" in driver_log(runs[0])
    assert "args 42" in driver_log(runs[1])


def test_v1_run_configuration_holds_an_environment_to_change_in_place(ws, tmp_path):
    from azureml.core import Experiment, RunConfiguration, ScriptRunConfig
    from azureml.core.conda_dependencies import CondaDependencies

    from mlws.environments import envs_dir

    src = make_source(
        tmp_path,
        "import sys\nfrom azureml.core import Run\nRun.get_context().log('py', sys.executable)\n",
        prelude="",
    )
    exp = Experiment(ws, "v1-rc")
    # the older notebooks' form: change the run configuration's environment in place
    rc = RunConfiguration()
    rc.environment.python.user_managed_dependencies = False
    rc.environment.python.conda_dependencies = CondaDependencies.create(pip_packages=["six"])
    built = exp.submit(ScriptRunConfig(str(src), "train.py", run_config=rc))
    # a ScriptRunConfig's own run configuration declares nothing: the submitting Python
    plain = ScriptRunConfig(str(src), "train.py")
    assert plain.run_config.environment.python.user_managed_dependencies is False
    bare = exp.submit(plain)
    by_argument = RunConfiguration(
        conda_dependencies=CondaDependencies.create(pip_packages=["six"])
    )
    assert by_argument.environment.managed
    _completed(built, timeout=300)
    _completed(bare)
    assert built.get_metrics()["py"].startswith(str(envs_dir()))
    assert bare.get_metrics()["py"] == sys.executable
    assert bare.get_details()["runDefinition"]["environment"]["managed"] is False
