"""``mlws.rundownload``: a run's files, outputs or snapshot into a folder or a .zip, from Python
(what ``mlws run download`` calls)."""

import zipfile

import pytest
from helpers import write

import mlws
from mlws.errors import UserErrorException
from mlws.rundownload import default_target, download_run


@pytest.fixture
def run(tmp_path):
    ws = mlws.Workspace.create(tmp_path / "ws")
    r = mlws.Experiment(ws, "e").start_logging()
    r.upload_file("outputs/model.txt", str(write(tmp_path / "m.txt", "model")))
    r.upload_file("notes.txt", str(write(tmp_path / "n.txt", "notes")))
    r.complete()
    yield r
    ws.close()


def test_folder_outputs_and_zip(run, tmp_path):
    done = download_run(run, tmp_path / "all")
    assert done.count == 2 and done.path == tmp_path / "all"
    assert (tmp_path / "all" / "outputs" / "model.txt").read_text() == "model"

    only = download_run(run, tmp_path / "out", what="outputs")
    assert only.count == 1 and not (tmp_path / "out" / "notes.txt").exists()

    z = download_run(run, tmp_path / "z", as_zip=True)
    assert z.path == tmp_path / "z.zip" and z.count == 2
    names = [n for n in zipfile.ZipFile(z.path).namelist() if not n.endswith("/")]
    assert sorted(names) == ["notes.txt", "outputs/model.txt"]
    assert default_target(run.id, "snapshot").name == f"{run.id}-snapshot"


def test_refusals_change_nothing(run, tmp_path):
    write(tmp_path / "z.zip", "keep")
    with pytest.raises(UserErrorException, match="overwrite"):
        download_run(run, tmp_path / "z", as_zip=True)
    assert (tmp_path / "z.zip").read_text() == "keep"
    assert download_run(run, tmp_path / "z", as_zip=True, overwrite=True).count == 2
    with pytest.raises(UserErrorException, match="what="):
        download_run(run, tmp_path / "x", what="everything")
    assert not (tmp_path / "x").exists()
