"""The model registry (``mlws.models``, ``mlws model ...``): versions, files, lineage, filters,
metadata, ``get_model_path``, delete + gc/fsck, bad input, concurrent registration, and models
registered by scripts (local, and on an ``ssh`` host: they come home with the run).

Scripts never sleep for a fixed time: concurrent workers wait for a gate file the test creates,
and the test side waits on runs and worker processes with a deadline.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SCRIPT_PRELUDE, invoke, kill_run_processes, make_source, one_error_line

from mlws import Experiment, Model, ScriptRunConfig, Workspace
from mlws.errors import (
    MlwsError,
    ModelNotFound,
    PropertyConflict,
    UnsafePath,
    UserErrorException,
)
from mlws.maintenance import fsck, gc
from mlws.runs import Run

MB = 1024 * 1024


# -- helpers -----------------------------------------------------------------------------------------
def ids(models: list[Model]) -> list[str]:
    return [m.id for m in models]


def model_rows(ws: Workspace) -> list[tuple[str, int]]:
    return [tuple(r) for r in ws.catalog.query("SELECT name, version FROM models ORDER BY 1, 2")]


def blob_state(ws: Workspace) -> tuple[int, int]:
    """(number of blobs, their bytes) in the workspace's blob store."""
    hashes = list(ws.blobs.iter_hashes())
    return len(hashes), sum(ws.blobs.path(h).stat().st_size for h in hashes)


def state(ws: Workspace) -> tuple[list[tuple[str, int]], list[str]]:
    """What a failed call must not change: the model rows and the set of blobs."""
    return model_rows(ws), sorted(ws.blobs.iter_hashes())


def file_hashes(model: Model) -> dict[str, str]:
    return {e.path: e.hash for e in model.workspace.blobs.read_manifest(model._row["manifest"])}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_file_blob(ws: Workspace, run: Run, path: str) -> str:
    return ws.catalog.scalar(
        "SELECT blob FROM run_files WHERE run_seq = ? AND path = ?", (run.seq, path)
    )


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def submit_and_wait(
    ws: Workspace, src: Path, target: str | None = None, timeout: float = 60
) -> Run:
    kwargs: dict[str, Any] = {"compute_target": target} if target else {}
    cfg = ScriptRunConfig(source_directory=str(src), script="train.py", **kwargs)
    run = Experiment(ws, "exp").submit(cfg)
    run.wait_for_completion(raise_on_error=False, timeout=timeout)
    assert run.get_status() == "Completed", (run.get_status(), run.get_details().get("error"))
    return run


def logged_run(ws: Workspace, files: dict[str, bytes]) -> Run:
    """A completed interactive run holding ``files`` (no process to start)."""
    run = Experiment(ws, "manual").start_logging()
    for name, data in files.items():
        run.upload_file(name, io.BytesIO(data))
    run.complete()
    return run


@pytest.fixture(autouse=True)
def kill_leftovers(ws: Workspace) -> Iterator[None]:
    """After each test, kill the supervisors and scripts it left running."""
    yield
    kill_run_processes(ws)


# -- 1. register files and folders, versions, lookup, download ------------------------------------
def test_register_file_versions_lookup_and_download(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "model.pkl"
    for i in (1, 2, 3):
        write(f, b"weights-%d" % i)
        m = Model.register(ws, f, "clf", tags={"i": i}, description=f"v{i}")
        assert (m.name, m.version, m.id) == ("clf", i, f"clf:{i}")

    latest = Model(ws, "clf")
    assert latest.version == 3 and latest.tags == {"i": "3"} and latest.description == "v3"
    one = Model(ws, "clf", version=1)
    assert one == Model(ws, id="clf:1") and one.version == 1 and one.tags == {"i": "1"}
    assert one.path == "model.pkl" and one.get_file_names() == ["model.pkl"]
    assert one.run_id is None and one.run is None

    out = tmp_path / "out"
    p = one.download(out)
    assert Path(p) == out / "model.pkl" and Path(p).read_bytes() == b"weights-1"
    # the earlier versions kept their own bytes although the file on disk changed since
    assert Path(Model(ws, "clf", version=2).download(tmp_path / "v2")).read_bytes() == b"weights-2"

    with pytest.raises(UserErrorException, match="exists already"):
        latest.download(out)
    assert Path(p).read_bytes() == b"weights-1"  # refused: nothing changed
    assert latest.download(out, exist_ok=True) == p
    assert Path(p).read_bytes() == b"weights-3"


def test_register_folder_child_paths_and_download(ws: Workspace, tmp_path: Path) -> None:
    d = tmp_path / "model_dir"
    write(d / "a.txt", "A")
    write(d / "c.txt", "C")
    write(d / "sub" / "b.bin", b"B" * 10)

    m = Model.register(ws, d, "folder")
    assert m.version == 1 and m.path == "model_dir"
    assert sorted(m.get_file_names()) == [
        "model_dir/a.txt",
        "model_dir/c.txt",
        "model_dir/sub/b.bin",
    ]

    out = tmp_path / "out"
    p = Path(m.download(out))
    assert p == out / "model_dir"
    assert (p / "a.txt").read_text() == "A" and (p / "sub" / "b.bin").read_bytes() == b"B" * 10
    (p / "a.txt").write_text("local edit")
    with pytest.raises(UserErrorException, match="exists already"):
        m.download(out)
    assert (p / "a.txt").read_text() == "local edit"  # refused: nothing changed
    assert Path(m.download(out, exist_ok=True)) == p
    assert (p / "a.txt").read_text() == "A"

    m2 = Model.register(ws, d, "folder", child_paths=["a.txt", "sub/b.bin"])
    assert m2.version == 2 and m2.path == "model_dir"
    assert sorted(m2.get_file_names()) == ["model_dir/a.txt", "model_dir/sub/b.bin"]
    p2 = Path(m2.download(tmp_path / "out2"))
    assert sorted(x.relative_to(p2).as_posix() for x in p2.rglob("*") if x.is_file()) == [
        "a.txt",
        "sub/b.bin",
    ]
    assert Model.register(ws, d, "folder").version == 3
    assert Model(ws, "folder").version == 3


# -- 2. dedup ----------------------------------------------------------------------------------------
def test_the_same_file_registered_twice_is_stored_once(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "big.bin", os.urandom(5 * MB))
    n0, b0 = blob_state(ws)
    m1 = Model.register(ws, f, "big")
    n1, b1 = blob_state(ws)
    assert n1 - n0 == 2  # the file and the manifest
    assert 5 * MB <= b1 - b0 < 5 * MB + 4096

    m2 = Model.register(ws, f, "big")
    assert (m1.version, m2.version) == (1, 2)
    assert blob_state(ws) == (n1, b1)  # nothing new: same file, same manifest

    # the same bytes under another name: only a new (small) manifest
    m3 = Model.register(ws, write(tmp_path / "other" / "renamed.bin", f.read_bytes()), "big")
    n3, b3 = blob_state(ws)
    assert m3.version == 3 and n3 == n1 + 1 and b3 - b1 < 4096
    assert file_hashes(m3)["renamed.bin"] == file_hashes(m1)["big.bin"]


# -- 3. run.register_model ---------------------------------------------------------------------------
WRITE_OUTPUTS = """
os.makedirs("outputs/model_dir", exist_ok=True)
with open("outputs/model.pkl", "wb") as f:
    f.write(b"run-weights")
with open("outputs/model_dir/a.txt", "w") as f:
    f.write("inside the folder")
"""


def test_register_model_from_a_completed_run(ws: Workspace, tmp_path: Path) -> None:
    run = submit_and_wait(ws, make_source(tmp_path, WRITE_OUTPUTS))
    run_blob = run_file_blob(ws, run, "outputs/model.pkl")
    assert run_blob == sha(b"run-weights")

    n0, _ = blob_state(ws)
    m = run.register_model("from-run", model_path="outputs/model.pkl", tags={"k": "v"})
    assert (m.version, m.path, m.get_file_names()) == (1, "model.pkl", ["model.pkl"])
    assert m.run_id == run.id and m.experiment_name == "exp" and m.run.id == run.id
    assert m.tags == {"k": "v"}
    assert file_hashes(m) == {"model.pkl": run_blob}  # the run's blob, not a copy
    assert blob_state(ws)[0] == n0 + 1  # only the manifest is new

    m2 = run.register_model("from-run", model_path="./outputs/model.pkl")
    assert m2.version == 2 and m2.get_file_names() == ["model.pkl"]
    assert file_hashes(m2) == {"model.pkl": run_blob}
    assert Model.list(ws, run_id=run.id) == [m2, m]

    d = run.register_model("run-dir", model_path="outputs/model_dir")
    assert d.path == "model_dir" and d.get_file_names() == ["model_dir/a.txt"]
    assert file_hashes(d)["model_dir/a.txt"] == run_file_blob(ws, run, "outputs/model_dir/a.txt")
    p = Path(d.download(tmp_path / "out"))
    assert p == tmp_path / "out" / "model_dir"
    assert (p / "a.txt").read_text() == "inside the folder"
    assert fsck(ws).ok


def test_register_model_inside_the_running_script(ws: Workspace, tmp_path: Path) -> None:
    src = make_source(
        tmp_path,
        WRITE_OUTPUTS
        + """
from mlws import Run
m = Run.get_context().register_model("inside", "outputs/model.pkl", tags={"by": "script"})
print("registered", m.id, flush=True)
""",
    )
    run = submit_and_wait(ws, src)
    m = Model(ws, "inside")
    assert m.version == 1 and m.run_id == run.id and m.experiment_name == "exp"
    assert m.tags == {"by": "script"} and m.get_file_names() == ["model.pkl"]
    assert file_hashes(m) == {"model.pkl": run_file_blob(ws, run, "outputs/model.pkl")}
    assert Path(m.download(tmp_path / "out")).read_bytes() == b"run-weights"
    assert fsck(ws).ok


# -- 4. a model registered on an ssh host comes home --------------------------------------------------
@pytest.mark.timeout(120)
def test_model_registered_on_an_ssh_host_comes_home(
    ws: Workspace, tmp_path: Path, ssh_server
) -> None:
    from sshd import attach_ssh_target

    attach_ssh_target(ws, "lab", [ssh_server], tmp_path)
    # "pre" exists here already: what the host registers is numbered here, after it
    pre = Model.register(ws, write(tmp_path / "pre.pkl", b"local"), "pre", tags={"at": "home"})
    assert pre.version == 1

    src = make_source(
        tmp_path,
        """
        from mlws import Run
        run = Run.get_context()
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/model.pkl", "wb") as f:
            f.write(b"host-weights")
        m = run.register_model("remote-model", "outputs/model.pkl", tags={"where": "host"})
        p = run.register_model("pre", "outputs/model.pkl")
        p.add_tags({"later": "yes"})
        print("registered on the host:", m.id, p.id, flush=True)
        """,
    )
    run = submit_and_wait(ws, src, target="lab", timeout=90)

    m = Model(ws, "remote-model")
    assert m.version == 1 and m.run_id == run.id and m.experiment_name == "exp"
    assert m.tags == {"where": "host"} and m.path == "model.pkl"
    assert m.get_file_names() == ["model.pkl"]
    assert Path(m.download(tmp_path / "out")).read_bytes() == b"host-weights"

    assert [x.version for x in Model.list(ws, name="pre")] == [2, 1]
    p2 = Model(ws, "pre")
    assert p2.version == 2 and p2.run_id == run.id
    assert p2.tags == {"later": "yes"}  # the host's later change followed it to version 2
    p1 = Model(ws, "pre", version=1)
    assert p1.tags == {"at": "home"} and p1.run_id is None  # the local version is untouched
    assert Path(p1.download(tmp_path / "p1")).read_bytes() == b"local"
    assert Path(p2.download(tmp_path / "p2")).read_bytes() == b"host-weights"
    assert fsck(ws).ok


# -- 5. list filters ---------------------------------------------------------------------------------
def test_list_filters_and_order(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "m.pkl", b"x")
    Model.register(
        ws, f, "a", tags={"stage": "dev"}, properties={"auc": 0.9}, model_framework="ScikitLearn"
    )
    Model.register(ws, f, "a", tags={"stage": "prod"}, model_framework="PyTorch")
    Model.register(ws, f, "a", properties={"auc": "0.95"})
    Model.register(ws, f, "b", tags={"stage": "dev", "team": "x"})
    run = logged_run(ws, {"outputs/model.pkl": b"from a run"})
    run.register_model("c")

    assert ids(Model.list(ws)) == ["a:3", "a:2", "a:1", "b:1", "c:1"]
    assert ids(Model.list(ws, name="a")) == ["a:3", "a:2", "a:1"]
    assert ids(Model.list(ws, name="nope")) == []
    assert ids(Model.list(ws, tags=["stage"])) == ["a:2", "a:1", "b:1"]
    assert ids(Model.list(ws, tags=[["stage", "dev"]])) == ["a:1", "b:1"]
    assert ids(Model.list(ws, tags=[["stage", "dev"], "team"])) == ["b:1"]
    assert ids(Model.list(ws, tags={"stage": "prod"})) == ["a:2"]
    assert ids(Model.list(ws, properties=["auc"])) == ["a:3", "a:1"]
    assert ids(Model.list(ws, properties=[["auc", "0.9"]])) == ["a:1"]
    assert ids(Model.list(ws, run_id=run.id)) == ["c:1"]
    assert ids(Model.list(ws, latest=True)) == ["a:3", "b:1", "c:1"]
    assert ids(Model.list(ws, latest=True, tags=[["stage", "dev"]])) == ["a:1", "b:1"]
    assert ids(Model.list(ws, model_framework="PyTorch")) == ["a:2"]
    assert ids(Model.list(ws, name="a", model_framework="ScikitLearn")) == ["a:1"]
    # the constructor narrows the same way
    assert Model(ws, "a", tags=[["stage", "dev"]]).version == 1
    assert Model(ws, "c", run_id=run.id).run_id == run.id
    with pytest.raises(UserErrorException, match="filters"):
        Model.list(ws, tags=[["a", "b", "c"]])


# -- 6. tags, properties, description ------------------------------------------------------------------
def test_tags_properties_and_description(ws: Workspace, tmp_path: Path) -> None:
    m = Model.register(ws, write(tmp_path / "m.pkl", b"x"), "m", tags={"a": 1, "b": 2})
    m.add_tags({"c": 3})
    assert m.tags == {"a": "1", "b": "2", "c": "3"} == Model(ws, "m").tags
    m.remove_tags(["a"])
    m.remove_tags("b")
    assert m.tags == {"c": "3"} == Model(ws, "m").tags
    m.update(tags={"x": "y"}, description="first")
    assert Model(ws, "m").tags == {"x": "y"} and Model(ws, "m").description == "first"
    m.update(description="second")  # tags stay
    fresh = Model(ws, "m")
    assert fresh.tags == {"x": "y"} and fresh.description == "second"

    m.add_properties({"auc": 0.9})
    m.add_properties({"auc": "0.9", "n": 1})  # the same value again is fine
    assert Model(ws, "m").properties == {"auc": "0.9", "n": "1"}
    with pytest.raises(PropertyConflict, match="auc"):
        m.add_properties({"other": "z", "auc": "0.8"})
    assert Model(ws, "m").properties == {"auc": "0.9", "n": "1"}  # nothing of it was added
    assert m.properties == {"auc": "0.9", "n": "1"}
    # v1's combined edit: tags added then removed, properties added, in one change.
    m.update_tags_properties(
        add_tags={"k": 1, "x": "z"}, remove_tags=["x"], add_properties={"e": 2}
    )
    fresh = Model(ws, "m")
    assert fresh.tags == {"k": "1"} and fresh.properties == {"auc": "0.9", "n": "1", "e": "2"}
    with pytest.raises(PropertyConflict):
        m.update_tags_properties(add_tags={"lost": "1"}, add_properties={"e": "3"})
    assert Model(ws, "m").tags == {"k": "1"}  # the tag went with the refused property


def test_add_properties_stays_add_only_through_a_stale_object(
    ws: Workspace, tmp_path: Path
) -> None:
    Model.register(ws, write(tmp_path / "m.pkl", b"x"), "m")
    first, second = Model(ws, "m"), Model(ws, "m")
    first.add_properties({"auc": "0.9"})
    try:
        second.add_properties({"auc": "0.1"})
    except PropertyConflict:
        pass
    assert Model(ws, "m").properties == {"auc": "0.9"}


def test_add_tags_from_two_objects_keeps_both(ws: Workspace, tmp_path: Path) -> None:
    Model.register(ws, write(tmp_path / "m.pkl", b"x"), "m")
    first, second = Model(ws, "m"), Model(ws, "m")
    first.add_tags({"a": "1"})
    second.add_tags({"b": "2"})
    assert Model(ws, "m").tags == {"a": "1", "b": "2"}


def test_changing_a_deleted_version_says_it_is_gone(ws: Workspace, tmp_path: Path) -> None:
    m = Model.register(ws, write(tmp_path / "m.pkl", b"x"), "m")
    Model(ws, "m").delete()
    with pytest.raises(ModelNotFound):
        m.add_tags({"a": "1"})


# -- 7. get_model_path -------------------------------------------------------------------------------
def test_get_model_path(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "model.pkl"
    Model.register(ws, write(f, b"one"), "gm")
    Model.register(ws, write(f, b"two"), "gm")
    d = tmp_path / "d"
    Model.register(ws, write(d / "model_dir" / "x.txt", "X").parent, "gmdir")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)

    p = Model.get_model_path("gm", _workspace=ws)
    assert Path(p) == Path("azureml-models/gm/2/model.pkl")
    assert (cwd / p).read_bytes() == b"two"
    p1 = Model.get_model_path("gm", version=1, _workspace=ws)
    assert Path(p1) == Path("azureml-models/gm/1/model.pkl") and Path(p1).read_bytes() == b"one"
    pd = Model.get_model_path("gmdir", _workspace=ws)
    assert Path(pd) == Path("azureml-models/gmdir/1/model_dir")
    assert (Path(pd) / "x.txt").read_text() == "X"
    # once downloaded, no workspace is needed
    assert Model.get_model_path("gm", version=1) == p1

    deployed = tmp_path / "deployed"
    write(deployed / "svc" / "3" / "model.pkl", b"deployed")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(deployed))
    got = Model.get_model_path("svc")
    assert (
        Path(got) == deployed / "svc" / "3" / "model.pkl" and Path(got).read_bytes() == b"deployed"
    )
    with pytest.raises(ModelNotFound):
        Model.get_model_path("svc", version=4)

    monkeypatch.delenv("AZUREML_MODEL_DIR")
    with pytest.raises(ModelNotFound, match="_workspace"):
        Model.get_model_path("svc")
    with pytest.raises(ModelNotFound):
        Model.get_model_path("nope", _workspace=ws)
    assert not (cwd / "azureml-models" / "nope").exists()


# -- 8. delete, gc, fsck -----------------------------------------------------------------------------
def test_delete_then_gc_keeps_only_the_remaining_versions_blobs(
    ws: Workspace, tmp_path: Path
) -> None:
    f = tmp_path / "model.pkl"
    versions = {}
    for i in (1, 2, 3):
        m = Model.register(ws, write(f, b"version %d" % i), "m")
        versions[i] = (m._row["manifest"], file_hashes(m)["model.pkl"])
    Model.register(ws, write(tmp_path / "keep.pkl", b"other model"), "other")

    Model(ws, "m", version=2).delete()
    assert [m.version for m in Model.list(ws, name="m")] == [3, 1]
    with pytest.raises(ModelNotFound, match="versions: 1, 3"):
        Model(ws, "m", version=2)
    Model(ws, "m").delete()  # the latest, 3
    assert Model(ws, "m").version == 1  # falls back to the previous latest

    # deleted versions' blobs stay until gc
    assert all(ws.blobs.has(h) for v in versions.values() for h in v)
    rep = gc(ws, grace_s=0)
    assert rep.removed == 4  # two manifests, two files
    for i in (2, 3):
        assert not any(ws.blobs.has(h) for h in versions[i])
    assert all(ws.blobs.has(h) for h in versions[1])
    assert Path(Model(ws, "m").download(tmp_path / "out")).read_bytes() == b"version 1"
    assert Path(Model(ws, "other").download(tmp_path / "out")).read_bytes() == b"other model"
    report = fsck(ws)
    assert report.ok, report.as_dict()


def test_fsck_and_gc_see_a_models_missing_manifest(ws: Workspace, tmp_path: Path) -> None:
    m = Model.register(ws, write(tmp_path / "model.pkl", b"weights"), "m")
    manifest, file_blob = m._row["manifest"], file_hashes(m)["model.pkl"]
    saved = ws.blobs.read_bytes(manifest)
    os.unlink(ws.blobs.path(manifest))  # removed by hand

    report = fsck(ws)
    assert not report.ok and manifest in report.missing
    with pytest.raises(MlwsError, match="gc refused"):
        gc(ws, grace_s=0)
    assert ws.blobs.has(file_blob)  # gc removed nothing

    assert ws.blobs.put_bytes(saved) == manifest  # restored
    assert fsck(ws).ok
    gc(ws, grace_s=0)
    assert ws.blobs.has(file_blob) and ws.blobs.has(manifest)  # a model is a gc root
    assert Path(Model(ws, "m").download(tmp_path / "out")).read_bytes() == b"weights"


# -- 9. bad input: a clear error, nothing recorded ---------------------------------------------------
def test_bad_input_is_refused_and_records_nothing(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "model.pkl", b"weights")
    d = tmp_path / "dir"
    write(d / "a.txt", "A")
    empty = tmp_path / "empty"
    (empty / "only-a-folder").mkdir(parents=True)
    Model.register(ws, f, "m")
    run = logged_run(ws, {"outputs/model.pkl": b"run weights", "outputs/other.txt": b"o"})
    before = state(ws)

    for bad in ("bad name", "", "-x", "x" * 256, "a/b", "a:b", None):
        with pytest.raises(UserErrorException, match="invalid model name"):
            Model.register(ws, f, bad)  # type: ignore[arg-type]
        with pytest.raises(UserErrorException, match="invalid model name"):
            run.register_model(bad)  # type: ignore[arg-type]
    with pytest.raises(UserErrorException, match="does not exist"):
        Model.register(ws, tmp_path / "missing.pkl", "m")
    with pytest.raises(UserErrorException, match="holds no files"):
        Model.register(ws, empty, "m")
    with pytest.raises(UnsafePath):
        Model.register(ws, d, "m", child_paths=["../model.pkl"])
    with pytest.raises(UserErrorException, match="not a file"):
        Model.register(ws, d, "m", child_paths=["a.txt", "missing.txt"])
    with pytest.raises(UserErrorException, match="folder"):
        Model.register(ws, f, "m", child_paths=["model.pkl"])
    with pytest.raises(ModelNotFound, match="nope"):
        Model(ws, "nope")
    with pytest.raises(ModelNotFound, match="versions: 1"):
        Model(ws, "m", version=7)
    for bad_id in ("nope", "m:x", "m:", ":1"):
        with pytest.raises(UserErrorException):
            Model(ws, id=bad_id)
    with pytest.raises(UserErrorException) as e:
        run.register_model("r", "outputs/nope.pkl")
    assert "outputs/model.pkl" in str(e.value) and "outputs/other.txt" in str(e.value)
    with pytest.raises(UserErrorException):
        run.register_model("r", "../outside")
    for datasets in (["training"], [("a", "b", "c")], "ab"):
        with pytest.raises(UserErrorException, match="datasets"):
            run.register_model("r", datasets=datasets)
    with pytest.raises(UserErrorException, match="tags"):
        run.register_model("r", tags=["not", "a", "dict"])  # type: ignore[arg-type]

    assert state(ws) == before
    # the longest allowed name works
    assert Model.register(ws, f, "x" * 255).version == 1


def test_a_name_with_a_trailing_newline_is_refused(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "model.pkl", b"weights")
    with pytest.raises(UserErrorException, match="invalid model name"):
        Model.register(ws, f, "model\n")
    assert model_rows(ws) == []


def test_bad_datasets_or_tags_store_no_blobs(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "model.pkl", b"weights never registered")
    before = state(ws)
    with pytest.raises(UserErrorException, match="datasets"):
        Model.register(ws, f, "m", datasets=["training"])
    with pytest.raises(UserErrorException, match="tags"):
        Model.register(ws, f, "m", tags=["not-a-dict"])  # type: ignore[arg-type]
    assert state(ws) == before


def test_a_symlinked_file_keeps_the_name_it_was_registered_under(
    ws: Workspace, tmp_path: Path
) -> None:
    write(tmp_path / "store" / "weights-1234.bin", b"weights")
    (tmp_path / "model.pkl").symlink_to(tmp_path / "store" / "weights-1234.bin")
    m = Model.register(ws, tmp_path / "model.pkl", "sym")
    assert m.path == "model.pkl" and m.get_file_names() == ["model.pkl"]


def test_download_into_a_file_is_a_clear_error(ws: Workspace, tmp_path: Path) -> None:
    m = Model.register(ws, write(tmp_path / "model.pkl", b"w"), "m")
    target = write(tmp_path / "a-file", "x")
    with pytest.raises(UserErrorException):
        m.download(target)
    assert target.read_text() == "x"


# -- 10. concurrent registrations --------------------------------------------------------------------
WORKER = SCRIPT_PRELUDE + textwrap.dedent(
    """
    from pathlib import Path
    from mlws import Model, Workspace
    ws_path, gate, who, folder = sys.argv[1:]
    ws = Workspace(ws_path)
    f = Path(folder) / "model.pkl"
    wait_gate(gate)
    for i in range(10):
        f.write_bytes(f"{who}-{i}".encode())
        Model.register(ws, f, "shared", tags={"who": who, "i": i})
    """
)


def test_concurrent_registrations_number_versions_without_gaps(
    ws: Workspace, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    procs = []
    for w in range(4):
        folder = tmp_path / f"w{w}"
        folder.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(ws.path), str(gate), f"w{w}", str(folder)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        gate.touch()
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0, out.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    models = Model.list(ws, name="shared")
    assert sorted(m.version for m in models) == list(range(1, 41))
    by_worker: dict[str, list[tuple[int, int]]] = {}
    for m in models:
        # each version holds the bytes its row says it does
        assert file_hashes(m) == {"model.pkl": sha(f"{m.tags['who']}-{m.tags['i']}".encode())}
        by_worker.setdefault(m.tags["who"], []).append((m.version, int(m.tags["i"])))
    assert sorted(by_worker) == ["w0", "w1", "w2", "w3"]
    for pairs in by_worker.values():
        pairs.sort()
        assert [i for _, i in pairs] == list(range(10))  # each worker's order is kept


# -- 11. the CLI -------------------------------------------------------------------------------------
def test_cli_register_list_show_download_delete(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "model.pkl", b"cli weights")
    r = invoke(
        "model", "register", "iris", str(f), "--tag", "stage=dev", "--framework", "ScikitLearn"
    )
    assert r.exit_code == 0, r.output
    assert "Registered model iris version 1 (model.pkl)" in r.output
    f2 = write(tmp_path / "v2" / "model.pkl", b"cli weights 2")
    r = invoke(
        "model",
        "register",
        "iris",
        str(f2),
        "--tag",
        "stage=prod",
        "--property",
        "auc=0.9",
        "--json",
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["version"] == 2 and data["tags"] == {"stage": "prod"}
    assert data["properties"] == {"auc": "0.9"}

    run = logged_run(ws, {"outputs/model.pkl": b"run weights", "outputs/m2.bin": b"m2"})
    r = invoke("model", "register", "fromrun", "--run", run.id)
    assert r.exit_code == 0, r.output
    assert "Registered model fromrun version 1 (model.pkl)" in r.output
    r = invoke("model", "register", "fromrun", "outputs/m2.bin", "--run", run.id)
    assert r.exit_code == 0 and "version 2 (m2.bin)" in r.output, r.output
    assert Model(ws, "fromrun", version=1).run_id == run.id

    listed = json.loads(invoke("model", "list", "--json").output)
    assert [(m["name"], m["version"]) for m in listed] == [
        ("fromrun", 2),
        ("fromrun", 1),
        ("iris", 2),
        ("iris", 1),
    ]
    listed = json.loads(invoke("model", "list", "--name", "iris", "--json").output)
    assert [m["version"] for m in listed] == [2, 1]
    listed = json.loads(invoke("model", "list", "--latest", "--json").output)
    assert [m["id"] for m in listed] == ["fromrun:2", "iris:2"]
    listed = json.loads(invoke("model", "list", "--tag", "stage=dev", "--json").output)
    assert [m["id"] for m in listed] == ["iris:1"]
    listed = json.loads(invoke("model", "list", "--tag", "stage", "--json").output)
    assert [m["id"] for m in listed] == ["iris:2", "iris:1"]
    listed = json.loads(invoke("model", "list", "--run", run.id, "--json").output)
    assert [m["id"] for m in listed] == ["fromrun:2", "fromrun:1"]
    r = invoke("model", "list")
    assert r.exit_code == 0 and "iris" in r.output and "stage=dev" in r.output, r.output

    r = invoke("model", "show", "iris:1")
    assert r.exit_code == 0, r.output
    assert "iris:1" in r.output and "ScikitLearn" in r.output and "model.pkl" in r.output
    shown = json.loads(invoke("model", "show", "iris", "--version", "1", "--json").output)
    assert shown["id"] == "iris:1" and shown["files"] == ["model.pkl"]
    assert shown["framework"] == "ScikitLearn" and shown["tags"] == {"stage": "dev"}
    shown = json.loads(invoke("model", "show", "fromrun", "--json").output)
    assert shown["version"] == 2 and shown["runId"] == run.id and shown["files"] == ["m2.bin"]

    out = tmp_path / "dl"
    r = invoke("model", "download", "iris:1", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out / "model.pkl")
    assert (out / "model.pkl").read_bytes() == b"cli weights"
    (out / "model.pkl").write_bytes(b"edited")
    line = one_error_line(invoke("model", "download", "iris:1", "-o", str(out)))
    assert "exists already" in line and "--exist-ok" in line
    assert (out / "model.pkl").read_bytes() == b"edited"
    r = invoke("model", "download", "iris:1", "-o", str(out), "--exist-ok")
    assert r.exit_code == 0 and (out / "model.pkl").read_bytes() == b"cli weights", r.output

    v2 = Model(ws, "iris", version=2)
    blobs_of_v2 = [v2._row["manifest"], file_hashes(v2)["model.pkl"]]
    assert not set(blobs_of_v2) & {
        Model(ws, "iris", version=1)._row["manifest"],
        sha(b"cli weights"),
    }
    r = invoke("model", "delete", "iris:2")
    assert r.exit_code == 0 and "Deleted model iris:2" in r.output, r.output
    assert [m.id for m in Model.list(ws, name="iris")] == ["iris:1"]
    r = invoke("gc", "--grace", "0")
    assert r.exit_code == 0, r.output
    assert not any(ws.blobs.has(h) for h in blobs_of_v2)
    assert Model(ws, "iris").download(tmp_path / "after-gc").endswith("model.pkl")
    assert fsck(ws).ok


def test_cli_bad_input_is_one_line_and_changes_nothing(ws: Workspace, tmp_path: Path) -> None:
    f = write(tmp_path / "model.pkl", b"w")
    assert invoke("model", "register", "iris", str(f)).exit_code == 0
    run = logged_run(ws, {"outputs/other.txt": b"o"})
    out = tmp_path / "dl"
    assert invoke("model", "download", "iris:1", "-o", str(out)).exit_code == 0
    before = state(ws), sorted(p.name for p in out.iterdir())

    cases = [
        ("model", "show", "nope"),
        ("model", "show", "iris:2"),
        ("model", "show", "iris", "--version", "5"),
        ("model", "download", "nope:1", "-o", str(tmp_path / "x")),
        ("model", "download", "iris:1", "-o", str(out)),
        ("model", "delete", "nope"),
        ("model", "delete", "iris:9"),
        ("model", "register", "bad name", str(f)),
        ("model", "register", "ok", str(tmp_path / "missing.pkl")),
        ("model", "register", "ok", "--run", "no_such_run"),
        ("model", "register", "ok", "--run", run.id),  # no outputs/model.pkl
        ("model", "register", "ok", "outputs/nope", "--run", run.id),
    ]
    for args in cases:
        line = one_error_line(invoke(*args))
        assert len(line) < 400, line
    assert "outputs/other.txt" in one_error_line(invoke(*cases[-1]))
    assert "versions: 1" in one_error_line(invoke("model", "show", "iris:2"))

    # usage errors: exit 2
    r = invoke("model", "show", "iris:1", "--version", "3")
    assert r.exit_code == 2 and "disagree" in r.output, r.output
    r = invoke("model", "delete", "iris:1", "--version", "3")
    assert r.exit_code == 2 and "disagree" in r.output, r.output
    r = invoke("model", "register", "ok")
    assert r.exit_code == 2 and "--run" in r.output, r.output
    r = invoke("model", "register", "ok", str(f), "--tag", "novalue")
    assert r.exit_code == 2 and "key=value" in r.output, r.output

    assert (state(ws), sorted(p.name for p in out.iterdir())) == before
    assert not (tmp_path / "x").exists()
