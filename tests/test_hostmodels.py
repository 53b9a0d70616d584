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


# -- v1's Model(ws, name) and download() on a host: records from home, files from the host's copy --
@pytest.fixture
def on_host(ws, weights, tmp_path: Path, monkeypatch):  # noqa: ANN001
    """A script's view on an ssh host without sshd: its workspace is an empty replica, and the
    channel is answered in-process by :func:`hostmodels.answer` then :func:`hostmodels.place`,
    the host already holding the files (so nothing is rsync'd)."""
    from mlws import Workspace

    replica = Workspace.create(tmp_path / "replica")
    run_dir = tmp_path / "work" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    digest = weights.manifest.split(":")[1]
    weights.download(hostmodels.cache_dir(run_dir) / digest)
    asked: list[dict] = []

    def ask_channel(request: dict) -> dict:
        asked.append(request)
        ev = {"id": 1, "name": request["model"], "version": request.get("version")}
        ev.update(list=bool(request.get("list")), have=hostmodels.held(run_dir))
        return hostmodels.place(run_dir, hostmodels.answer(ws, None, "/w/runs/r1", ev))  # type: ignore[arg-type]

    monkeypatch.setattr("mlws.keyvault.ask_channel", ask_channel)
    monkeypatch.setenv("MLWS_SECRETS_FDS", "3,4")
    monkeypatch.setenv(hostmodels.ENV, "1")
    monkeypatch.setenv("MLWS_WORKSPACE", str(replica.path))
    monkeypatch.chdir(tmp_path)
    yield replica, run_dir / "azureml-models" / "weights" / "1", asked
    replica.close()


def test_a_model_on_a_host_is_homes_record_and_downloads_from_the_hosts_copy(on_host) -> None:  # noqa: ANN001
    from mlws.errors import BlobCorrupted, ModelNotFound, UserErrorException

    replica, copy, asked = on_host
    m = Model(replica, "weights", version=1)
    assert (m.id, m.get_file_names(), m.read_file("model.pkl")) == (
        "weights:1",
        ["model.pkl"],
        b"w",
    )
    assert asked == [{"model": "weights", "list": True}, {"model": "weights", "version": 1}]
    assert Path(m.download("dl")).read_text() == "w"
    with pytest.raises(UserErrorException, match="exist_ok"):
        m.download("dl")
    assert Path(m.download("dl", exist_ok=True)).read_text() == "w"
    assert [x.id for x in Model.list(replica)] == ["weights:1"]
    with pytest.raises(ModelNotFound, match="no model 'nope'"):
        Model(replica, "nope")
    # The host's copy is shared by its runs: one a script changed is never handed out.
    (copy / "model.pkl").write_text("tampered")
    with pytest.raises(BlobCorrupted):
        Model(replica, "weights").download("dl2")
    assert not (Path("dl2") / "model.pkl").exists()


def test_a_manifest_that_is_not_the_models_is_refused() -> None:
    from mlws.errors import BlobCorrupted

    with pytest.raises(BlobCorrupted, match="not its"):
        hostmodels.HostFiles("w", 1, "sha256:" + "0" * 64, "[]")


def test_elsewhere_home_is_not_asked(ws, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv(hostmodels.ENV, raising=False)
    assert hostmodels.home_rows(ws, "weights") == []


def test_a_listing_without_the_channel_is_one_line(ws, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from mlws.errors import ModelNotFound

    monkeypatch.setenv(hostmodels.ENV, "1")
    monkeypatch.setenv("MLWS_WORKSPACE", str(ws.path))
    monkeypatch.delenv("MLWS_SECRETS_FDS", raising=False)
    with pytest.raises(ModelNotFound, match="the workspace's models are not on this host"):
        Model.list(ws)
    with pytest.raises(ModelNotFound, match="model 'weights' is not on this host"):
        Model(ws, "weights")
