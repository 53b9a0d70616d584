"""Unit tests of :mod:`mlws.compute.hostmodels`: what home answers a host's model request, and
what the agent makes of an answer (a bad one changes nothing on the host). The whole path over
a real sshd is in test_compute_ssh.py (one run) and test_distributed.py (two hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlws import Model
from mlws.compute import hostmodels


@pytest.fixture
def weights(ws, tmp_path: Path) -> Model:  # noqa: ANN001
    (tmp_path / "model.pkl").write_text("w")
    return Model.register(ws, str(tmp_path / "model.pkl"), "weights")


def test_home_answers_name_version_and_hash_and_sends_nothing_the_host_has(ws, weights) -> None:  # noqa: ANN001
    digest = weights.manifest.split(":")[1]
    ev = {"id": 3, "name": "weights", "version": None, "have": [digest]}
    # conn=None: nothing is copied when the host holds the files already.
    got = hostmodels.answer(ws, None, "/w/runs/r1", ev)  # type: ignore[arg-type]
    assert got == {"id": 3, "name": "weights", "version": 1, "manifest": digest, "shipped": None}


@pytest.mark.parametrize(
    ("ev", "message"),
    [
        ({"name": "nope"}, "nope"),
        ({"name": "weights", "version": 7}, "weights"),
        ({"name": "weights", "version": "x"}, "invalid literal"),
        ({"name": "../etc"}, "model name"),
    ],
)
def test_home_answers_a_bad_request_with_one_line(ws, weights, ev, message) -> None:  # noqa: ANN001
    got = hostmodels.answer(ws, None, "/w/runs/r1", {"id": 1, **ev})  # type: ignore[arg-type]
    assert set(got) == {"id", "error"} and message in got["error"], got
    assert "\n" not in got["error"]


def test_the_agent_links_the_hosts_copy_into_the_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    digest = "a" * 64
    part = f"{digest}.part-{'b' * 32}"
    (tmp_path / "models" / part).mkdir(parents=True)
    (tmp_path / "models" / part / "model.pkl").write_text("w")
    msg = {"name": "weights", "version": 2, "manifest": digest, "shipped": part}
    assert hostmodels.place(run_dir, msg) == {"root": str(run_dir / "azureml-models")}
    assert (run_dir / "azureml-models" / "weights" / "2" / "model.pkl").read_text() == "w"
    assert hostmodels.held(run_dir) == [digest]
    # Asked again (another process): the same link, nothing copied.
    again = {**msg, "shipped": None}
    assert hostmodels.place(run_dir, again) == {"root": str(run_dir / "azureml-models")}


@pytest.mark.parametrize(
    "msg",
    [
        {"error": "model 'nope' not found"},
        {"name": "../x", "version": 1, "manifest": "a" * 64},
        {"name": "w", "version": 1, "manifest": "../../etc"},
        {"name": "w", "version": 1, "manifest": "a" * 64, "shipped": "../../etc"},
        {"name": "w", "version": 1, "manifest": "a" * 64},  # not on the host
        {"name": "w", "version": "one", "manifest": "a" * 64},
    ],
)
def test_a_bad_answer_is_an_error_and_changes_nothing(tmp_path: Path, msg) -> None:  # noqa: ANN001
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    got = hostmodels.place(run_dir, msg)
    assert set(got) == {"error"}, got
    assert not (run_dir / "azureml-models").exists()


def test_a_process_without_the_channel_gets_a_one_line_error(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from mlws.errors import ModelNotFound
    from mlws.modelpath import model_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(hostmodels.ENV, "1")
    monkeypatch.delenv("MLWS_SECRETS_FDS", raising=False)
    monkeypatch.delenv("MLWS_RUN_ID", raising=False)
    with pytest.raises(ModelNotFound, match="only the run's first process on a host"):
        model_path("weights")
