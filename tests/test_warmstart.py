"""Warm starts (issue 13, row 14g): a ParallelRunStep's driver is forked from its supervisor
once the workspace's launcher has pandas imported, and says so in its log; the first step of a
workspace, and a step whose environment changes an mlws setting, start fresh as before, with
the same output. The conditions of the warm path one by one, without processes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest
from helpers import wait_until, write

from mlws import Dataset, Experiment
from mlws.compute import warmstart
from mlws.pipelines import ParallelRunConfig, ParallelRunStep, Pipeline
from mlws.processes import python_path

SCORE = """
def init():
    pass

def run(mini_batch):
    return [f"{r.id} {r.x * 3}" for r in mini_batch.itertuples()]
"""
WARM_LINE = "ParallelRunStep: started warm"


def _launcher_has_pyarrow(ws_path: Path) -> bool:
    from mlws.compute.launcher import socket_folder

    for record in socket_folder().glob("l-*.json"):
        try:
            info = json.loads(record.read_text())
            if not os.path.samefile(info["workspace"], ws_path):
                continue
            maps = Path(f"/proc/{info['pid']}/maps").read_text()
        except (OSError, ValueError, KeyError):
            continue
        if "libarrow" in maps:
            return True
    return False


def _step(name: str, src: Path, ds, **env: str) -> ParallelRunStep:  # noqa: ANN001 - a dataset
    cfg = ParallelRunConfig(
        entry_script="score.py",
        source_directory=str(src),
        mini_batch_size=50,
        error_threshold=0,
        process_count_per_node=1,
        environment_variables=env or None,
    )
    return ParallelRunStep(name, cfg, inputs=[ds.as_named_input("t")], allow_reuse=False)


def test_the_driver_starts_warm_once_the_launcher_has_pandas_and_cold_otherwise(
    ws, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLWS_LAUNCHER_IDLE_S", "30")  # it must outlive the first, cold step
    src = write(tmp_path / "src" / "score.py", textwrap.dedent(SCORE)).parent
    table = write(tmp_path / "t.csv", "id,x\n" + "".join(f"{i},{i % 7}\n" for i in range(120)))
    ds = Dataset.Tabular.from_delimited_files(str(table))
    expected = "".join(f"{i} {(i % 7) * 3}\n" for i in range(120))
    exp = Experiment(ws, "warm")

    def check(step_run) -> str:  # noqa: ANN001 - a StepRun
        assert step_run.get_status() == "Completed"
        assert step_run._read_file_text("outputs/parallel_run_step.txt") == expected
        row = ws.catalog.one("SELECT pid, pid_start FROM runs WHERE id = ?", (step_run.id,))
        assert row[0] and row[1]  # the driver's pid and start time, for reconciliation
        return step_run._read_file_text("logs/driver.log")

    # The workspace's first ParallelRunStep: its launcher had no pandas, the driver is fresh.
    first = exp.submit(Pipeline(ws, [_step("cold", src, ds)]))
    first.wait_for_completion(show_output=False, timeout_seconds=90)
    (cold,) = first.get_steps()
    assert WARM_LINE not in check(cold)
    wait_until(lambda: _launcher_has_pyarrow(ws.path), 60, "the launcher to import pyarrow")
    # Now warm; a step whose environment changes an mlws setting still starts fresh.
    second = exp.submit(
        Pipeline(ws, [_step("warm", src, ds), _step("fresh", src, ds, MLWS_WARM_START="0")])
    )
    second.wait_for_completion(show_output=False, timeout_seconds=90)
    steps = {s.name: s for s in second.get_steps()}
    log = check(steps["warm"])
    assert WARM_LINE in log and "1 of 1 mini-batches" not in log
    assert "3 of 3 mini-batches succeeded" in steps["warm"]._read_file_text("logs/job_result.txt")
    assert WARM_LINE not in check(steps["fresh"])


@pytest.fixture
def warm_env(monkeypatch):
    """This process as a warm supervisor: the driver and its WARM modules imported."""
    from mlws.pipelines import parallel_driver

    for name in parallel_driver.WARM:
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or object())
    monkeypatch.delenv("MLWS_WARM_START", raising=False)
    monkeypatch.setattr(warmstart, "_ZYGOTE", [(0, None)])  # a child waiting
    env = dict(os.environ, PYTHONPATH=python_path(os.environ.get("PYTHONPATH")))
    env.update(MLWS_RUN_ID="r1", MLWS_WORKSPACE="/w", MLWS_DATA_PATHS="{}")
    return env


def test_the_warm_path_only_for_the_driver_this_interpreter_and_the_same_settings(
    warm_env, monkeypatch
):
    argv = [sys.executable, "-m", "mlws.pipelines.parallel_driver", "{}"]
    assert warmstart.warm_module(argv, warm_env) == "mlws.pipelines.parallel_driver"
    assert warmstart.warm_module([sys.executable, "-m", "json.tool"], warm_env) is None
    assert warmstart.warm_module(["/other/python", *argv[1:]], warm_env) is None
    assert warmstart.warm_module([sys.executable, "score.py"], warm_env) is None
    own_path = dict(warm_env, PYTHONPATH="/mine" + os.pathsep + warm_env["PYTHONPATH"])
    assert warmstart.warm_module(argv, own_path) is None
    for name in ("MLWS_CANCEL_GRACE_S", "PYTHONHASHSEED", "MLWS_WARM_START"):
        assert warmstart.warm_module(argv, dict(warm_env, **{name: "0"})) is None
    monkeypatch.delitem(sys.modules, "pyarrow")  # the launcher had not imported it
    assert warmstart.warm_module(argv, warm_env) is None
    monkeypatch.setitem(sys.modules, "pyarrow", object())
    monkeypatch.setattr(warmstart, "_ZYGOTE", [])  # a supervisor started cold: no child
    assert warmstart.warm_module(argv, warm_env) is None


# -- a run's own script, forked warm --------------------------------------------------------------
FACTS = """
import atexit, json, logging, os, pickle, random, sys, threading

class Point:
    def __init__(self, x):
        self.x = x

def later():
    with open("outputs/thread.txt", "w") as f:
        f.write("joined")

logging.basicConfig(level=logging.INFO, format="log: %(message)s")
logging.info("configured")
print(json.dumps({
    "comm": open("/proc/self/comm").read().strip(),
    "name": __name__, "file": __file__, "argv": sys.argv, "path0": sys.path[0],
    "random": random.random(), "env": os.environ.get("FROM_RUN"),
    "pickled": pickle.loads(pickle.dumps(Point(3))).x, "numpy": "numpy" in sys.modules,
}))
from mlws import Run
Run.get_context().log("m", 1.0)  # flushed at exit
left_open = open("outputs/left_open.txt", "w")
left_open.write("written at exit")
atexit.register(lambda: open("outputs/atexit.txt", "w").close())
threading.Thread(target=later).start()
if sys.argv[1] == "raise":
    raise ValueError("boom")
if sys.argv[1] == "interrupt":
    raise KeyboardInterrupt
sys.exit(int(sys.argv[1]))
"""


def test_a_local_script_is_forked_warm_and_acts_as_in_a_fresh_interpreter(ws, tmp_path):
    from mlws import Environment, ScriptRunConfig

    src = write(tmp_path / "src" / "facts.py", textwrap.dedent(FACTS)).parent
    mine = write(tmp_path / "mine" / "facts.py", "import json\nprint(json.MARK)\n").parent
    write(mine / "json.py", "MARK = 'the script folder json'\n")  # shadows a warm module
    env = Environment("vars")
    # BIG: the request to the forked child spans reads (the word to start came glued to its
    # last one, and the script was never run: the run "Completed" all the same).
    env.environment_variables = {"FROM_RUN": "yes", "BIG": "x" * 6000}
    exp = Experiment(ws, "facts")
    runs = [
        exp.submit(ScriptRunConfig(str(src), "facts.py", arguments=[a], environment=env))
        for a in ("0", "0", "3", "raise", "interrupt")
    ]
    shadowed = exp.submit(ScriptRunConfig(str(mine), "facts.py"))
    for r in [*runs, shadowed]:
        r.wait_for_completion(raise_on_error=False, timeout=60)
    facts = [json.loads(r._read_file_text("logs/driver.log").splitlines()[-1]) for r in runs[:2]]
    for run, f in zip(runs[:2], facts, strict=True):
        assert run.get_status() == "Completed"
        assert f["comm"] == warmstart.COMM.decode()  # forked, not a fresh interpreter
        assert f["name"] == "__main__" and f["argv"] == ["facts.py", "0"] and f["env"] == "yes"
        assert os.path.isabs(f["file"]) and f["path0"] == os.path.dirname(f["file"])
        assert f["pickled"] == 3 and f["numpy"] is False
        assert "log: configured" in run._read_file_text("logs/driver.log")
        assert run.get_metrics() == {"m": 1.0}
        assert run._read_file_text("outputs/left_open.txt") == "written at exit"
        assert run._read_file_text("outputs/thread.txt") == "joined"
        assert "outputs/atexit.txt" in run.get_file_names()
    assert facts[0]["random"] != facts[1]["random"]  # reseeded in every fork
    errors = [r.get_details()["error"]["error"]["message"] for r in runs[2:]]
    assert errors[0].startswith("the script exited with code 3: ")
    assert errors[1].endswith(": ValueError: boom")
    log = runs[3]._read_file_text("logs/driver.log")
    assert 'facts.py", line' in log and "warmstart" not in log  # the script's frames only
    assert errors[2] == "the script was killed by signal 2 (SIGINT)"
    assert shadowed.get_status() == "Completed"
    assert shadowed._read_file_text("logs/driver.log").strip() == "the script folder json"


def test_the_warm_path_for_a_script_only_where_a_fresh_interpreter_would_act_the_same(
    warm_env, monkeypatch, tmp_path
):
    write(tmp_path / "t.py", "")
    monkeypatch.setattr(warmstart, "foreign_modules", lambda: [])
    argv = [sys.executable, "t.py", "--x", "1"]
    assert warmstart.warm_script(argv, warm_env, tmp_path) == str(tmp_path.resolve() / "t.py")
    assert warmstart.warm_script(["/other/python", "t.py"], warm_env, tmp_path) is None
    assert warmstart.warm_script([sys.executable, "-u", "t.py"], warm_env, tmp_path) is None
    assert warmstart.warm_script([sys.executable, "gone.py"], warm_env, tmp_path) is None
    for name in ("PYTHONHASHSEED", "LANG", "TZ", "MLWS_WARM_START"):
        assert warmstart.warm_script(argv, dict(warm_env, **{name: "x"}), tmp_path) is None
    write(tmp_path / "signal" / "__init__.py", "")  # a package named as a warm module
    assert warmstart.warm_script(argv, warm_env, tmp_path) is None
    (tmp_path / "signal" / "__init__.py").unlink()  # a namespace folder shadows nothing
    assert warmstart.warm_script(argv, warm_env, tmp_path) is not None
    monkeypatch.setattr(warmstart, "foreign_modules", lambda: ["numpy"])
    assert warmstart.warm_script(argv, warm_env, tmp_path) is None
    monkeypatch.undo()
    # This process (pytest) has third-party modules; mlws, psutil and the stdlib do not count.
    found = warmstart.foreign_modules()
    assert "pytest" in found and not {"mlws", "psutil", "os", "_xxsubinterpreters"} & set(found)
    # What it found of a module is kept by name and module object: one replaced under the same
    # name (a module re-imported from elsewhere) is looked at again.
    fake = types.ModuleType("zz_mlws_probe")
    fake.__file__ = str(tmp_path / "site-packages" / "zz_mlws_probe.py")
    monkeypatch.setitem(sys.modules, "zz_mlws_probe", fake)
    assert "zz_mlws_probe" in warmstart.foreign_modules()
    monkeypatch.setitem(sys.modules, "zz_mlws_probe", types.ModuleType("zz_mlws_probe"))
    assert "zz_mlws_probe" not in warmstart.foreign_modules()  # no file: built in
