"""Environments: which Python a run uses, and which packages it needs.

A *user-managed* environment (the default: fast and offline) uses an existing interpreter as it
is. A *managed* one lists pip packages (directly, from a requirements file, or from a conda
specification, whose conda packages come from PyPI under the same name) and is built once per machine into a virtualenv under
``~/.cache/mlws/envs/<spec hash>`` — with uv when it is installed (given pip's configured
find-links), else ``venv`` + pip — under a file lock, so two runs that need the same new environment build it once. The cache is the local
stand-in for v1's container registry; each build's ``pip freeze`` is recorded in the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .dirs import user_cache_dir, write_atomic
from .errors import (
    EnvironmentBuildCanceled,
    EnvironmentBuildError,
    EnvironmentNotFound,
    UserErrorException,
)

if TYPE_CHECKING:
    from .workspace import Workspace

#: What the mlws API needs inside a run (v1's azureml-defaults): added to every managed
#: environment so Run.get_context(), child runs and run.get_secret() work there.
RUNTIME_PACKAGES = ("psutil", "cryptography")
#: What a scoring service's replica needs on top (uvicorn with its fast loop and parser).
SERVING_PACKAGES = ("uvicorn>=0.30", "uvloop", "httptools")
#: Conda packages that mean "a Python with pip", which every virtualenv has.
IMPLICIT_CONDA = re.compile(r"^(python|pip|setuptools|wheel)([=<>!~ ].*)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def _version_number(version: str | int) -> int:
    """An environment version as given (``3``, ``"3"``): a whole number >= 1, else a clear error
    rather than ``int()``'s ValueError (or a SQLite overflow for a 30-digit one)."""
    text = str(version).strip()
    if isinstance(version, bool) or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise UserErrorException(
            f"an environment version is a whole number such as 1 or 2, got {version!r};"
            " see 'mlws environment list'"
        )
    return int(text)


class CondaDependencies:
    """The package list of a managed environment (v1 name and API)."""

    def __init__(self) -> None:
        self.pip_packages: list[str] = []
        self.conda_packages: list[str] = []
        self.python_version: str | None = None
        self.pip_options: list[str] = []

    @classmethod
    def create(
        cls,
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        python_version: str | None = None,
        pip_indexurl: str | None = None,
        **_azure_kwargs: Any,
    ) -> CondaDependencies:
        """A package list from v1's arguments: pip and conda packages, a Python version, a pip index
        URL (other Azure arguments are ignored).

        :raises UserErrorException: a pip package that is not a requirement (e.g. an option).
        """
        deps = cls()
        for p in pip_packages or []:
            deps.add_pip_package(p)
        for p in conda_packages or []:
            deps.add_conda_package(p)
        deps.python_version = python_version
        if pip_indexurl:
            deps.pip_options.append(f"--index-url={pip_indexurl}")
        return deps

    def add_pip_package(self, package: str) -> None:
        """Add a pip requirement (once).

        :raises UserErrorException: empty, or an option such as ``-e``: options go in
        ``pip_options``.
        """
        if not isinstance(package, str) or not package.strip() or package.strip().startswith("-"):
            raise UserErrorException(f"not a pip requirement: {package!r}")
        if package.strip() not in self.pip_packages:
            self.pip_packages.append(package.strip())

    def add_conda_package(self, package: str) -> None:
        """Add a conda package (once). ``python=3.x`` sets :attr:`python_version` instead of adding
        a package."""
        package = package.strip()
        m = re.match(r"^python\s*=+\s*([0-9.]+)", package)
        if m:
            self.python_version = m.group(1)
            return
        if package and package not in self.conda_packages:
            self.conda_packages.append(package)

    def to_dict(self) -> dict[str, Any]:
        """The form stored in an environment's definition (``pip``, ``conda``, ``python``,
        ``pipOptions``)."""
        return {
            "pip": list(self.pip_packages),
            "conda": list(self.conda_packages),
            "python": self.python_version,
            "pipOptions": list(self.pip_options),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CondaDependencies:
        """The package list stored by :meth:`to_dict`; missing keys are empty."""
        deps = cls()
        deps.pip_packages = list(data.get("pip") or [])
        deps.conda_packages = list(data.get("conda") or [])
        deps.python_version = data.get("python")
        deps.pip_options = list(data.get("pipOptions") or [])
        return deps

    @classmethod
    def _from_conda_yaml(cls, path: str | os.PathLike[str]) -> CondaDependencies:
        import yaml

        try:
            spec = yaml.safe_load(Path(path).read_text())
        except UnicodeDecodeError:
            raise UserErrorException(f"conda specification {path} is not UTF-8 text") from None
        except OSError as e:
            raise UserErrorException(
                f"cannot read conda specification {path}: {e.strerror}"
            ) from None
        except yaml.YAMLError as e:
            raise UserErrorException(f"conda specification {path} is not valid YAML: {e}") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("dependencies", []), list):
            raise UserErrorException(f"conda specification {path} has no 'dependencies' list")
        deps = cls()
        for item in spec.get("dependencies") or []:
            if isinstance(item, dict) and "pip" in item:
                for p in item["pip"] or []:
                    if str(p).startswith("-"):
                        deps.pip_options.append(str(p))
                    else:
                        deps.add_pip_package(str(p))
            elif isinstance(item, str):
                deps.add_conda_package(item)
        return deps

    def serialize_to_string(self) -> str:
        """The list as a conda environment YAML file (v1's ``serialize_to_string``), pip packages
        and options under ``pip``."""
        import yaml

        deps: list[Any] = []
        if self.python_version:
            deps.append(f"python={self.python_version}")
        deps += self.conda_packages + ["pip", {"pip": self.pip_options + self.pip_packages}]
        return yaml.safe_dump(
            {"name": "project_environment", "dependencies": deps}, sort_keys=False
        )


class PythonSection:
    """``env.python``: the interpreter and packages."""

    def __init__(self) -> None:
        #: True: use ``interpreter_path`` (or the current Python) as it is. False: build a
        #: virtualenv with ``conda_dependencies``' pip packages.
        self.user_managed_dependencies = True
        self.interpreter_path: str | None = None
        self.conda_dependencies: CondaDependencies = CondaDependencies()
        #: Managed environments see the base interpreter's packages only when asked.
        self.system_site_packages = False
        #: True: a ``python_version`` this machine has no interpreter for fails the build.
        #: False (v1's environments): it is built with this interpreter, with a note in the
        #: build log, as v1 code pins a Python (``python=3.8``) that conda would have fetched.
        self.exact_python_version = True


class Environment:
    """A named, versioned description of a run's Python (v1 ``Environment``)."""

    def __init__(self, name: str, **_azure_kwargs: Any) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UserErrorException(
                f"invalid environment name {name!r}: use letters, digits, '.', '_' or '-'"
            )
        self.name = name
        self.version: str | None = None
        self.python = PythonSection()
        self.environment_variables: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r}, managed={self.managed})"

    @property
    def managed(self) -> bool:
        """Whether mlws builds this environment (a virtualenv with its packages) rather than using
        an existing Python as it is."""
        return not self.python.user_managed_dependencies

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_pip_requirements(
        cls, name: str, file_path: str | os.PathLike[str], **_: Any
    ) -> Environment:
        """A managed environment with the packages of a requirements file."""
        try:
            lines = Path(file_path).read_text().splitlines()
        except UnicodeDecodeError:
            raise UserErrorException(f"requirements file {file_path} is not UTF-8 text") from None
        except OSError as e:
            raise UserErrorException(
                f"cannot read requirements file {file_path}: {e.strerror}"
            ) from None
        env = cls(name)
        env.python.user_managed_dependencies = False
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("-"):
                env.python.conda_dependencies.pip_options.append(line)
            else:
                env.python.conda_dependencies.add_pip_package(line)
        return env

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str | os.PathLike[str]) -> Environment:
        """A managed environment from a conda ``environment.yml``: its pip part is installed,
        and its conda packages from PyPI under the same name (see :func:`conda_as_pip`)."""
        env = cls(name)
        env.python.user_managed_dependencies = False
        env.python.conda_dependencies = CondaDependencies._from_conda_yaml(file_path)
        return env

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The environment as stored in the catalog and shown by ``mlws environment show --json``
        (v1's field names)."""
        return {
            "name": self.name,
            "version": self.version,
            "python": {
                "userManagedDependencies": self.python.user_managed_dependencies,
                "interpreterPath": self.python.interpreter_path,
                "condaDependencies": self.python.conda_dependencies.to_dict(),
                "systemSitePackages": self.python.system_site_packages,
                "exactPythonVersion": self.python.exact_python_version,
            },
            "environmentVariables": dict(self.environment_variables),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        """The environment stored by :meth:`to_dict`; missing fields take their defaults (a
        user-managed Python, no packages).

        :raises UserErrorException: the stored name is not a valid environment name.
        """
        env = cls(data.get("name") or "unnamed")
        env.version = data.get("version")
        py = data.get("python") or {}
        env.python.user_managed_dependencies = bool(py.get("userManagedDependencies", True))
        env.python.interpreter_path = py.get("interpreterPath")
        env.python.conda_dependencies = CondaDependencies.from_dict(
            py.get("condaDependencies") or {}
        )
        env.python.system_site_packages = bool(py.get("systemSitePackages", False))
        env.python.exact_python_version = bool(py.get("exactPythonVersion", True))
        env.environment_variables = {
            str(k): str(v) for k, v in (data.get("environmentVariables") or {}).items()
        }
        return env

    def spec_hash(self) -> str:
        """Hash of what the built environment contains (not its name or variables)."""
        deps = self.python.conda_dependencies
        spec = {
            "pip": sorted(deps.pip_packages),
            "pipOptions": deps.pip_options,
            "conda": sorted(deps.conda_packages),
            "python": deps.python_version,
            "systemSitePackages": self.python.system_site_packages,
            "runtime": list(RUNTIME_PACKAGES),
        }
        data = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(data).hexdigest()[:32]

    # -- registry -----------------------------------------------------------------------------
    def register(self, workspace: Workspace, created_by: str | None = None) -> Environment:
        """Register in the workspace: a new version when the definition changed, else the
        existing version (as v1). ``created_by``: who, on a served workspace."""
        if workspace.remote is not None:
            from .remote.environments import register

            return register(self, workspace)
        body = self.to_dict()
        body["version"] = None
        text = json.dumps(body, sort_keys=True)
        with workspace.catalog.write() as conn:
            last = conn.execute(
                "SELECT version, spec FROM environments WHERE name = ? ORDER BY version DESC LIMIT 1",
                (self.name,),
            ).fetchone()
            if last is not None and last[1] == text:
                version = last[0]
            else:
                version = (last[0] + 1) if last is not None else 1
                conn.execute(
                    "INSERT INTO environments (name, version, spec, spec_hash, created, created_by)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self.name,
                        version,
                        text,
                        self.spec_hash() if self.managed else None,
                        time.time(),
                        created_by,
                    ),
                )
        self.version = str(version)
        return self

    @classmethod
    def get(
        cls, workspace: Workspace, name: str, version: str | int | None = None, label: Any = None
    ) -> Environment:
        """A registered environment (the latest version when ``version`` is None).

        :raises EnvironmentNotFound:
        :raises UserErrorException: ``version`` is not a whole number.
        """
        if version is not None:
            version = _version_number(version)
        if workspace.remote is not None:
            from .remote.environments import get

            return get(cls, workspace, name, version)
        if version is None:
            row = workspace.catalog.one(
                "SELECT version, spec FROM environments WHERE name = ? ORDER BY version DESC LIMIT 1",
                (name,),
            )
        else:
            row = workspace.catalog.one(
                "SELECT version, spec FROM environments WHERE name = ? AND version = ?",
                (name, version),
            )
        if row is None:
            what = name if version is None else f"{name} version {version}"
            raise EnvironmentNotFound(
                f"no environment {what} in workspace {workspace.name!r}; see 'mlws environment list'"
            )
        env = cls.from_dict(json.loads(row[1]))
        env.version = str(row[0])
        return env

    @staticmethod
    def list(workspace: Workspace) -> dict[str, Environment]:
        """The latest version of every registered environment, by name (v1 returns a dict)."""
        if workspace.remote is not None:
            from .remote.environments import latest

            return latest(workspace)
        rows = workspace.catalog.query(
            "SELECT name, max(version) AS version FROM environments GROUP BY name ORDER BY name"
        )
        return {r[0]: Environment.get(workspace, r[0], r[1]) for r in rows}

    def build(self, workspace: Workspace | None = None, log: IO[str] | None = None) -> str:
        """Build (or reuse) this environment on this machine; returns its interpreter."""
        return resolve(self, workspace=workspace, log=log)


def as_environment(workspace: Workspace, env: Any) -> Environment:
    """What a run configuration may hold as its environment, as an :class:`Environment`:
    None (the current interpreter), a registered name, a dict, an ``Environment``, or an
    object with v1's attributes (``python.user_managed_dependencies``, ...)."""
    if env is None:
        return Environment("default")
    if isinstance(env, Environment):
        return env
    if isinstance(env, str):
        return Environment.get(workspace, env)
    if isinstance(env, dict):
        return Environment.from_dict(env)
    python = getattr(env, "python", None)
    converted = Environment(str(getattr(env, "name", None) or "custom"))
    converted.python.user_managed_dependencies = bool(
        getattr(python, "user_managed_dependencies", True)
    )
    converted.python.interpreter_path = getattr(python, "interpreter_path", None)
    deps = getattr(python, "conda_dependencies", None)
    for p in getattr(deps, "pip_packages", None) or []:
        converted.python.conda_dependencies.add_pip_package(str(p))
    for p in getattr(deps, "conda_packages", None) or []:
        converted.python.conda_dependencies.add_conda_package(str(p))
    converted.environment_variables = dict(getattr(env, "environment_variables", None) or {})
    return converted


# -- building --------------------------------------------------------------------------------------
def envs_dir() -> Path:
    """The per-user folder where managed environments are built, one sub-folder per specification
    hash (a cache: shared by every workspace of the user, safe to delete)."""
    return user_cache_dir() / "envs"


def _base_python(version: str | None, exact: bool = True) -> tuple[str, str | None]:
    """``(interpreter to build with, note for the build log or None)`` for a pinned Python
    version: this interpreter when it matches, else ``python<major.minor>`` from the PATH.

    :raises EnvironmentBuildError: no such Python here and ``exact`` (else this interpreter,
        with a note)."""
    here = sys.version.split()[0]
    if not version or here == version or here.startswith(f"{version}."):
        return sys.executable, None
    major_minor = ".".join(version.split(".")[:2])
    found = shutil.which(f"python{major_minor}")
    # A pyenv shim of a version not installed is on the PATH but only prints an error (v1's
    # train-with-datasets sample pins python=3.6.2: uv failed on /root/.pyenv/shims/python3.6).
    if found is not None and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
        return found, None
    if exact:
        raise EnvironmentBuildError(
            f"python_version={version} asked for, but no python{major_minor} is on this machine's PATH "
            f"(this one is {here}); install it or drop python_version"
        )
    return sys.executable, (
        f"Note: python={version} asked for; no python{major_minor} on this machine (no conda"
        f" to fetch one), so the environment is built with Python {here}"
    )


#: Conda package names whose PyPI name differs (the same software under another name).
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "pytables": "tables",
    "msgpack-python": "msgpack",
    "python-graphviz": "graphviz",
    "matplotlib-base": "matplotlib",
    "py-opencv": "opencv-python",
    "opencv": "opencv-python",
    "tensorflow-mkl": "tensorflow",
}
#: Conda-only GPU runtimes: no PyPI package of that name, and runs here use the CPU.
CONDA_GPU_ONLY = re.compile(r"^(cudatoolkit|cudnn|nccl|cuda(-[a-z-]+)?|magma-cuda\d+)$")
_CONDA_SPEC = re.compile(r"^(?:[\w.-]+::)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


def conda_as_pip(spec: str) -> tuple[str | None, str]:
    """One conda package spec as a pip requirement, and the line saying so for the build log:
    ``numpy=1.26`` (conda: any 1.26.x) is ``numpy==1.26.*``, ``numpy 1.26``, ``numpy==1.26.4``
    and ``numpy>=1.2,<2`` read the same way, a channel (``conda-forge::``) and a build string
    (``=py311_0``) are dropped, a handful of renamed packages take their PyPI name
    (:data:`CONDA_TO_PYPI`). A GPU runtime (:data:`CONDA_GPU_ONLY`) gives ``None``: skipped.

    :raises EnvironmentBuildError: not a conda package spec at all."""
    m = _CONDA_SPEC.match(spec.strip())
    if m is None:
        raise EnvironmentBuildError(f"not a conda package: {spec!r}")
    name, rest = m.group(1), m.group(2).strip()
    if CONDA_GPU_ONLY.match(name.lower()):
        return (
            None,
            f"Note: conda package {spec} skipped: a GPU runtime conda alone has; runs here use the CPU",
        )
    pypi = CONDA_TO_PYPI.get(name.lower(), name)
    if rest and rest[0] not in "=<>!~":
        rest = "=" + rest.replace(" ", "=")  # "numpy 1.26" / "numpy 1.26 py311_0"
    if rest.startswith("="):
        exact = rest.startswith("==")
        version = rest.lstrip("=").split("=")[0]
        if not version:
            requirement = pypi
        elif exact or version.endswith("*"):
            requirement = f"{pypi}=={version}"
        else:  # conda's single '=' matches a prefix: 1.26 is any 1.26.x
            requirement = f"{pypi}=={version}.*"
    else:
        requirement = pypi + rest.replace(" ", "")
    renamed = " (its PyPI name)" if pypi != name else ""
    return requirement, f"Note: conda package {spec} installed from PyPI as {requirement}{renamed}"


def _installer_env() -> dict[str, str]:
    """The environment for pip/uv: without PYTHONPATH (and friends), or packages that the
    calling process sees (a shipped mlws's dependencies on an ssh host, a checkout) would count
    as "already satisfied" and never be installed into the environment."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONNOUSERSITE")
    }


def _pip_find_links() -> list[str]:
    """pip's configured find-links as uv options: uv reads no pip configuration, and a machine's
    local wheels (e.g. torch's CPU build, where the index has the multi-GB CUDA one) lie there."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=30, check=False, env=_installer_env(),
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []  # no pip here: nothing configured to honour
    links = [
        link
        for line in listed.splitlines()
        if line.partition("=")[0].endswith(".find-links")
        for link in line.partition("=")[2].strip().strip("'\"").split()
    ]
    return [f"--find-links={link}" for link in dict.fromkeys(links)]


#: How often a build asks whether its run was canceled (one catalog read).
STOP_POLL_S = 0.1


def _run_logged(
    argv: list[str], log: IO[str] | None, should_stop: Callable[[], bool] | None = None
) -> None:
    """Run one step of a build (uv/pip), its output to ``log``. The step leads its own process
    group, so a cancel (``should_stop()`` turning true) kills it with every process it started
    (pip's build backends, uv's workers) at once instead of waiting for it to end.

    :raises EnvironmentBuildCanceled: ``should_stop()`` turned true.
    :raises EnvironmentBuildError: the step failed."""
    import signal
    import tempfile

    if log is not None:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=_installer_env(),
            start_new_session=True,
        )
        stopped = False
        try:
            while True:
                try:
                    proc.wait(timeout=STOP_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if should_stop is not None and should_stop():
                    stopped = True
                    break
        finally:
            if proc.returncode is None:  # stopped, or this process is being torn down
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if log is not None:
        log.write(stdout + stderr)
        if stopped:
            log.write(f"Canceled: {Path(argv[0]).name} was stopped with its process group\n")
        log.flush()
    if stopped:
        raise EnvironmentBuildCanceled("the environment build was stopped: the run was canceled")
    if proc.returncode != 0:
        raise EnvironmentBuildError(
            f"building the environment failed ({Path(argv[0]).name} exited {proc.returncode}): "
            + _error_summary(stderr or stdout)
        )


def _error_summary(output: str, limit: int = 600) -> str:
    """pip's or uv's error on one line: from the first line that says "error" on, as they
    put the reason (e.g. which requirement cannot be found) just after it."""
    lines = [ln.strip(" ×╰─▶│|") for ln in output.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "error" in ln.lower()), max(0, len(lines) - 3))
    text = " ".join(ln for ln in lines[start : start + 4] if ln)
    return (text[: limit - 3] + "...") if len(text) > limit else (text or "no output")


@contextlib.contextmanager
def _build_lock(target: Path, should_stop: Callable[[], bool] | None) -> Iterator[None]:
    """The lock of one environment's build (held by whoever builds it; the others wait, up to
    an hour). A canceled run stops waiting at once: it asks ``should_stop`` between tries."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(target) + ".lock")
    deadline = time.monotonic() + 3600
    while True:
        try:
            lock.acquire(timeout=STOP_POLL_S if should_stop is not None else 3600)
            break
        except Timeout:
            if should_stop is not None and should_stop():
                raise EnvironmentBuildCanceled(
                    "stopped waiting for the environment build: the run was canceled"
                ) from None
            if time.monotonic() > deadline:
                raise
    try:
        yield
    finally:
        lock.release()


def resolve(
    env: Environment | None,
    workspace: Workspace | None = None,
    log: IO[str] | None = None,
    extra_packages: tuple[str, ...] = (),
    should_stop: Callable[[], bool] | None = None,
) -> str:
    """The interpreter for ``env``: as is when user-managed; built once per machine when managed
    (later calls return at once, without running pip). ``extra_packages`` go into a managed
    build too (a build of its own: e.g. ``SERVING_PACKAGES`` for a service's replicas).

    ``should_stop``: asked while a build runs; once true, the build is killed and removed.

    :raises EnvironmentBuildCanceled: ``should_stop()`` turned true during the build.
    :raises EnvironmentBuildError: the build failed (nothing of it is kept)."""
    if env is None:
        return sys.executable
    if not env.managed:
        path = env.python.interpreter_path
        if path and path != "python":
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise UserErrorException(
                    f"environment {env.name!r}: interpreter {path} is not an executable file"
                )
            return path
        return sys.executable
    deps = env.python.conda_dependencies
    # Conda packages come from PyPI under the same name (mlws never runs conda: one installer,
    # one kind of environment, offline-friendly); only what PyPI lacks fails, named.
    from_conda: dict[str, str] = {}
    notes = []
    for spec in deps.conda_packages:
        if IMPLICIT_CONDA.match(spec):
            continue
        requirement, note = conda_as_pip(spec)
        notes.append(note)
        if requirement is not None:
            from_conda[requirement] = spec
    from .v1 import without_sdk

    pip, sdk = without_sdk(deps.pip_packages)  # mlws's azureml layer stands in for these
    notes += [f"{r}: not installed, mlws's azureml layer stands in for it" for r in sdk]
    base, python_note = _base_python(deps.python_version, env.python.exact_python_version)
    if python_note:
        notes.append(python_note)
    if log is not None and notes:
        log.write("".join(f"{n}\n" for n in notes))
        log.flush()
    build_id = env.spec_hash()
    if sdk:  # built without the SDK: not what an older mlws built (with it) for this spec
        build_id += "-v1-" + hashlib.sha256("\0".join(pip).encode()).hexdigest()[:8]
    if extra_packages:
        build_id += "-" + hashlib.sha256("\0".join(extra_packages).encode()).hexdigest()[:8]
    target = envs_dir() / build_id
    python = target / "bin" / "python"
    done = target / ".mlws-complete"
    if done.exists() and python.exists():
        return str(python)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target, should_stop):
        if done.exists() and python.exists():  # another process built it while we waited
            if log is not None:
                log.write(f"Environment {build_id} was built by another run; reusing it\n")
            return str(python)
        if target.exists():
            shutil.rmtree(target)  # a build that died half-way
        started = time.time()
        packages = [*pip, *from_conda, *RUNTIME_PACKAGES, *extra_packages]
        uv = None if os.environ.get("MLWS_NO_UV") else (shutil.which("uv") or _venv_uv())
        try:
            if uv:
                venv = [uv, "venv", "--quiet", "--python", base, str(target)]
                if env.python.system_site_packages:
                    venv.insert(2, "--system-site-packages")
                _run_logged(venv, log, should_stop)
                install = [uv, "pip", "install", "--python", str(python), *_pip_find_links()]
                _run_logged(
                    [*install, *deps.pip_options, *packages],
                    log,
                    should_stop,
                )
            else:
                venv = [base, "-m", "venv", str(target)]
                if env.python.system_site_packages:
                    venv.insert(3, "--system-site-packages")
                _run_logged(venv, log, should_stop)
                _run_logged(
                    [
                        str(python),
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        *deps.pip_options,
                        *packages,
                    ],
                    log,
                    should_stop,
                )
            freeze = subprocess.run(
                [uv, "pip", "freeze", "--python", str(python)]
                if uv
                else [str(python), "-m", "pip", "freeze"],
                capture_output=True,
                text=True,
                check=False,
                env=_installer_env(),
            ).stdout
        except EnvironmentBuildError as e:
            shutil.rmtree(target, ignore_errors=True)
            missing = _conda_culprits(str(e), from_conda)
            if missing:
                raise EnvironmentBuildError(
                    f"environment {env.name!r}: conda package {', '.join(missing)} could not be"
                    " installed from PyPI under that name, and mlws uses no conda; put its PyPI"
                    f" name in the pip section, or drop it ({e})"
                ) from None
            raise
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (target / "mlws-environment.json").write_text(json.dumps(env.to_dict(), indent=2))
        (target / "requirements.freeze.txt").write_text(freeze)
        write_atomic(done, f"{time.time()}\n")  # the mark last, on disk for sure
        if workspace is not None:
            with workspace.catalog.write() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO environment_builds (spec_hash, host, path, python, tool, freeze, seconds, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        build_id,
                        socket.gethostname(),
                        str(target),
                        str(python),
                        "uv" if uv else "pip",
                        freeze,
                        time.time() - started,
                        time.time(),
                    ),
                )
        if log is not None:
            log.write(
                f"Environment built in {time.time() - started:.1f} s with {'uv' if uv else 'venv + pip'}\n"
            )
        return str(python)


def _conda_culprits(message: str, from_conda: dict[str, str]) -> list[str]:
    """The conda specs whose PyPI name the installer's error names (pip and uv both name a
    requirement they cannot find)."""
    text = message.lower().replace("_", "-")
    out = []
    for requirement, spec in from_conda.items():
        name = re.split(r"[=<>!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            out.append(spec)
    return out


def _venv_uv() -> str | None:
    """uv installed next to this Python (pip install uv), which is not always on PATH."""
    candidate = Path(sys.executable).parent / "uv"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
