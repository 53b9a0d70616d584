"""The execution wing's shape (issue 11): targets found through the registry, a ground floor
for process plumbing, serving apart from run execution, no private names across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mlws.compute import ComputeTarget, executor, register_type
from mlws.errors import ComputeTargetException

PACKAGE = Path(__file__).resolve().parent.parent / "mlws"
WING = [
    *sorted((PACKAGE / "compute").glob("*.py")),
    *sorted((PACKAGE / "serving").glob("*.py")),
    PACKAGE / "lifecycle.py",
    PACKAGE / "processes.py",
    PACKAGE / "runconfig.py",
]


def _imports(path: Path, runtime: bool = False) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` of every mlws import in ``path``; with
    ``runtime``, not those under ``if TYPE_CHECKING:`` (annotations only)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    if runtime:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return [(m, names) for m, names in out if m == "mlws" or m.startswith("mlws.")]


def test_each_target_type_is_executed_through_the_registry() -> None:
    from mlws.compute import dask, local, sshrun

    assert executor("local") is local.execute
    assert executor("ssh") is sshrun.execute
    assert executor("dask") is dask.execute


def test_a_type_without_an_executor_cannot_run_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlws.compute as compute

    class Odd(ComputeTarget):
        _type = "odd-test-type"

    # Registered for this test only: the registry is process-wide.
    monkeypatch.setattr(compute, "_CLASSES", dict(compute._CLASSES))
    register_type("odd-test-type", Odd)
    with pytest.raises(ComputeTargetException, match="'odd-test-type' cannot run scripts"):
        executor("odd-test-type")


def test_the_supervisor_imports_only_its_own_targets_executor(tmp_path: Path) -> None:
    """Executors are imported on first use: a local run's supervisor loads no ssh runner."""
    code = (
        "import sys\nfrom mlws.compute import executor\nexecutor('local')\n"
        "print('sshrun' if 'mlws.compute.sshrun' in sys.modules else 'none')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "none"


def test_processes_is_a_ground_floor() -> None:
    assert _imports(PACKAGE / "processes.py") == []


def test_serving_imports_nothing_of_run_execution() -> None:
    execution = ("mlws.compute", "mlws.runconfig", "mlws.lifecycle", "mlws.runs")
    for path in sorted((PACKAGE / "serving").glob("*.py")):
        for module, _ in _imports(path):
            assert not module.startswith(execution), f"{path.name} imports {module}"


def test_no_module_of_the_wing_imports_a_private_name_of_another() -> None:
    known: set[tuple[str, str]] = set()
    found = []
    for path in WING:
        for module, names in _imports(path):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    if (path.name, name) not in known:
                        found.append(f"{path.name}: from {module} import {name}")
    assert found == []


def test_no_module_of_the_package_is_over_800_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}: {n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 800
    ]
    assert long == []


def test_run_status_and_run_folders_import_nothing_of_the_execution_wing() -> None:
    """Reading a run's status reconciles it (and may abandon it): that must not pull the
    compute package, its targets and their ssh plumbing into every reader's imports."""
    for name in ("lifecycle.py", "runfolder.py", "runs.py", "reaper.py"):
        for module, _ in _imports(PACKAGE / name):
            assert not module.startswith("mlws.compute"), f"{name} imports {module}"


def test_no_module_of_the_package_imports_a_private_name_of_another() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, names in _imports(path):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    found.append(f"{path.relative_to(PACKAGE)}: from {module} import {name}")
    assert found == []


STORAGE = {
    "mlws.catalog",
    "mlws.migrations",
    "mlws.blobs",
    "mlws.gclock",
    "mlws.manifests",
    "mlws.fileops",
    "mlws.filetree",
    "mlws.snapshots",
    "mlws.maintenance",
    "mlws.lease",  # the shared folder's writer lease, taken by the catalog's first write
}
GROUND = {"mlws.errors", "mlws.dirs", "mlws.durable", "mlws.processes", "mlws.machine"}


def test_storage_imports_nothing_above_it() -> None:
    """The catalog, blobs, snapshots and fsck/gc stand on the ground floor only: whatever is
    built on them (runs, execution, serving, the v1 layer) can change without touching them."""
    found = [
        f"{name.rpartition('.')[2]}.py imports {module}"
        for name in sorted(STORAGE)
        for module, _ in _imports(PACKAGE / f"{name.rpartition('.')[2]}.py", runtime=True)
        if module not in STORAGE | GROUND and module != "mlws"
    ]
    assert found == []
