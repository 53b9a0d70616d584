"""Callables as runs: one submitted like a script, and many fanned out on joblib workers."""

import os

import pytest

from mlws import Experiment, FunctionRunConfig, Run, get_result, run_parallel
from mlws.errors import UserErrorException


def train(alpha, scale=1.0):
    run = Run.get_context()
    run.log("alpha", alpha)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/weights.txt", "w") as f:
        f.write(str(alpha * scale))
    print("trained", alpha)
    return {"loss": alpha * scale}


def square(x):
    Run.get_context().log("x", x)
    if x == -1:
        raise ValueError("negative input")
    return x * x


def test_function_run_is_tracked_like_a_script_run(ws):
    run = Experiment(ws, "fn").submit(FunctionRunConfig(train, args=(0.5,), kwargs={"scale": 4}))
    run.wait_for_completion(timeout=60)
    assert run.get_status() == "Completed"
    assert run.get_metrics() == {"alpha": 0.5}
    assert get_result(run) == {"loss": 2.0}
    assert "outputs/weights.txt" in run.get_file_names()
    assert "trained 0.5" in "".join(run.iter_log())
    assert run.get_properties()["mlws.function"].endswith("train")


def test_function_run_failure_carries_the_exception(ws):
    run = Experiment(ws, "fn").submit(FunctionRunConfig(square, args=(-1,)))
    details = run.wait_for_completion(timeout=60, raise_on_error=False)
    assert details["status"] == "Failed"
    assert "ValueError: negative input" in details["error"]["error"]["message"]
    with pytest.raises(UserErrorException, match="no result"):
        get_result(run)
    with pytest.raises(UserErrorException, match="callable"):
        FunctionRunConfig(42)


def test_fan_out_200_callables_with_max_concurrent_4(ws):
    parent = run_parallel(Experiment(ws, "fan"), square, range(200), max_concurrent=4)
    assert parent.get_status() == "Completed"
    children = parent.get_children()
    assert len(children) == 200
    assert {c.get_status() for c in children} == {"Completed"}
    by_index = {int(c.get_tags()["mlws.index"]): c for c in children}
    assert get_result(by_index[7]) == 49
    metrics = parent.get_metrics(recursive=True)
    assert sorted(m["x"] for rid, m in metrics.items() if rid != parent.id) == list(range(200))
    pids = {ws.catalog.scalar("SELECT pid FROM runs WHERE id = ?", (c.id,)) for c in children}
    assert 1 < len(pids) <= 4  # spread over at most max_concurrent worker processes


def test_fan_out_with_failures_fails_the_parent_not_the_rest(ws):
    parent = run_parallel(Experiment(ws, "fan"), square, [1, -1, 3], max_concurrent=2)
    d = parent.get_details()
    assert d["status"] == "Failed" and "1 of 3 child runs" in d["error"]["error"]["message"]
    statuses = sorted(c.get_status() for c in parent.get_children())
    assert statuses == ["Completed", "Completed", "Failed"]
    failed = next(c for c in parent.get_children() if c.get_status() == "Failed")
    assert "ValueError: negative input" in failed.get_details()["error"]["error"]["message"]
    assert "logs/traceback.txt" in failed.get_file_names()
