"""Runs consume datasets (mounted, downloaded, direct) and produce output datasets, with lineage
both ways, on the local, ssh and dask targets."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import driver_log as log
from helpers import one_error_line

from mlws import (
    Dataset,
    Experiment,
    OutputFileDatasetConfig,
    ScriptRunConfig,
    UserErrorException,
    readonly,
)
from mlws.cli import cli
from mlws.datastores import Datastore
from mlws.maintenance import fsck, gc
from mlws.rundata import DATA_DIR, prepare

# The script every test submits: argv[1] an input, argv[2] (optional) an output folder. It
# tries to change its input and reports what it saw in outputs/seen.json.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from mlws import Run

    run = Run.get_context()
    inp = sys.argv[1]
    seen = {"arg": inp, "is_file": os.path.isfile(inp),
            "inputs": {k: str(v) for k, v in run.input_datasets.items()},
            "outputs": {k: str(v) for k, v in run.output_datasets.items()}}
    target = inp if os.path.isfile(inp) else os.path.join(inp, sorted(
        os.path.join(d, f)[len(inp) + 1:] for d, _, fs in os.walk(inp) for f in fs)[0])
    try:
        with open(target, "a") as f:
            f.write("changed by the script")
        seen["wrote_input"] = True
    except OSError as e:
        seen["wrote_input"] = False
        seen["write_error"] = e.errno
    try:
        open(os.path.join(os.path.dirname(target), "new.txt"), "w").write("x")
        seen["created_in_input"] = True
    except OSError:
        seen["created_in_input"] = False
    if os.path.isfile(inp):
        seen["content"] = open(inp).read()
    if len(sys.argv) > 2:
        with open(os.path.join(sys.argv[2], "result.txt"), "w") as f:
            f.write("rows=" + str(sum(1 for _ in open(target))))
        os.makedirs(os.path.join(sys.argv[2], "sub"), exist_ok=True)
        open(os.path.join(sys.argv[2], "sub", "more.txt"), "w").write("more")
    os.makedirs("outputs", exist_ok=True)
    json.dump(seen, open("outputs/seen.json", "w"))
    """
)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "use.py").write_text(SCRIPT)
    return d


@pytest.fixture
def store(ws, tmp_path: Path) -> Datastore:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "iris.csv").write_text("a,b\n1,2\n3,4\n")
    (data / "sub" / "more.csv").write_text("a,b\n5,6\n")
    (data / "notes.txt").write_text("not data\n")
    d = ws.get_default_datastore()
    d.upload(str(data), "iris", show_progress=False)
    return d


def submit(ws, src: Path, *args, target: str = "local", wait: bool = True):
    run = Experiment(ws, "data").submit(
        ScriptRunConfig(str(src), "use.py", arguments=list(args), compute_target=target)
    )
    if wait:
        run.wait_for_completion(timeout=120, raise_on_error=False)
    return run


def seen(run) -> dict:
    return json.loads(run._read_file_text("outputs/seen.json"))


def runs_count(ws) -> int:
    return ws.catalog.scalar("SELECT count(*) FROM runs")


# -- mount, download, direct ------------------------------------------------------------------------
def test_mounted_input_is_read_only_and_lineage_goes_both_ways(ws, src, store):
    ds = Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
    out = OutputFileDatasetConfig(name="counted", destination=(store, "out/{run-id}"))
    run = submit(ws, src, ds.as_named_input("iris").as_mount(), out.register_on_complete("counts"))
    assert run.get_status() == "Completed", log(run)
    s = seen(run)
    # The single file of the dataset is the argument; the script cannot change or add to it.
    assert s["is_file"] and s["content"] == "a,b\n1,2\n3,4\n"
    assert s["wrote_input"] is False and s["created_in_input"] is False
    if readonly.available():
        assert s["write_error"] == 30  # EROFS: a read-only mount, whoever the script runs as
    assert s["inputs"] == {"iris": s["arg"]}
    assert s["outputs"]["counted"].endswith(f"{DATA_DIR}/out/counted")
    assert (store.root / "iris" / "iris.csv").read_text() == "a,b\n1,2\n3,4\n"  # data untouched
    # The output went to its destination with the run id filled in, and became a dataset.
    dest = store.root / "out" / run.id
    assert (dest / "result.txt").read_text() == "rows=3"
    assert (dest / "sub" / "more.txt").read_text() == "more"
    counts = Dataset.get_by_name(ws, "counts")
    assert counts.version == 1
    assert counts.to_path() == [f"/out/{run.id}/result.txt", f"/out/{run.id}/sub/more.txt"]
    assert {k: v.id for k, v in run.output_datasets.items()} == {"counted": "counts:1"}
    assert run.input_datasets["iris"].id == "iris:1"  # outside the run: the dataset
    # Lineage from the run...
    details = run.get_details()
    (inp,) = details["inputDatasets"]
    assert inp["dataset"]["id"] == "iris:1" and not inp["dataset"]["changedSinceRegistered"]
    assert inp["consumptionDetails"] == {
        "type": "RunInput",
        "inputName": "iris",
        "mechanism": "Mount",
    }
    assert inp["dataset"]["content"] == ds._fingerprint  # the run got exactly that data
    (outp,) = details["outputDatasets"]
    assert outp["dataset"]["id"] == "counts:1" and outp["outputDetails"] == {
        "outputName": "counted"
    }
    # ...and from the datasets.
    assert ds.runs() == [{"run": run.id, "direction": "input", "as": "iris", "status": "Completed"}]
    assert counts.runs()[0]["direction"] == "output"
    shown = CliRunner().invoke(cli, ["dataset", "show", "iris", "--json"], catch_exceptions=False)
    assert json.loads(shown.output)["runs"][0]["run"] == run.id
    # A second run registers the next version of the output dataset.
    run2 = submit(ws, src, ds.as_named_input("iris").as_mount(), out.register_on_complete("counts"))
    assert run2.get_status() == "Completed", log(run2)
    assert Dataset.get_by_name(ws, "counts").version == 2
    # gc keeps what lineage references, fsck accepts it, the working folders are gone.
    gc(ws, grace_s=0)
    assert fsck(ws).ok
    from mlws.runfolder import run_folder

    assert not run_folder(ws, run.id).exists() and run_folder(ws, run.id).is_relative_to(
        Path(os.environ["HOME"]) / ".cache" / "mlws" / "runs"
    )


def test_mounted_folder_is_the_common_folder_and_hard_links_when_read_only(ws, src, store):
    ds = Dataset.File.from_files((store, "iris/**/*.csv"))  # not registered: still lineage
    run = submit(ws, src, ds.as_named_input("csvs").as_mount())
    assert run.get_status() == "Completed", log(run)
    s = seen(run)
    assert not s["is_file"] and s["arg"].endswith(f"{DATA_DIR}/in/csvs/iris")
    assert s["wrote_input"] is False and s["created_in_input"] is False
    (inp,) = run.get_details()["inputDatasets"]
    assert inp["dataset"]["id"] is None and inp["dataset"]["content"].startswith("sha256:")
    assert (store.root / "iris" / "iris.csv").read_text() == "a,b\n1,2\n3,4\n"


def test_downloaded_input_is_a_private_copy(ws, src, store):
    ds = Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
    run = submit(ws, src, ds.as_named_input("iris").as_download())
    assert run.get_status() == "Completed", log(run)
    s = seen(run)
    assert s["wrote_input"] is True  # its own copy...
    assert (store.root / "iris" / "iris.csv").read_text() == "a,b\n1,2\n3,4\n"  # ...not the data
    assert run.get_details()["inputDatasets"][0]["consumptionDetails"]["mechanism"] == "Download"


def test_direct_input_passes_the_dataset(ws, tmp_path, store):
    ds = Dataset.File.from_files((store, "iris/**/*.csv")).register(ws, "csvs")
    d = tmp_path / "direct"
    d.mkdir()
    (d / "use.py").write_text(
        "import sys, json\nfrom mlws import Run\n"
        "ds = Run.get_context().input_datasets['csvs']\n"
        "json.dump({'arg': sys.argv[1], 'id': ds.id, 'files': ds.to_path()},"
        " open('outputs/seen.json', 'w'))\n"
    )
    run = submit(ws, d, ds.as_named_input("csvs"))
    assert run.get_status() == "Completed", log(run)
    assert seen(run) == {
        "arg": "csvs:1",
        "id": "csvs:1",
        "files": ["/iris/iris.csv", "/iris/sub/more.csv"],
    }


def test_data_reference_and_path_on_compute(ws, src, store):
    run = submit(ws, src, store.path("iris").as_download())
    assert run.get_status() == "Completed", log(run)
    # A datastore folder arrives as that folder (not a parent of it).
    assert seen(run)["arg"].endswith("/iris") and seen(run)["wrote_input"] is True
    ds = Dataset.File.from_files((store, "iris/iris.csv"))
    run = submit(ws, src, ds.as_mount(path_on_compute="data/in"))
    assert run.get_status() == "Completed", log(run)
    assert "/data/in/iris/iris.csv" in seen(run)["arg"]


def test_changed_data_is_noted_in_the_log_and_lineage(ws, src, store):
    ds = Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
    (store.root / "iris" / "iris.csv").write_text("a,b\n9,9\n")
    run = submit(ws, src, ds.as_named_input("iris").as_mount())
    assert run.get_status() == "Completed", log(run)
    assert "changed since it was registered" in log(run)
    (inp,) = run.get_details()["inputDatasets"]
    assert inp["dataset"]["changedSinceRegistered"] is True
    assert seen(run)["content"] == "a,b\n9,9\n"  # the data as it is now


def test_fallback_without_mounts_copies_and_strips_write_bits(ws, tmp_path, store, monkeypatch):
    """Where no read-only mount can be made, a mounted input is a copy the script cannot
    change (for everyone but root): never links, whose mode bits would be the data's."""
    from mlws.compute.script import start_script
    from mlws.runfolder import remove_run_folder

    monkeypatch.setattr(readonly, "_available", False)
    ds = Dataset.File.from_files((store, "iris/**/*.csv"))
    spec = {"name": "csvs", "mode": "mount", "pathOnCompute": None}
    from mlws.rundata import dataset_spec

    definition = {"inputs": [{**spec, "dataset": dataset_spec(ds)}], "outputs": []}
    run = Experiment(ws, "fallback").start_logging()
    workdir = tmp_path / "work"
    (workdir / "logs").mkdir(parents=True)
    prepare(ws, run._refresh()["seq"], definition, workdir, links_ok=readonly.available())
    copy = workdir / DATA_DIR / "in" / "csvs" / "iris" / "iris.csv"
    original = store.root / "iris" / "iris.csv"
    assert copy.read_text() == original.read_text()
    assert os.stat(copy).st_ino != os.stat(original).st_ino  # a copy, not a link
    proc = start_script(["true"], workdir, dict(os.environ), read_only=definition["readOnly"])
    assert proc.wait() == 0
    assert stat.S_IMODE(os.stat(copy).st_mode) & 0o222 == 0
    assert stat.S_IMODE(os.stat(copy.parent).st_mode) & 0o222 == 0
    assert stat.S_IMODE(os.stat(original).st_mode) & 0o200  # the data keeps its mode
    remove_run_folder(workdir)
    assert not workdir.exists()
    run.complete()


def test_dataset_mount_outside_a_run(ws, store, tmp_path):
    ds = Dataset.File.from_files((store, "iris/**/*.csv"))
    with ds.mount() as m:
        root = Path(m.mount_point)
        f = root / "iris" / "iris.csv"
        assert f.read_text() == "a,b\n1,2\n3,4\n"
        assert stat.S_IMODE(f.stat().st_mode) & 0o222 == 0
    assert not root.exists()
    target = tmp_path / "mnt"
    target.mkdir()
    with ds.mount(target):
        assert (target / "iris" / "sub" / "more.csv").exists()
    assert target.exists() and not any(target.iterdir())
    (target / "x").write_text("x")
    with pytest.raises(UserErrorException, match="not empty"):
        ds.mount(target).start()


# -- unhappy paths ----------------------------------------------------------------------------------
def test_bad_inputs_and_outputs_fail_the_submit_and_change_nothing(ws, src, store):
    ds = Dataset.File.from_files((store, "iris/iris.csv"))
    before = runs_count(ws)
    with pytest.raises(UserErrorException, match="invalid input name"):
        ds.as_named_input("9lives")
    with pytest.raises(UserErrorException, match="relative path inside the run's folder"):
        ds.as_mount(path_on_compute="../escape")
    with pytest.raises(UserErrorException, match="destination is"):
        OutputFileDatasetConfig("o", destination=("workspaceblobstore", "x"))
    with pytest.raises(UserErrorException, match="relative"):
        OutputFileDatasetConfig("o", destination=(store, "../{run-id}"))
    other = Dataset.File.from_files((store, "iris/sub/more.csv"))
    with pytest.raises(UserErrorException, match="two different inputs"):
        submit(ws, src, ds.as_named_input("x"), other.as_named_input("x"), wait=False)
    with pytest.raises(UserErrorException, match="names both an input and an output"):
        submit(ws, src, ds.as_named_input("x"), OutputFileDatasetConfig("x"), wait=False)
    gone = Dataset.File.from_files((store, "iris/iris.csv"))
    (store.root / "iris" / "iris.csv").unlink()
    with pytest.raises(UserErrorException, match="matches no file"):
        submit(ws, src, gone.as_named_input("x").as_mount(), wait=False)
    assert runs_count(ws) == before


def test_an_output_that_cannot_be_delivered_fails_the_run(ws, src, store):
    ds = Dataset.File.from_files((store, "iris/iris.csv"))
    out = OutputFileDatasetConfig("o", destination=(store, "fixed")).register_on_complete("o")
    first = submit(ws, src, ds.as_download(), out)
    assert first.get_status() == "Completed", log(first)
    again = submit(ws, src, ds.as_download(), out)  # same destination, no overwrite
    assert again.get_status() == "Failed"
    err = again.get_details()["error"]["error"]
    assert err["code"] == "OutputUploadFailed" and "exists" in err["message"]
    assert Dataset.get_by_name(ws, "o").version == 1  # nothing registered for the failed run
    replaced = submit(ws, src, ds.as_download(), out.as_upload(overwrite=True))
    assert replaced.get_status() == "Completed", log(replaced)
    assert Dataset.get_by_name(ws, "o").version == 2


def test_empty_output_and_failed_script_register_nothing(ws, tmp_path, store):
    d = tmp_path / "quiet"
    d.mkdir()
    (d / "use.py").write_text("import sys\nsys.exit(int(sys.argv[2]))\n")
    out = OutputFileDatasetConfig("o").register_on_complete("never")
    ok = submit(ws, d, out, "0")
    assert ok.get_status() == "Completed"
    assert "output 'o' is empty" in log(ok)
    failed = submit(ws, d, out, "3")
    assert failed.get_status() == "Failed"
    assert not Dataset.get_all(ws).get("never")
    assert not (store.root / "dataset").exists()  # nothing uploaded, for either run


def test_cli_submit_with_inputs_and_outputs(ws, src, store):
    Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
    r = CliRunner().invoke(
        cli,
        [
            "run", "submit", "use.py", "-e", "cli", "--source-directory", str(src), "--wait",
            "--input", "iris=iris:1@mount", "--output", "res=workspaceblobstore:cli/{run-id}",
            "--register-output", "res=cli_results", "--", "{input:iris}", "{output:res}",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert Dataset.get_by_name(ws, "cli_results").version == 1
    bad = CliRunner().invoke(
        cli,
        ["run", "submit", "use.py", "-e", "cli", "--source-directory", str(src),
         "--input", "iris=nosuch", "--", "{input:iris}"],
    )  # fmt: skip
    assert "no dataset 'nosuch'" in one_error_line(bad)
    bad = CliRunner().invoke(
        cli,
        ["run", "submit", "use.py", "-e", "cli", "--source-directory", str(src),
         "--", "{input:iris}"],
    )  # fmt: skip
    assert "no --input named 'iris'" in one_error_line(bad)
    assert runs_count(ws) == 1


# -- other targets ----------------------------------------------------------------------------------
def test_ssh_run_gets_read_only_inputs_and_brings_outputs_home(
    ws, src, store, ssh_server, tmp_path
):
    from sshd import attach_ssh_target

    attach_ssh_target(ws, "lab", [ssh_server], tmp_path)
    ds = Dataset.File.from_files((store, "iris/**/*.csv")).register(ws, "csvs")
    out = OutputFileDatasetConfig("res", destination=(store, "ssh/{run-id}"))
    run = submit(ws, src, ds.as_named_input("csvs").as_mount(), out.register_on_complete("r"),
                 target="lab")  # fmt: skip
    assert run.get_status() == "Completed", log(run)
    s = seen(run)
    assert s["arg"].startswith(str(tmp_path / "remote"))  # a path on the host
    assert s["wrote_input"] is False and s["created_in_input"] is False
    assert (store.root / "ssh" / run.id / "result.txt").read_text() == "rows=3"
    assert Dataset.get_by_name(ws, "r").runs()[0]["run"] == run.id
    assert not (tmp_path / "remote" / "runs" / run.id).exists()  # the host's folder is gone
    # A direct input on a host: the dataset over the copy the host received.
    d = tmp_path / "direct"
    d.mkdir()
    (d / "use.py").write_text(
        "import json\nfrom mlws import Run\n"
        "ds = Run.get_context().input_datasets['csvs']\n"
        "json.dump(sorted(p.rsplit('/', 1)[1] for p in ds.to_path()),"
        " open('outputs/seen.json', 'w'))\n"
    )
    run = submit(ws, d, ds.as_named_input("csvs"), target="lab")
    assert run.get_status() == "Completed", log(run)
    assert seen(run) == ["iris.csv", "more.csv"]


def test_dask_run_consumes_and_produces(ws, src, store):
    pytest.importorskip("distributed")
    from mlws.compute import AmlCompute, ComputeTarget

    target = ComputeTarget.create(
        ws, "cpu", AmlCompute.provisioning_configuration(min_nodes=1, max_nodes=1)
    )
    try:
        ds = Dataset.File.from_files((store, "iris/iris.csv")).register(ws, "iris")
        out = OutputFileDatasetConfig("res", destination=(store, "dask/{run-id}"))
        run = submit(ws, src, ds.as_named_input("iris").as_mount(), out, target="cpu")
        assert run.get_status() == "Completed", log(run)
        assert seen(run)["wrote_input"] is False
        assert (store.root / "dask" / run.id / "result.txt").read_text() == "rows=3"
    finally:
        target.stop()


def test_tabular_dataset_direct_and_mounted(ws, tmp_path, store):
    pytest.importorskip("pyarrow")
    table = Dataset.Tabular.from_delimited_files((store, "iris/**/*.csv")).register(ws, "t")
    d = tmp_path / "tab"
    d.mkdir()
    (d / "use.py").write_text(
        "import json, os, sys\nfrom mlws import Run\n"
        "run = Run.get_context()\n"
        "df = run.input_datasets['t'].to_pandas_dataframe()\n"
        "json.dump({'rows': len(df), 'cols': list(df.columns),"
        " 'mounted': sorted(os.listdir(sys.argv[2]))}, open('outputs/seen.json', 'w'))\n"
    )
    run = submit(ws, d, table.as_named_input("t"), table.as_named_input("m").as_mount())
    assert run.get_status() == "Completed", log(run)
    assert seen(run) == {"rows": 3, "cols": ["a", "b"], "mounted": ["iris.csv", "sub"]}
