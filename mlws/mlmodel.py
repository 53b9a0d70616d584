"""MLflow model folders (an ``MLmodel`` file and its flavours), read without MLflow.

What mlws needs to know about an MLflow-format model before anything loads it: where its
``MLmodel`` is among a registered model's files, which flavours it has (a ``python_function``
one makes it servable without a scoring script, see :mod:`mlws.serving.pyfunc`), which v1
``model_framework`` its flavours mean, and which packages it says it needs (its
``requirements.txt``, else the pip part of its ``conda.yaml``), checked against an interpreter's
installed distributions. PyYAML is imported only when an ``MLmodel`` is actually read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .errors import WebserviceException

#: v1's ``Model.Framework`` names for MLflow flavours, with the flavour field holding the
#: framework's version. Flavours v1 has no name for (xgboost, lightgbm, transformers...) map
#: to nothing: the model's framework stays unset, as v1 would leave it.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "sklearn": ("ScikitLearn", "sklearn_version"),
    "tensorflow": ("TensorFlow", "tf_version"),
    "keras": ("TfKeras", "keras_version"),
    "pytorch": ("PyTorch", "pytorch_version"),
    "onnx": ("Onnx", "onnx_version"),
}

#: Distributions that provide a requirement's import under another name: MLflow writes
#: ``mlflow==X`` into every model's requirements, and ``mlflow-skinny`` serves a pyfunc as well.
PROVIDED_BY = {"mlflow": ("mlflow", "mlflow-skinny")}

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def find(paths: Iterable[str]) -> str | None:
    """The folder (relative, ``""`` for the top) holding the model's ``MLmodel``, among a
    registered model's file paths: the registered folder itself or one of its sub-folders
    (at most two levels down, as a registered folder's files all start with its own name).
    The shallowest wins; None when there is none.

    :raises WebserviceException: two ``MLmodel`` files at the same, shallowest, level.
    """
    found = sorted(
        (p.count("/"), p[: -len("MLmodel")].rstrip("/"))
        for p in paths
        if (p == "MLmodel" or p.endswith("/MLmodel")) and p.count("/") <= 2
    )
    if not found:
        return None
    if len(found) > 1 and found[0][0] == found[1][0]:
        twins = [f"{d}/MLmodel" for n, d in found if n == found[0][0]]
        raise WebserviceException(
            f"the model holds several MLflow models ({', '.join(twins)}); register one of them"
        )
    return found[0][1]


def parse(text: str | bytes, where: str = "MLmodel") -> dict[str, Any]:
    """The ``MLmodel`` document as a dict (``flavors`` always a dict).

    :raises WebserviceException: it is not YAML, or not a mapping.
    """
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WebserviceException(f"{where} is not valid YAML: {first}") from None
    if not isinstance(doc, dict):
        raise WebserviceException(f"{where} is not an MLflow MLmodel document (not a mapping)")
    if not isinstance(doc.get("flavors"), dict):
        doc["flavors"] = {}
    return doc


def framework(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(model_framework, model_framework_version)`` in v1's names for the flavours of an
    ``MLmodel`` document; ``(None, None)`` when v1 has no name for any of them."""
    for flavour, (name, version_field) in FRAMEWORKS.items():
        spec = doc["flavors"].get(flavour)
        if spec is not None:
            version = spec.get(version_field) if isinstance(spec, dict) else None
            return name, None if version is None else str(version)
    return None, None


def requirements(read: Callable[[str], str | None]) -> list[str]:
    """The pip requirements an MLflow model says it needs: its ``requirements.txt``, else the
    pip list of its ``conda.yaml``. ``read(name)`` gives a file of the model folder as text, or
    None when it has no such file. Options (``-r``, ``--index-url``) are left out."""
    text = read("requirements.txt")
    if text is not None:
        lines = text.splitlines()
    else:
        conda = read("conda.yaml")
        if conda is None:
            return []
        import yaml

        try:
            doc = yaml.safe_load(conda) or {}
        except yaml.YAMLError:
            return []
        lines = []
        for dep in doc.get("dependencies") or [] if isinstance(doc, dict) else []:
            if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                lines += [str(x) for x in dep["pip"]]
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def check_installed(reqs: list[str]) -> tuple[list[str], list[str]]:
    """``(missing, mismatched)`` for this interpreter: the requirements with no installed
    distribution (by name, markers honoured), and notes on installed ones whose version is
    outside the requirement's (MLflow only warns about those, and so does mlws). A line that is
    not a plain requirement (a URL, a path to a wheel) is not checked."""
    from importlib import metadata

    missing, mismatched = [], []
    for line in reqs:
        name, spec, applies = _split(line)
        if name is None or not applies:
            continue
        version = None
        for dist in PROVIDED_BY.get(name.lower().replace("_", "-"), (name,)):
            try:
                version = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        if version is None:
            missing.append(name)
        elif spec is not None and not spec.contains(version, prereleases=True):
            mismatched.append(f"{line} (installed: {version})")
    return missing, mismatched


def _split(line: str) -> tuple[str | None, Any, bool]:
    """(name, specifier or None, whether its marker applies here) of a requirement line;
    packaging parses it where installed (pip and MLflow bring it), else its name only."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        m = _NAME.match(line)
        plain = m is not None and not re.match(r"\s*[\w.+-]+://", line)
        return (m.group(1) if plain and m else None), None, True
    try:
        req = Requirement(line)
    except InvalidRequirement:
        return None, None, True
    if req.url:
        return None, None, True
    applies = req.marker is None or req.marker.evaluate()
    return req.name, (req.specifier if str(req.specifier) else None), applies


def framework_of_files(
    files: dict[str, str], read_bytes: Callable[[str], bytes], version: str | None
) -> tuple[str | None, str | None]:
    """An MLflow model's framework in v1's names, from its ``MLmodel`` flavours (e.g. sklearn:
    ``ScikitLearn`` and the scikit-learn version it was saved with), given the model's files
    (``path -> blob hash``) and a reader of blobs; ``(None, version)`` for other models or an
    ``MLmodel`` that cannot be read (registering never fails over it)."""
    from .errors import MlwsError

    try:
        folder = find(files)
        if folder is None:
            return None, version
        found_name, found = framework(
            parse(read_bytes(files[f"{folder}/MLmodel" if folder else "MLmodel"]))
        )
    except (MlwsError, KeyError):
        return None, version
    if found_name is None:
        return None, version
    return found_name, version or found
