"""The examples run as a new user would run them, and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlws import Dataset, Workspace

ROOT = Path(__file__).resolve().parent.parent


def run_example(path: str, ws_path: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / path)],
        env={**os.environ, "MLWS_WORKSPACE": str(ws_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_datasets_example_twice(tmp_path):
    ws_path = tmp_path / "ex-ws"
    first = run_example("examples/datasets/driver.py", ws_path)
    assert "Dataset iris:1: 150 rows" in first
    assert "counts.csv: {'setosa': '50', 'versicolor': '50', 'virginica': '50'}" in first
    assert "The run read iris:1 (Mount)" in first
    # Again: the data did not change, so the same dataset version; the output's next version.
    second = run_example("examples/datasets/driver.py", ws_path)
    assert "Dataset iris:1: 150 rows" in second and "iris_by_species:2" in second
    with Workspace(ws_path) as ws:
        iris = Dataset.get_by_name(ws, "iris")
        assert iris.version == 1 and [r["direction"] for r in iris.runs()] == ["input", "input"]
        made = Dataset.get_by_name(ws, "iris_by_species", 2)
        assert made.runs()[0]["direction"] == "output"
        assert sorted(p.rsplit("/", 1)[1] for p in made.to_path()) == [
            "counts.csv",
            "setosa.csv",
            "versicolor.csv",
            "virginica.csv",
        ]


def test_pipeline_example_runs_reuses_and_registers(tmp_path):
    out = run_example("examples/pipeline/driver.py", tmp_path / "ex-ws")
    assert out.count("Completed  ran") == 7  # 4 steps, then 3 after a new alpha
    assert "Submitted again unchanged: 4 of 4 steps reused" in out
    assert "prep      Completed  reused" in out
    assert "Latest model: diabetes-ridge:2" in out
