"""Issue 11, bench 9b/9c: what cut the ssh and Dask submit latency keeps its guarantees.

- A small working folder travels with the agent's instructions and a small run's outputs and
  logs come home in the agent's session (no rsync either way); what the host sends is still not
  trusted (only files and folders under outputs/, logs/ and the replica's blobs).
- The warm launcher imports the executors (Dask's client) of the workspace's target types.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mlws import Experiment, Workspace
from mlws.compute import AmlCompute, ComputeTarget
from mlws.compute.agent import INLINE_MAX_BYTES, _unpack_snapshot, pack
from mlws.compute.sshrun import unpack_home


def make_tar(members: list[tuple[str, bytes | None, str]]) -> str:
    """base64 of a gzip'd tar: (name, data, kind) with kind file / dir / symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return base64.b64encode(buf.getvalue()).decode()


def test_the_working_folder_round_trips_with_modes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    (src / "outputs").mkdir()
    (src / "pkg").mkdir()
    (src / "train.py").write_text("print(1)\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "pkg" / "m.py").write_text("x = 1\n")
    (src / "logs" / "remote.log").write_text("home only\n")
    packed = pack(src, ("",), skip=("logs/remote.log",))
    assert packed is not None
    dest = tmp_path / "dest"
    dest.mkdir()
    _unpack_snapshot(base64.b64encode(packed).decode(), dest)
    assert (dest / "train.py").read_text() == "print(1)\n"
    assert (dest / "pkg" / "m.py").read_text() == "x = 1\n"
    assert os.stat(dest / "run.sh").st_mode & 0o777 == 0o755
    assert (dest / "outputs").is_dir() and (dest / "logs").is_dir()
    assert not (dest / "logs" / "remote.log").exists()


def test_big_folders_and_links_go_by_rsync(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "big.bin").write_bytes(b"\0" * (INLINE_MAX_BYTES + 1))
    assert pack(tmp_path) is None
    (tmp_path / "outputs" / "big.bin").unlink()
    (tmp_path / "outputs" / "link").symlink_to("/etc/passwd")
    assert pack(tmp_path) is None
    (tmp_path / "outputs" / "link").unlink()
    assert pack(tmp_path) is not None


def test_outputs_logs_and_blobs_come_home(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    (workdir / "logs").mkdir(parents=True)
    (workdir / "logs" / "remote.log").write_text("written here\n")
    data = make_tar(
        [
            ("outputs", None, "dir"),
            ("outputs/model.pkl", b"model", "file"),
            ("logs/driver.log", b"hello\n", "file"),
            ("logs/remote.log", b"from the host\n", "file"),
            (".mlws-replica/blobs/ab/abcd", b"blob", "file"),
        ]
    )
    assert unpack_home(data, workdir) is True
    assert (workdir / "outputs" / "model.pkl").read_bytes() == b"model"
    assert (workdir / "logs" / "driver.log").read_text() == "hello\n"
    assert (workdir / "blobs" / "ab" / "abcd").read_bytes() == b"blob"
    assert (workdir / "logs" / "remote.log").read_text() == "written here\n"


@pytest.mark.parametrize(
    "member",
    [
        ("outputs/../../escape", b"x", "file"),
        ("/etc/evil", b"x", "file"),
        ("outputs/link", None, "symlink"),
        ("snapshot.py", b"x", "file"),
        (".mlws-replica/mlws.db", b"x", "file"),
    ],
)
def test_what_the_host_sends_is_not_trusted(
    tmp_path: Path, member: tuple[str, bytes | None, str]
) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    with pytest.raises(ValueError):
        unpack_home(make_tar([member]), workdir)
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in workdir.rglob("*")) == []


def test_a_file_is_never_written_through_a_link_here(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    (workdir / "outputs").mkdir(parents=True)
    target = tmp_path / "precious"
    target.write_text("keep\n")
    (workdir / "outputs" / "f").symlink_to(target)
    (workdir / "logs").symlink_to(tmp_path)
    assert unpack_home(make_tar([("outputs/f", b"new", "file")]), workdir)
    assert target.read_text() == "keep\n"
    assert (workdir / "outputs" / "f").read_bytes() == b"new"
    assert not (workdir / "outputs" / "f").is_symlink()
    with pytest.raises(ValueError):
        unpack_home(make_tar([("logs/driver.log", b"x", "file")]), workdir)
    assert not (tmp_path / "driver.log").exists()


def test_the_launcher_warms_the_executors_of_the_target_types_in_use(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from mlws.lifecycle import insert_run

    ws = Workspace.create(tmp_path / "ws")
    code = (
        "import sys; from mlws.compute import warm_executors;"
        " print(warm_executors(sys.argv[1]), 'distributed' in sys.modules)"
    )

    def warmed() -> str:
        r = subprocess.run(
            [sys.executable, "-c", code, str(ws.path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return r.stdout.strip()

    try:
        ComputeTarget.create(
            ws, "cpu", AmlCompute.provisioning_configuration(min_nodes=0, max_nodes=1)
        )
        Experiment(ws, "e")
        # A dask target no run uses, and a local run: nothing heavy.
        insert_run(
            ws, "e", run_type="azureml.scriptrun", status="Completed", fields={"target": "local"}
        )
        assert warmed() == "['mlws.compute.local'] False"
        insert_run(ws, "e", run_type="azureml.scriptrun", status="Queued", fields={"target": "cpu"})
        assert warmed() == "['mlws.compute.dask', 'distributed', 'mlws.compute.local'] True"
    finally:
        ws.close()


def test_damaged_inline_files_fall_back_to_rsync(tmp_path: Path) -> None:
    import time
    from types import SimpleNamespace

    from mlws.compute import sshrun

    class Conn:
        copied: list[tuple[str, ...]] = []

        def rsync(self, *paths: str, options: tuple[str, ...] = ()) -> None:
            self.copied.append(paths)

    workdir = tmp_path / "run"
    (workdir / "logs").mkdir(parents=True)
    for damaged in ("!!!", base64.b64encode(b"\x1f\x8b not gzip").decode()):
        run = sshrun.SshRun.__new__(sshrun.SshRun)
        run._inline, run.conn, run._t0 = damaged, Conn(), time.monotonic()
        run.sup = SimpleNamespace(definition={})
        run._copy_home([":/host/outputs", ":/host/logs"], workdir)
        assert run.conn.copied[-1] == (":/host/outputs", ":/host/logs", f"{workdir}/")
        assert run._inline is None  # a retry goes by rsync too
    assert "unusable" in (workdir / "logs" / "remote.log").read_text()
