"""Callables and managed environments on remote targets: a FunctionRunConfig runs the same on an
ssh host and on a Dask cluster, and a managed environment is built on the host, once."""

import pytest
from sshd import attach_ssh_target

from mlws import (
    CondaDependencies,
    Environment,
    Experiment,
    FunctionRunConfig,
    ScriptRunConfig,
    get_result,
)
from mlws.compute import AmlCompute, ComputeTarget


def multiply(a, b):
    from mlws import Run

    Run.get_context().log("a", a)
    return a * b


@pytest.fixture
def lab(ws, tmp_path, ssh_server):
    return attach_ssh_target(ws, "lab", [ssh_server], tmp_path)


@pytest.mark.timeout(180)
def test_function_run_on_ssh_and_dask(ws, lab):
    cpu = ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(max_nodes=1))
    exp = Experiment(ws, "calls")
    try:
        for target in ("local", "lab", "cpu"):
            run = exp.submit(FunctionRunConfig(multiply, (6, 7), compute_target=target))
            run.wait_for_completion(timeout=120)
            assert run.get_details()["target"] == target
            assert get_result(run) == 42
            assert run.get_metrics() == {"a": 6}
    finally:
        cpu.stop()


@pytest.mark.timeout(300)
def test_managed_environment_is_built_on_the_host_once(ws, lab, tmp_path):
    env = Environment("tab")
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=["tabulate"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("import sys, tabulate\nprint('python', sys.executable)\n")
    exp = Experiment(ws, "envs")
    logs = []
    for _ in range(2):
        run = exp.submit(ScriptRunConfig(str(src), "t.py", compute_target="lab", environment=env))
        run.wait_for_completion(timeout=240)
        logs.append(run.get_details_with_logs()["logFiles"])
    cache = str(tmp_path / "remote-cache" / "mlws" / "envs")
    for files in logs:  # both ran in the environment built on the host
        assert f"python {cache}/" in files["logs/driver.log"]
    # pip ran once: the first run built it (and installed tabulate there, not merely found it
    # on the agent's path), the second reused it
    assert "install" in logs[0]["logs/environment.log"]
    assert "tabulate" in logs[0]["logs/environment.log"]
    assert "already satisfied: tabulate" not in logs[0]["logs/environment.log"]
    assert "install" not in logs[1]["logs/environment.log"]
