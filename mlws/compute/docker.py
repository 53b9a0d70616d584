"""Runs that ask for Docker: whether they asked, whether a daemon answers, and the container.

A run asks for Docker with v1's ``env.docker.enabled = True`` or
``DockerConfiguration(use_docker=True)`` (``run_config.docker``,
``ScriptRunConfig(docker_runtime_config=...)``). Submit records what was asked in the run
definition (``definition["docker"]``, :func:`request`); where the run executes, its supervisor
decides (:func:`unreachable`, probed once per process): with a daemon that answers, the script's
command line is wrapped in ``docker run`` (:func:`wrap`); with none, the script runs as any other,
and a note in ``logs/driver.log`` says why (:func:`note`).

The container (``mlws-<run id>``) sees the host's network, runs as the caller's uid:gid, and has
bind-mounted at their own paths: the run's working folder (its working directory), the
workspace folder (a script writes metrics straight into the catalog, as everywhere else), and,
read-only, mlws's package folder and the packages mlws needs at run time that any CPython 3
loads (:func:`dependency_mounts`), which are on its ``PYTHONPATH``. It shares the host's pid
namespace, so a pid the script records (a child run's) is one this machine's mlws can check.
Variables are passed by name (``-e NAME``): their values come from the docker client's own
environment, never its command line. Inside, the script runs on the image's ``python`` (v1's
images: the environment's interpreter), else ``python3``.

The run's secret channel crosses into the container as named FIFOs in a private folder of the
working folder (``keyvault.serve_run_channel_at``). The container is removed by name once the
script has ended, and when a run is canceled, times out or loses its supervisor
(``reaper.remove_container``). A distributed run asking for Docker is refused at submit.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import DockerError
from ..reaper import WORKSPACE_LABEL, container_name

#: The folder of the run's working folder holding its secret channel's FIFOs (mode 0700).
CHANNEL_FOLDER = ".mlws-channel"

#: Seconds ``docker info`` has to answer before the daemon counts as unreachable.
PROBE_TIMEOUT_S = 10.0

# Variables of the submitter's environment that describe this machine, not the run: the
# image's own PATH, HOME and library paths must win inside the container.
_HOST_ONLY = frozenset(
    {
        "PATH",
        "HOME",
        "HOSTNAME",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
    }
)


# Installers are the image's own business (sqlite-utils requires pip).
_NOT_MOUNTED = frozenset({"pip", "setuptools", "wheel"})
# What a distribution installs beside its packages.
_NOT_PACKAGES = (".dist-info", ".egg-info", ".pth", ".data")


def request(run_docker: dict[str, Any] | None, env_docker: dict[str, Any] | None) -> dict | None:
    """What a run asked of Docker, as recorded in its definition: ``{"image", "dockerfile",
    "shmSize", "arguments"}``; None when it did not ask (neither the run configuration's
    ``useDocker`` nor the environment's ``enabled``). The environment says the image; the run
    configuration's shm size wins over the environment's, and its arguments follow them."""
    run_docker, env_docker = run_docker or {}, env_docker or {}
    if not (run_docker.get("useDocker") or env_docker.get("enabled")):
        return None
    from ..v1.cloud import DEFAULT_CPU_IMAGE

    dockerfile = env_docker.get("baseDockerfile")
    return {
        # v1: a Dockerfile instead of an image; neither, its default image
        "image": env_docker.get("baseImage") or (None if dockerfile else DEFAULT_CPU_IMAGE),
        "dockerfile": dockerfile,
        "shmSize": run_docker.get("shmSize") or env_docker.get("shmSize"),
        "arguments": [
            str(a)
            for a in [*(env_docker.get("arguments") or []), *(run_docker.get("arguments") or [])]
        ],
    }


def unreachable() -> str | None:
    """Why no Docker daemon can be used from here (no ``docker`` command, or ``docker info``
    fails), or None when one answers. Asked once per process and daemon address
    (``DOCKER_HOST``, ``DOCKER_CONTEXT``)."""
    return _probe(
        shutil.which("docker"), os.environ.get("DOCKER_HOST"), os.environ.get("DOCKER_CONTEXT")
    )


@functools.lru_cache(maxsize=8)
def _probe(docker: str | None, _host: str | None, _context: str | None) -> str | None:
    if docker is None:
        return "there is no docker command on this machine"
    try:
        r = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"docker info did not answer within {PROBE_TIMEOUT_S:g} s"
    except OSError as e:
        return f"the docker command cannot run ({e.strerror})"
    if r.returncode != 0:
        return "no Docker daemon is reachable (docker info failed)"
    return None


def note(image: str | None, why: str) -> str:
    """The line a run that asked for Docker and ran without it gets in ``logs/driver.log``."""
    shown = f" (image {image})" if image else ""
    return f"Note: Docker was asked for{shown}, but {why}: the script ran without Docker"


def image_for(asked: dict[str, Any], log_file: Path) -> str:
    """The image to run: ``asked["image"]``, or for a ``dockerfile`` the image built from it
    (tagged ``mlws-env:<content hash>``; built once per daemon, its output appended to
    ``log_file``).

    :raises DockerError: the build failed (the reason is docker's last line)."""
    dockerfile = asked.get("dockerfile")
    if not dockerfile:
        return str(asked["image"])
    digest = hashlib.sha256(dockerfile.encode()).hexdigest()[:20]
    tag = f"mlws-env:{digest}"
    docker = shutil.which("docker") or "docker"
    known = subprocess.run(
        [docker, "image", "inspect", tag],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if known.returncode == 0:
        return tag
    built = subprocess.run(
        [docker, "build", "--tag", tag, "-"],
        input=dockerfile.encode(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with open(log_file, "ab") as log:
        log.write(f"mlws: built image {tag} from the environment's base_dockerfile\n".encode())
        log.write(built.stdout)
    if built.returncode != 0:
        lines = [ln for ln in built.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise DockerError(
            "docker build of the environment's base_dockerfile failed"
            + (f": {lines[-1].strip()}" if lines else "")
        )
    return tag


@functools.lru_cache(maxsize=1)
def dependency_mounts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(paths, folders)``: the packages mlws needs at run time (its declared dependencies and
    theirs) that any CPython 3 can load (pure Python, or compiled for the stable ABI), each to be
    mounted read-only at its own path, and the site folders holding them, to put on
    ``PYTHONPATH``. Only those packages are mounted, so nothing else of this machine's
    site-packages hides the image's own."""
    from .shipping import runtime_distributions

    paths: set[str] = set()
    folders: set[str] = set()
    for dist in runtime_distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        files = dist.files or []
        # Code compiled for one Python version may not load in the image's: only packages
        # without it, or whose compiled code is for any CPython 3 (abi3: psutil, cryptography).
        compiled = [f for f in files if str(f).endswith((".so", ".pyd"))]
        if name in _NOT_MOUNTED or any(".abi3." not in f.name for f in compiled):
            continue
        for f in files:
            top = f.parts[0] if f.parts else ""
            if not top or top in ("..", "__pycache__") or top.endswith(_NOT_PACKAGES):
                continue
            full = Path(str(dist.locate_file(top)))
            if full.exists():
                paths.add(str(full))
                folders.add(str(full.parent))
    # mlws's own metadata: its entry points are how MLflow (if the image has it) finds mlws's
    # tracking store for the run's mlws:// URI.
    from importlib import metadata

    try:
        own = metadata.distribution("mlws")
        info = next(
            Path(str(own.locate_file(f.parts[0])))
            for f in own.files or []
            if f.parts[0].endswith(".dist-info")
        )
    except (metadata.PackageNotFoundError, StopIteration):
        info = None
    if info is not None and info.is_dir():
        paths.add(str(info))
        folders.add(str(info.parent))
    return tuple(sorted(paths)), tuple(sorted(folders))


def wrap(
    argv: list[str],
    env: dict[str, str],
    asked: dict[str, Any],
    image: str,
    run_id: str,
    workdir: Path,
    workspace: Path,
    base: dict[str, str],
    read_only: list[str] | None = None,
    interpreter: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``docker run`` command line running ``argv`` (the script's command line, as
    ``compute.script.script_argv`` made it) in ``image``, and the docker client's environment.

    ``env``: the script's environment (``compute.script.script_env``); variables it sets or
    changes over ``base`` (the supervisor's own), and any ``MLWS_*``/``AZUREML_*`` ones, are
    passed by name. ``read_only``: folders of ``workdir`` mounted read-only (mounted inputs).
    ``interpreter``: the host interpreter at the head of ``argv``, replaced by the image's."""
    from ..processes import PACKAGE_PARENT

    mlws_dir = str(Path(PACKAGE_PARENT) / "mlws")
    dep_paths, dep_folders = dependency_mounts()
    uid, gid = os.getuid(), os.getgid()
    cmd = [
        shutil.which("docker") or "docker",
        "run",
        # No --rm: podman's Docker API then answers exit code 0 whatever the script's (4.3);
        # the supervisor removes the container once the script has ended (kill_script).
        # The host's pids: the pid a script records (a child run's) means what it does here,
        # and the script is no PID 1, which ignores a cancel's SIGTERM (the docker client
        # passes it on).
        "--pid",
        "host",
        "--name",
        container_name(run_id),
        "--label",
        f"{WORKSPACE_LABEL}={workspace}",
        "--network",
        "host",
        "--user",
        f"{uid}:{gid}",
        "--workdir",
        str(workdir),
        "--volume",
        f"{workdir}:{workdir}",
        "--volume",
        f"{workspace}:{workspace}",
        "--volume",
        f"{mlws_dir}:{mlws_dir}:ro",
    ]
    for p in dep_paths:
        cmd += ["--volume", f"{p}:{p}:ro"]
    for f in read_only or []:
        cmd += ["--volume", f"{workdir / f}:{workdir / f}:ro"]
    if asked.get("shmSize"):
        cmd += ["--shm-size", str(asked["shmSize"])]
    child = dict(env)
    child["PYTHONPATH"] = os.pathsep.join(
        [p for p in [env.get("PYTHONPATH", ""), *dep_folders] if p]
    )
    names = sorted(
        k
        for k, v in child.items()
        if k not in _HOST_ONLY
        and not k.startswith("DOCKER_")
        and (base.get(k) != v or k.startswith(("MLWS_", "AZUREML_")))
    )
    for k in names:
        cmd += ["--env", k]
    cmd += [*asked.get("arguments", []), image]
    if interpreter and argv and argv[0] == interpreter:
        # v1's images: `python` is the environment's interpreter; a bare image may only have
        # python3. `exec`: the script is the process the docker client signals.
        cmd += [
            "/bin/sh",
            "-c",
            'if command -v python >/dev/null 2>&1; then exec python "$@"; fi; exec python3 "$@"',
            "python",
            *argv[1:],
        ]
    else:
        cmd += argv
    return cmd, child


def failure_line(log_file: Path) -> str | None:
    """Docker's own reason in a run's log when ``docker run`` itself failed (exit code 125:
    a missing image, a bad option): the docker client's last ``docker: ...`` line, else None
    (a script that exited 125 itself)."""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        s = line.strip()
        if s.startswith("docker: "):
            return s
    return None
