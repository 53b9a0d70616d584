"""Environments: user-managed (as is) and managed (built once per machine, reused)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlws import CondaDependencies, Environment, Experiment, ScriptRunConfig
from mlws.cli import cli
from mlws.environments import EnvironmentBuildError, EnvironmentNotFound, envs_dir, resolve
from mlws.errors import UserErrorException


def managed(name="tab", packages=("tabulate",)):
    env = Environment(name)
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(pip_packages=list(packages))
    return env


def test_register_versions_get_and_list(ws):
    env = managed()
    assert env.register(ws).version == "1"
    assert managed().register(ws).version == "1"  # same definition: same version
    changed = managed(packages=("tabulate", "six"))
    assert changed.register(ws).version == "2"
    assert Environment.get(ws, "tab").python.conda_dependencies.pip_packages == ["tabulate", "six"]
    assert Environment.get(ws, "tab", version=1).python.conda_dependencies.pip_packages == [
        "tabulate"
    ]
    assert list(Environment.list(ws)) == ["tab"]
    with pytest.raises(EnvironmentNotFound):
        Environment.get(ws, "nope")
    with pytest.raises(UserErrorException):
        Environment("bad name")


def test_from_requirements_and_conda_spec(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment\ntabulate==0.9.0\n\nsix\n")
    env = Environment.from_pip_requirements("r", req)
    assert env.managed and env.python.conda_dependencies.pip_packages == ["tabulate==0.9.0", "six"]
    spec = tmp_path / "env.yml"
    spec.write_text(
        "name: x\ndependencies:\n  - python=3.11\n  - pip\n  - no-such-conda-pkg-mlws=1.0\n"
        "  - pip:\n    - tabulate\n"
    )
    env = Environment.from_conda_specification("c", spec)
    deps = env.python.conda_dependencies
    assert (
        deps.pip_packages == ["tabulate"]
        and deps.conda_packages == ["pip", "no-such-conda-pkg-mlws=1.0"]
        and deps.python_version == "3.11"
    )
    # conda packages come from PyPI under the same name; one PyPI lacks fails, named
    with pytest.raises(
        EnvironmentBuildError, match="conda package no-such-conda-pkg-mlws=1.0 could not be"
    ):
        resolve(env)
    with pytest.raises(UserErrorException, match="cannot read"):
        Environment.from_pip_requirements("r", tmp_path / "missing.txt")


def test_user_managed_uses_the_interpreter_as_is(tmp_path):
    env = Environment("plain")
    assert resolve(env) == sys.executable
    env.python.interpreter_path = str(tmp_path / "no-python")
    with pytest.raises(UserErrorException, match="not an executable"):
        resolve(env)


def _run_with_env(
    ws, tmp_path, env, body="import tabulate\nprint('tabulate', tabulate.__version__)\n"
):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "t.py").write_text(
        "from mlws import Run\nrun = Run.get_context()\n" + body + "run.log('ok', 1)\n"
    )
    run = Experiment(ws, "envs").submit(ScriptRunConfig(src, "t.py", environment=env))
    run.wait_for_completion(timeout=300, raise_on_error=False)
    return run


def test_managed_environment_built_once_and_reused(ws, tmp_path, monkeypatch):
    env = managed()
    first = _run_with_env(ws, tmp_path, env)
    assert first.get_status() == "Completed", first.get_details().get("error")
    assert first.get_metrics() == {"ok": 1}
    log = "".join(first.iter_log("logs/environment.log"))
    assert "uv" in log and "tabulate" in log
    driver = "".join(first.iter_log())
    interpreter = first.get_details()["runDefinition"]["environment"]["interpreter"]
    assert "tabulate" in driver and str(envs_dir()) in interpreter
    build = ws.catalog.one(
        "SELECT * FROM environment_builds WHERE spec_hash = ?", (env.spec_hash(),)
    )
    assert "tabulate==" in build["freeze"]
    # the second run reuses it: no pip/uv call at all
    import mlws.environments as environments

    def no_build(*a, **k):
        raise AssertionError("the environment was built again")

    monkeypatch.setattr(environments, "_run_logged", no_build)
    assert resolve(env) == interpreter
    second = _run_with_env(ws, tmp_path, env)
    assert second.get_status() == "Completed"
    assert "built in" not in "".join(second.iter_log("logs/environment.log"))


def test_bad_requirement_fails_the_run_with_pips_message(ws, tmp_path):
    env = managed(name="bad", packages=("this-package-does-not-exist-mlws==0.0.1",))
    run = _run_with_env(ws, tmp_path, env)
    d = run.get_details()
    assert d["status"] == "Failed"
    msg = d["error"]["error"]["message"]
    assert "this-package-does-not-exist-mlws" in msg
    assert "this-package-does-not-exist-mlws" in "".join(run.iter_log("logs/environment.log"))
    assert not (envs_dir() / env.spec_hash()).exists()  # nothing half-built is kept


def test_two_runs_build_a_new_environment_once(ws, tmp_path):
    env = managed(name="twice", packages=("six",))
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("import six\n")
    exp = Experiment(ws, "envs")
    runs = [exp.submit(ScriptRunConfig(src, "t.py", environment=env)) for _ in range(2)]
    for r in runs:
        r.wait_for_completion(timeout=300)
    logs = ["".join(r.iter_log("logs/environment.log")) for r in runs]
    assert sum("built in" in log for log in logs) == 1
    assert sum("reusing it" in log for log in logs) == 1


def test_venv_and_pip_without_uv(tmp_path, monkeypatch):
    monkeypatch.setenv("MLWS_NO_UV", "1")
    env = managed(name="pip", packages=("six",))
    log = tmp_path / "build.log"
    with open(log, "w") as f:
        python = resolve(env, log=f)
    assert "-m venv" in log.read_text() and "built in" in log.read_text()
    out = subprocess.run(
        [python, "-c", "import six, psutil; print('ok')"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "ok"


def test_cli_environment_commands(ws, tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("six\n")
    r = CliRunner()
    res = r.invoke(cli, ["environment", "create", "cli-env", "-r", str(req)])
    assert res.exit_code == 0, res.output
    listed = json.loads(r.invoke(cli, ["environment", "list", "--json"]).output)
    assert listed[0]["name"] == "cli-env" and listed[0]["version"] == "1"
    shown = json.loads(r.invoke(cli, ["environment", "show", "cli-env", "--json"]).output)
    assert shown["python"]["condaDependencies"]["pip"] == ["six"]
    res = r.invoke(cli, ["environment", "build", "cli-env"])
    assert res.exit_code == 0 and "python" in res.output
    assert Path(res.stdout.strip().splitlines()[-1].split()[-1]).exists()
    res = r.invoke(cli, ["environment", "show", "missing"])
    assert res.exit_code == 1 and res.output.startswith("Error: no environment missing")
    assert os.path.isdir(envs_dir())


def _wheel(folder: Path, name: str, version: str) -> None:
    """A minimal pure-Python wheel of ``name`` (one module printing its version)."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def test_uv_builds_find_pips_find_links(tmp_path, monkeypatch):
    # A package no index has, only a wheel in the folder pip's configuration names (as torch's
    # CPU build on this project's machines): uv, which reads no pip configuration, is given it.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "mlws_wheel_only_here", "1.2.3")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    env = managed(name="links", packages=("mlws_wheel_only_here==1.2.3",))
    log = tmp_path / "build.log"
    with open(log, "w") as f:
        python = resolve(env, log=f)
    assert f"--find-links={wheels}" in log.read_text() and "with uv" in log.read_text()
    out = subprocess.run(
        [python, "-c", "import mlws_wheel_only_here as m; print(m.VERSION)"],
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "1.2.3", out.stderr
