"""Finding a pipeline named on the command line: ``FILE.py:OBJ`` or ``MODULE:OBJ``.

``OBJ`` (dotted names allowed) is a ``Pipeline``, or a function that takes the workspace and
returns one (so the file need not open a workspace itself: ``def build(ws): ...``). Loading
runs the file's code, as ``python FILE.py`` would; anything it raises becomes one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MlwsError, UserErrorException

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .graph import Pipeline


def is_reference(text: str) -> bool:
    """True when ``text`` looks like ``FILE.py:OBJ`` or ``MODULE:OBJ`` (not an id)."""
    left, sep, right = text.rpartition(":")
    return bool(sep and left and right)


def load_pipeline(ref: str, workspace: Workspace) -> Pipeline:
    """The pipeline ``ref`` names, built in (or moved to) ``workspace``.

    :raises UserErrorException: ``ref`` is malformed, names nothing, or not a pipeline.
    :raises MlwsError: the file or module raised while loading (one line).
    """
    from .graph import Pipeline

    left, sep, attr = ref.rpartition(":")
    if not (sep and left and attr):
        raise UserErrorException(f"name a pipeline as FILE.py:OBJ or MODULE:OBJ, got {ref[:80]!r}")
    try:
        module = _module(left)
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        if callable(obj) and not isinstance(obj, Pipeline):
            obj = obj(workspace) if inspect.signature(obj).parameters else obj()
    except MlwsError:
        raise
    except AttributeError as e:
        raise UserErrorException(f"{ref[:80]}: {e}") from None
    except (Exception, SystemExit) as e:  # the user's code: any failure is theirs to read
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserErrorException(
            f"could not load {ref[:80]}: {type(e).__name__}: {first}"
        ) from None
    if not isinstance(obj, Pipeline):
        raise UserErrorException(
            f"{ref[:80]} is a {type(obj).__name__}, not a Pipeline (or a function returning one)"
        )
    obj.workspace = workspace
    return obj


def _module(left: str) -> Any:
    path = Path(left)
    if left.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UserErrorException(f"no file {left[:80]!r}")
        name = f"mlws_pipeline_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserErrorException(f"cannot load {left[:80]!r} as Python")
        module = importlib.util.module_from_spec(spec)
        folder = str(path.absolute().parent)
        sys.path.insert(0, folder)  # its sibling modules import as they do under `python FILE`
        try:
            spec.loader.exec_module(module)
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
        return module
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    return importlib.import_module(left)
