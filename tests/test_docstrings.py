"""Every public name in the mlws package has a docstring (STYLE.md, convention 9; issue 11).

Walks the source with `ast` rather than importing it, so the check sees what a reader sees and
imports nothing heavy. Public means: each module; top-level classes and functions whose names do
not start with `_`; and the methods and properties (not starting with `_`) of public classes.

Exempt, each for a reason stated here:
- `__init__` and other dunders: the class docstring documents construction.
- property setters and deleters (`@x.setter`): the getter's docstring documents the property.
- `typing.overload` stubs: the implementation carries the docstring.
- a method that overrides a method of the same name on a base class defined in mlws, when that
  base method has a docstring: the contract is documented once, on the base (checked below).
- the migrations in `mlws/migrations.py` (functions decorated `@migrations(...)`): a landed
  migration is never edited (migrations.py's rule); each is named for what it adds, and the
  comments in it say why.
Click commands in `mlws/cli/` are not exempt: click takes their `--help` text from the docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mlws

PACKAGE = Path(mlws.__file__).parent


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute):
            # `@x.setter` -> "setter"; `@typing.overload` -> "overload"
            names.add(target.attr)
        elif isinstance(target, ast.Name):
            names.add(target.id)
    return names


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _parse_package() -> tuple[dict[str, ast.Module], dict[str, ast.ClassDef]]:
    """Return every module's tree by path and every top-level class by name."""
    trees: dict[str, ast.Module] = {}
    classes: dict[str, ast.ClassDef] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        trees[rel] = tree
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                # Same-named classes in two modules would shadow each other here and the
                # override check would look at the wrong base, so refuse to guess.
                assert node.name not in classes, (
                    f"two mlws classes named {node.name}; teach test_docstrings which is meant"
                )
                classes[node.name] = node
    return trees, classes


def _documented_in_bases(cls: ast.ClassDef, method: str, classes: dict[str, ast.ClassDef]) -> bool:
    """True if a base class defined in mlws (or its bases) has `method` with a docstring."""
    for base_name in _base_names(cls):
        base = classes.get(base_name)
        if base is None:
            continue
        for node in base.body:
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.name == method
                and ast.get_docstring(node)
            ):
                return True
        if _documented_in_bases(base, method, classes):
            return True
    return False


def _is_migration(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(
        isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name) and dec.func.id == "migrations"
        for dec in node.decorator_list
    )


def missing_docstrings() -> list[str]:
    """List `module:name` for every public name without a docstring, exemptions applied."""
    trees, classes = _parse_package()
    missing: list[str] = []
    for rel, tree in trees.items():
        if not ast.get_docstring(tree):
            missing.append(f"{rel} (module)")
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name.startswith("_") or "overload" in _decorator_names(node):
                    continue
                if rel == "mlws/migrations.py" and _is_migration(node):
                    continue
                if not ast.get_docstring(node):
                    missing.append(f"{rel}:{node.name}")
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    missing.append(f"{rel}:{node.name}")
                for item in node.body:
                    if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        continue
                    if item.name.startswith("_"):
                        continue
                    decorators = _decorator_names(item)
                    if decorators & {"setter", "deleter", "overload"}:
                        continue
                    if ast.get_docstring(item):
                        continue
                    if _documented_in_bases(node, item.name, classes):
                        continue
                    missing.append(f"{rel}:{node.name}.{item.name}")
    return missing


def test_public_names_have_docstrings():
    missing = missing_docstrings()
    assert not missing, f"{len(missing)} public names lack a docstring:\n" + "\n".join(missing)


def test_the_walk_sees_the_package():
    # Guards against a walk that silently finds nothing and so passes.
    trees, classes = _parse_package()
    assert "mlws/workspace.py" in trees and "mlws/cli/runs.py" in trees
    assert "Workspace" in classes and "MlwsError" in classes
