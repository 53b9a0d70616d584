"""Runs asking for Docker run in a container when a daemon answers (mlws/compute/docker.py).

The daemon is podman's Docker-compatible service, started here on a socket of its own with its
own storage under a temp folder; the image is made locally (no registry is reachable): busybox
for /bin/sh and this machine's Python interpreter, imported as ``mlws-test-py:1``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from helpers import V1_TRAIN, driver_log, make_source, wait_status, wait_until

IMAGE = "mlws-test-py:1"


@pytest.fixture(autouse=True)
def azureml_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``azureml`` layer on this process's path, as ``mlws v1 enable`` puts it."""
    from mlws.v1 import add_to_sys_path

    add_to_sys_path()
    monkeypatch.setattr("mlws.v1.names._noted", set())


needs_podman = pytest.mark.skipif(
    not (shutil.which("podman") and shutil.which("docker") and shutil.which("busybox")),
    reason="needs podman, the docker client and busybox (make install puts them in)",
)

# v1's training script, plus where it ran and a secret read through the run's channel.
V1_SCRIPT = (
    V1_TRAIN
    + 'print("in container:", os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv"))\n'
    + 'print("secret:", run.get_secret("greeting"))\n'
    # reads (reconciles) its own run: its supervisor, a host process, must count as alive
    + 'print("status:", run.get_status())\n'
    + 'child = run.child_run("child")\n'  # records its pid: the host's, checked here
    + 'child.log("y", 2)\n'
    + "child.complete()\n"
    + 'print("built by:", os.environ.get("BUILT_BY"))\n'
    # how MLflow, where the image has it, finds mlws's store for the run's mlws:// URI
    + "from importlib.metadata import entry_points\n"
    + 'print("stores:", [e.name for e in entry_points(group="mlflow.tracking_store")])\n'
)


def _image_tar(path: Path) -> None:
    """A minimal root filesystem: busybox as /bin/sh, this interpreter (its standard library
    without tests, GUI and packaging modules, compiled code stripped) and the shared libraries
    they load. Small, because the daemon copies it for every container (vfs storage)."""
    stdlib = Path(sysconfig.get_path("stdlib"))
    skip = {
        *("site-packages", "test", "tests", "idlelib", "tkinter", "ensurepip", "turtledemo"),
        *("lib2to3", "distutils", "unittest", "pydoc_data", "__phello__"),
    }
    exe = Path(os.path.realpath(sys.executable))
    libpython = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def inside(p: Path | str) -> Path:
            return root / str(p).lstrip("/")

        def unused(folder: str, names: list[str]) -> set[str]:
            return {
                n
                for n in names
                if n in skip or n.startswith("config-") or ".opt-" in n or "_tkinter" in n
            }

        shutil.copytree(stdlib, inside(stdlib), ignore=unused, symlinks=True)
        for f in (exe, libpython):
            inside(f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, inside(f))
        compiled = [inside(libpython), *inside(stdlib).glob("lib-dynload/*.so")]
        # the libraries they load, as ldd finds them here; and those of the compiled packages
        # mlws mounts (psutil's), as any real image has them
        from mlws.compute.docker import dependency_mounts

        mounted = [so for p in dependency_mounts()[0] for so in Path(p).rglob("*.abi3.so")]
        out = subprocess.run(
            ["ldd", str(exe), *map(str, compiled), *map(str, mounted)],
            capture_output=True,
            text=True,
        )
        for line in out.stdout.splitlines():
            if not line.startswith("\t"):
                continue  # a file's name, ahead of what it loads
            lib = line.split("=>")[-1].split("(")[0].strip()
            if lib.startswith("/") and not inside(lib).exists():
                inside(lib).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(os.path.realpath(lib), inside(lib))
        if shutil.which("strip"):  # binutils: without it the image is only larger
            subprocess.run(["strip", "--strip-unneeded", *map(str, compiled)], check=False)
        (root / "bin").mkdir()
        (root / "tmp").mkdir(mode=0o1777)
        shutil.copy(os.path.realpath(shutil.which("busybox") or ""), root / "bin" / "busybox")
        for tool in ("sh", "sleep", "cat"):
            (root / "bin" / tool).symlink_to("busybox")
        (root / "bin" / "python3").symlink_to(exe)  # no `python`: the fallback is taken
        subprocess.run(["tar", "-C", str(root), "-cf", str(path), "."], check=True)


@pytest.fixture(scope="module")
def daemon():  # noqa: ANN201 - a generator fixture
    """podman's Docker API on a socket of its own (storage, runtime state under a temp folder),
    the test image imported; yields the ``DOCKER_HOST`` value. Stopped by its pid."""
    # A short folder: under pytest's deeper ones (an xdist worker's) conmon's paths grew too
    # long, and podman never saw a container exit (docker run hung).
    base = Path(tempfile.mkdtemp(prefix="mlws-pm-", dir="/tmp"))
    (base / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
        'netns = "host"\n'
        f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\ntmp_dir = "{base}/libpod"\n'
        f'events_logger = "file"\nevents_logfile_path = "{base}/events.log"\n'
        # file locks live in tmp_dir: shm ones (/dev/shm/libpod_lock) are shared with every
        # other podman on the machine, whose containers then take the same lock numbers
        'lock_type = "file"\n'
    )
    (base / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{base}/run"\ngraphroot = "{base}/graph"\n'
    )
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(base / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
    }
    _image_tar(base / "rootfs.tar")
    subprocess.run(
        ["podman", "import", str(base / "rootfs.tar"), IMAGE],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (base / "rootfs.tar").unlink()
    sock = base / "podman.sock"
    host = f"unix://{sock}"
    with open(base / "service.log", "wb") as log:
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", host],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def answers() -> bool:
            assert service.poll() is None, (base / "service.log").read_text()
            r = subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                env={**env, "DOCKER_HOST": host},
                capture_output=True,
            )
            return r.returncode == 0

        wait_until(answers, timeout=30, what="podman's service to answer")
        yield host
    finally:
        # Whatever a failed test left running goes first: its mounts live under `base`.
        subprocess.run(
            ["podman", "rm", "--all", "--force", "--time", "0"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        _end_leftovers(base)
        shutil.rmtree(base, ignore_errors=True)


def _end_leftovers(base: Path) -> None:
    """What podman itself left of this service's containers (a conmon, its runtime child, a
    container's /dev/shm mount under ``base``): nothing of a test outlives it."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        if str(base) in " ".join(p.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                for child in p.children(recursive=True):
                    child.kill()
                p.kill()
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if str(base) in line]
    for m in sorted(mounts, reverse=True):
        subprocess.run(["umount", m], capture_output=True)


@pytest.fixture
def docker_host(daemon: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCKER_HOST", daemon)
    return daemon


def _v1_env(  # noqa: ANN202 - a v1 Environment
    enabled: bool, image: str | None = IMAGE, dockerfile: str | None = None
):
    from azureml.core import Environment

    env = Environment("dockered")
    env.docker.enabled = enabled
    env.docker.base_image = image
    env.docker.base_dockerfile = dockerfile
    return env


def _containers(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "--all", "--filter", f"name={name}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [n for n in out.split() if n == name]


@needs_podman
def test_v1_runs_asking_for_docker_run_in_a_container(ws, tmp_path, docker_host):
    from azureml.core import Experiment, ScriptRunConfig
    from azureml.core.runconfig import DockerConfiguration

    ws.get_default_keyvault().set_secret("greeting", "hello")
    src = make_source(tmp_path, V1_SCRIPT, prelude="")
    exp = Experiment(ws, "docker")
    by_env = exp.submit(ScriptRunConfig(str(src), "train.py", environment=_v1_env(True)))
    by_config = exp.submit(
        ScriptRunConfig(
            str(src),
            "train.py",
            # the image is built from a Dockerfile on the test image
            environment=_v1_env(False, None, f"FROM {IMAGE}\nENV BUILT_BY=dockerfile\n"),
            docker_runtime_config=DockerConfiguration(use_docker=True, shm_size="64m"),
        )
    )
    for run, image in ((by_env, IMAGE), (by_config, "the image built from base_dockerfile")):
        details = run.wait_for_completion(raise_on_error=False, timeout=90)
        log = driver_log(run)
        assert details["status"] == "Completed", log
        assert log.splitlines()[0] == (
            f"Note: the script runs in Docker, in container mlws-{run.id} of {image}"
        )
        assert "in container: True" in log and "secret: hello" in log
        assert "status: Running" in log and "stores: ['mlws'," in log
        assert ("built by: dockerfile" in log) == (run is by_config)
        assert run.get_metrics() == {"accuracy": 0.91}
        (child,) = run.get_children()
        assert child.get_status() == "Completed" and child.get_metrics() == {"y": 2}
        assert run._read_file_text("outputs/model.txt") == "weights"
        assert _containers(f"mlws-{run.id}") == []  # --rm
    # what the script wrote into the workspace (the catalog, its journal) is the caller's
    owners = {p.stat().st_uid for p in ws.path.rglob("*")}
    assert owners == {os.getuid()}


@needs_podman
def test_a_missing_image_fails_the_run_with_dockers_reason(ws, tmp_path, docker_host):
    from azureml.core import Experiment, ScriptRunConfig

    src = make_source(tmp_path, V1_SCRIPT, prelude="")
    exp = Experiment(ws, "docker")
    missing = exp.submit(
        ScriptRunConfig(str(src), "train.py", environment=_v1_env(True, "mlws-no-such-image:0"))
    )
    unbuilt = exp.submit(
        ScriptRunConfig(
            str(src), "train.py", environment=_v1_env(True, None, "FROM mlws-no-such-base:0\n")
        )
    )
    failing = exp.submit(
        ScriptRunConfig(
            str(make_source(tmp_path, "raise ValueError('boom')\n", "bad", prelude="")),
            "train.py",
            environment=_v1_env(True),
        )
    )
    for run, start, name in (
        (failing, "the script exited with code 1: ", "ValueError: boom"),
        (missing, "docker could not run the script: ", "mlws-no-such-image"),
        (
            unbuilt,
            "mlws could not run the script: docker build of the environment's",
            "mlws-no-such-base",
        ),
    ):
        details = run.wait_for_completion(raise_on_error=False, timeout=90)
        assert details["status"] == "Failed"
        message = details["error"]["error"]["message"]
        assert message.startswith(start) and "\n" not in message and name in message, message
        assert run.get_metrics() == {} and "outputs/model.txt" not in run.get_file_names()


@needs_podman
def test_a_canceled_docker_run_and_one_whose_supervisor_died_leave_no_container(
    ws, tmp_path, docker_host, monkeypatch
):
    from azureml.core import Experiment, ScriptRunConfig

    from mlws.processes import process_alive
    from mlws.runfolder import run_folder

    monkeypatch.setenv("MLWS_CANCEL_GRACE_S", "0.5")

    # The script ignores SIGTERM: the grace's SIGKILL reaches only the docker client, and the
    # container, which outlives it, must go by name.
    src = make_source(
        tmp_path,
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('started', flush=True)\ntime.sleep(300)\n",
        prelude="",
    )
    exp = Experiment(ws, "docker")
    config = ScriptRunConfig(str(src), "train.py", environment=_v1_env(True))
    canceled, orphaned = exp.submit(config), exp.submit(config)
    for run in (canceled, orphaned):
        log = run_folder(ws, run.id) / "logs" / "driver.log"
        wait_until(
            lambda log=log: log.is_file() and "started" in log.read_text(),
            timeout=60,
            what="the script to start in its container",
        )
        assert _containers(f"mlws-{run.id}")
    canceled.cancel()
    supervisor, start = ws.catalog.one(
        "SELECT supervisor_pid, supervisor_start FROM runs WHERE id = ?", (orphaned.id,)
    )
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not process_alive(supervisor, start), 10, "the supervisor to die")
    # The next read reconciles the run: its container goes with it.
    assert orphaned.get_status() == "Failed"
    assert _containers(f"mlws-{orphaned.id}") == []
    assert wait_status(canceled, ("Canceled", "Failed", "Completed"), timeout=60) == "Canceled"
    assert _containers(f"mlws-{canceled.id}") == []


def test_a_distributed_run_asking_for_docker_is_refused_at_submit(ws, tmp_path):
    from azureml.core import Experiment, ScriptRunConfig
    from azureml.core.runconfig import DockerConfiguration, PyTorchConfiguration

    from mlws.errors import RunConfigError

    src = make_source(tmp_path, "print('x')\n", prelude="")
    before = ws.catalog.scalar("SELECT COUNT(*) FROM runs")
    with pytest.raises(RunConfigError, match="no distributed run in Docker"):
        Experiment(ws, "docker").submit(
            ScriptRunConfig(
                str(src),
                "train.py",
                distributed_job_config=PyTorchConfiguration(process_count=2),
                docker_runtime_config=DockerConfiguration(use_docker=True),
            )
        )
    assert ws.catalog.scalar("SELECT COUNT(*) FROM runs") == before


def test_a_v1_environment_stored_as_a_dict_keeps_asking_for_docker(ws):
    """A sweep's trials and a saved run configuration hold the environment as a dict."""
    from azureml.core import RunConfiguration

    from mlws.compute.docker import request
    from mlws.runconfig import environment_definition

    rc = RunConfiguration()
    rc.environment = _v1_env(True)
    again = RunConfiguration.from_dict(rc.to_dict())
    env = environment_definition(ws, again.environment)
    assert request(again.docker.to_dict(), env.get("docker")) == {
        "image": IMAGE,
        "dockerfile": None,
        "shmSize": None,
        "arguments": [],
    }
    assert request(again.docker.to_dict(), environment_definition(ws, None).get("docker")) is None
    # registered, and named by the run configuration
    _v1_env(True).register(ws)
    named = environment_definition(ws, "dockered")
    assert request(None, named.get("docker"))["image"] == IMAGE


@needs_podman
def test_a_run_on_a_dask_target_asking_for_docker_runs_in_a_container(ws, tmp_path, docker_host):
    """Where the run executes decides: a Dask worker (of this machine) finds the daemon too."""
    pytest.importorskip("distributed")
    from azureml.core import Experiment, ScriptRunConfig

    from mlws.compute import ComputeTarget
    from mlws.compute.dask import AmlCompute

    target = ComputeTarget.create(
        ws, "cpu", AmlCompute.provisioning_configuration(min_nodes=1, max_nodes=1)
    )
    try:
        src = make_source(
            tmp_path,
            V1_TRAIN + 'print("in container:", os.path.exists("/run/.containerenv"))\n',
            prelude="",
        )
        run = Experiment(ws, "docker").submit(
            ScriptRunConfig(str(src), "train.py", compute_target="cpu", environment=_v1_env(True))
        )
        details = run.wait_for_completion(raise_on_error=False, timeout=120)
        log = driver_log(run)
        assert details["status"] == "Completed", log
        assert f"Note: the script runs in Docker, in container mlws-{run.id} of {IMAGE}" in log
        assert "in container: True" in log
        assert run.get_metrics() == {"accuracy": 0.91}
        assert _containers(f"mlws-{run.id}") == []
    finally:
        target.stop()
