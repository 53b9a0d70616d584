import sys

import pytest

from mlws import Experiment, RunConfiguration, ScriptRunConfig
from mlws.errors import RunConfigError


def test_save_and_load_yaml(tmp_path):
    rc = RunConfiguration(script="train.py", arguments=["--lr", 0.1])
    rc.environment_variables = {"A": "1"}
    rc.max_run_duration_seconds = 60
    path = rc.save(path=tmp_path, name="train")
    assert path == tmp_path / ".mlws" / "train.yml"
    loaded = RunConfiguration.load(path=tmp_path, name="train")
    assert loaded.to_dict() == rc.to_dict()
    assert loaded.arguments == ["--lr", "0.1"]
    # v1's place and file name are read too
    (tmp_path / ".azureml").mkdir()
    (tmp_path / ".azureml" / "old.runconfig").write_text(
        "script: old.py\ntarget: local\narguments: [a]\n"
    )
    assert RunConfiguration.load(tmp_path, "old").script == "old.py"
    explicit = rc.save(tmp_path / "x.yml")
    assert RunConfiguration.load(explicit).script == "train.py"


def test_load_errors(tmp_path):
    with pytest.raises(RunConfigError, match="no run configuration named"):
        RunConfiguration.load(tmp_path, "missing")
    bad = tmp_path / "bad.yml"
    bad.write_text("script: [unclosed\n")
    with pytest.raises(RunConfigError, match="not valid YAML"):
        RunConfiguration.load(bad)
    with pytest.raises(RunConfigError, match="folder and a name"):
        RunConfiguration().save(tmp_path)


def test_script_must_be_inside_source(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(RunConfigError, match="outside the source directory"):
        ScriptRunConfig(tmp_path / "src", "../x.py")
    with pytest.raises(RunConfigError, match="outside the source directory"):
        ScriptRunConfig(tmp_path / "src", "/etc/passwd")
    with pytest.raises(RunConfigError, match="needs a script or a command"):
        ScriptRunConfig(tmp_path / "src")
    with pytest.raises(RunConfigError, match="not found"):
        ScriptRunConfig(tmp_path / "src", "missing.py").validate()


def test_command_runs_and_env_vars_reach_the_script(ws, tmp_path):
    src = tmp_path / "src"
    src.mkdir()

    class Python:
        user_managed_dependencies = True
        interpreter_path = sys.executable

    class Env:
        name = "mine"
        python = Python()
        environment_variables = {"GREETING": "hi"}

    cfg = ScriptRunConfig(
        src, command="echo $GREETING from $AZUREML_RUN_ID > outputs/out.txt", environment=Env()
    )
    run = Experiment(ws, "cmd").submit(cfg)
    run.wait_for_completion(timeout=60)
    out = tmp_path / "out.txt"
    run.download_file("outputs/out.txt", out)
    assert out.read_text().strip() == f"hi from {run.id}"
    assert run.get_details()["runDefinition"]["environment"]["interpreter"] == sys.executable


def test_unknown_registered_environment_changes_nothing(ws, tmp_path):
    from mlws.environments import EnvironmentNotFound

    (tmp_path / "t.py").write_text("")
    with pytest.raises(EnvironmentNotFound):
        Experiment(ws, "m").submit(ScriptRunConfig(tmp_path, "t.py", environment="missing"))
    assert ws.catalog.scalar("SELECT count(*) FROM runs") == 0


def test_a_foreign_distributed_job_config_is_refused_not_dropped(tmp_path):
    """A distributed job mlws cannot read must not silently run as one process (issue 11);
    mlws's own classes are run as distributed jobs (tests/test_distributed.py)."""
    (tmp_path / "train.py").write_text("print(1)\n")

    class PyTorchConfiguration:  # not mlws's (nor v1's): its counts cannot be trusted
        node_count = 2

    with pytest.raises(
        RunConfigError, match="must be a PyTorchConfiguration.*got .*test_runconfig"
    ):
        ScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=PyTorchConfiguration())
    assert ScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=None).script
