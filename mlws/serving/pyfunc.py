"""MLflow models served without a scoring script: ``Model.deploy(ws, name, [model])``.

A registered model whose files are an MLflow model folder (an ``MLmodel`` with a
``python_function`` flavour, at the top or one sub-folder down) deploys with no
``InferenceConfig`` (or one whose ``entry_script`` is None). :func:`plan` checks it at deploy
time, without importing MLflow; each replica then loads the model once with
``mlflow.pyfunc.load_model`` (:func:`load_scorer`) and :class:`PyfuncScorer` answers both
payload styles on ``POST /score``:

- Azure ML's ``{"data": [[...], ...]}`` (rows; named after the model's signature when it has
  column names), ``{"data": [{...}, ...]}`` (records) or ``{"data": {column: [...]}}``, answered
  with v1's plain JSON list;
- MLflow's scoring-server payloads, ``{"dataframe_split": {"columns", "data"}}``,
  ``{"dataframe_records": [...]}``, ``{"inputs": ...}`` or ``{"instances": ...}`` (with optional
  ``"params"``), parsed by MLflow's own parser against the signature and answered as MLflow's
  server does, ``{"predictions": [...]}``.

A payload that cannot be scored (a wrong shape, a column missing or of the wrong type for the
signature) is a 400 with one line; the replica goes on serving. MLflow is imported only here and
only in a replica (``pip install 'mlws[mlflow]'``): ``import mlws`` never needs it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import mlmodel
from ..errors import ExtraNotInstalled, ScoringInputError, WebserviceException

if TYPE_CHECKING:
    from ..models import Model

#: MLflow's payload keys (its scoring server accepts exactly one of them per request).
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_LONGEST_MESSAGE = 400


def plan(models: list[Model], environment: Any) -> dict[str, str]:
    """What a service of an MLflow model stores to serve it: ``{"model": id, "path": the MLflow
    model's folder inside the model}``. With no ``environment`` the replicas run this very
    interpreter, so the packages the model needs are checked here, before anything is stored.

    :raises WebserviceException: not exactly one model, not an MLflow model, no
        ``python_function`` flavour, or (no environment) packages it needs are missing.
    :raises ExtraNotInstalled: (no environment) MLflow is not installed here.
    """
    if len(models) != 1:
        raise WebserviceException(
            f"without an entry script, deploy exactly one MLflow model (got {len(models)});"
            " for several models give InferenceConfig(entry_script='score.py', ...)"
        )
    model = models[0]
    folder = mlmodel.find(model.get_file_names())
    if folder is None:
        raise WebserviceException(
            f"model {model.id} is not an MLflow model (no MLmodel file in {model.path!r} or one"
            " of its sub-folders) and no entry script was given: deploy it with"
            " InferenceConfig(entry_script='score.py', source_directory=...)"
        )
    prefix = f"{folder}/" if folder else ""
    doc = mlmodel.parse(model.read_file(f"{prefix}MLmodel"), f"model {model.id}: {prefix}MLmodel")
    if "python_function" not in doc["flavors"]:
        raise WebserviceException(
            f"model {model.id}: {prefix}MLmodel has no python_function flavour (it has"
            f" {', '.join(sorted(doc['flavors'])) or 'none'}), so MLflow cannot serve it as is;"
            " deploy it with InferenceConfig(entry_script='score.py', ...)"
        )
    if environment is None:
        names = set(model.get_file_names())

        def read(name: str) -> str | None:
            path = f"{prefix}{name}"
            return model.read_file(path).decode("utf-8", "replace") if path in names else None

        check_packages(f"model {model.id}", mlmodel.requirements(read))
    return {"model": model.id, "path": folder}


def check_packages(what: str, requirements: list[str]) -> None:
    """Fail, in one line, when this interpreter lacks MLflow or a package the model needs;
    print a warning for each one installed at another version than the model was saved with
    (MLflow's own loader only warns about those, too).

    :raises ExtraNotInstalled: MLflow itself is missing.
    :raises WebserviceException: other packages are missing (named).
    """
    missing, mismatched = mlmodel.check_installed(requirements)
    for note in mismatched:
        print(f"Warning: {what} was saved with {note}", file=sys.stderr, flush=True)
    if importlib.util.find_spec("mlflow") is None or "mlflow" in missing:
        others = [m for m in missing if m != "mlflow"]
        also = f" (it also needs {', '.join(others)})" if others else ""
        raise ExtraNotInstalled(
            f"{what} is an MLflow model and {sys.executable} has no MLflow to serve it:"
            f" install mlws[mlflow] (pip install 'mlws[mlflow]'){also}"
        )
    if missing:
        raise WebserviceException(
            f"{what} needs packages that {sys.executable} lacks: {', '.join(missing)}; install"
            f" them (pip install {' '.join(missing)}) or deploy with an environment that has"
            " them (InferenceConfig(environment=...))"
        )


def load_scorer(spec: dict[str, str]) -> PyfuncScorer:
    """In a replica: check the model's packages in this interpreter, then load the MLflow model
    of ``spec`` (from :func:`plan`) under ``AZUREML_MODEL_DIR`` once.

    :raises ExtraNotInstalled: no MLflow here. :raises WebserviceException: missing packages,
        or the model does not load (the reason in one line).
    """
    folder = Path(os.environ["AZUREML_MODEL_DIR"]) / spec["path"]
    what = f"model {spec['model']}"

    def read(name: str) -> str | None:
        try:
            return (folder / name).read_text(errors="replace")
        except OSError:
            return None

    check_packages(what, mlmodel.requirements(read))
    try:
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(str(folder))
    except Exception as e:  # noqa: BLE001 - the deployment fails with the loader's reason
        raise WebserviceException(
            f"loading MLflow {what} failed: {type(e).__name__}: {one_line(e)}"
        ) from None
    return PyfuncScorer(model)


class PyfuncScorer:
    """Scores decoded JSON payloads with a loaded ``PyFuncModel`` (see the module docstring):
    returns the JSON-ready answer, raises :class:`ScoringInputError` for a payload it cannot
    score. Errors inside the model's ``predict`` other than MLflow's input errors propagate (the
    replica answers 500)."""

    def __init__(self, model: Any) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import infer_and_parse_data

        self.model = model
        self._parse = infer_and_parse_data
        self._mlflow_error = MlflowException
        self.schema = model.metadata.get_input_schema()
        schema = self.schema
        named = schema is not None and not schema.is_tensor_spec() and schema.has_input_names()
        #: The signature's column names: an Azure payload's rows (lists) are named by them.
        self.columns: list[str] | None = list(schema.input_names()) if named else None
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    def describe(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The service's swagger document ``doc`` with what this model takes: the payloads, and
        its MLflow signature (``x-mlflow-signature``, MLflow's own JSON form) when it has one."""
        post = doc["paths"]["/score"]["post"]
        post["description"] = (
            "the MLflow model's predictions: Azure ML's {\"data\": ...} answered with a list, or"
            f' MLflow\'s {", ".join(MLFLOW_KEYS)} answered with {{"predictions": [...]}}'
        )
        signature = self.model.metadata.signature
        if signature is not None:
            post["x-mlflow-signature"] = signature.to_dict()
        return doc

    def __call__(self, payload: Any) -> Any:
        """Score one decoded request body.

        :raises ScoringInputError: the payload has no shape mlws knows, or does not fit the
            model's signature.
        """
        if not isinstance(payload, dict):
            raise ScoringInputError(
                f'expected a JSON object, got {_kind(payload)}: send {{"data": [[...]]}} (Azure ML)'
                f" or one of {', '.join(MLFLOW_KEYS)} (MLflow)"
            )
        formats = [k for k in MLFLOW_KEYS if k in payload]
        azure = "data" in payload
        if azure + len(formats) != 1:
            given = ", ".join(repr(k) for k in payload) or "none"
            raise ScoringInputError(
                "expected exactly one of 'data' (Azure ML) or "
                f"{', '.join(repr(k) for k in MLFLOW_KEYS)} (MLflow); the keys given: {given}"
            )
        request = self._azure(payload["data"]) if azure else {formats[0]: payload[formats[0]]}
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            raise ScoringInputError(f"'params' must be a JSON object, got {_kind(params)}")
        try:
            data = self._parse(request, self.schema)
        except Exception as e:  # noqa: BLE001 - pandas and MLflow alike: the payload is wrong
            raise ScoringInputError(f"cannot read the input: {one_line(e)}") from None
        try:
            if self._takes_params:
                predictions = self.model.predict(data, params=params)
            else:
                predictions = self.model.predict(data)
        except self._mlflow_error as e:
            if e.get_http_status_code() >= 500:
                raise
            raise ScoringInputError(one_line(e)) from None
        out = jsonable(predictions)
        return out if azure else {"predictions": out}

    def _azure(self, data: Any) -> dict[str, Any]:
        """Azure ML's ``data`` as the MLflow payload that means the same."""
        if isinstance(data, dict) and data:
            if all(isinstance(v, list) for v in data.values()):
                lengths = {len(v) for v in data.values()}
                if len(lengths) != 1:
                    raise ScoringInputError(
                        "the columns of 'data' have different lengths"
                        f" ({', '.join(f'{k}: {len(v)}' for k, v in data.items())})"
                    )
                rows = [list(r) for r in zip(*data.values(), strict=True)]
                return {"dataframe_split": {"columns": list(data), "data": rows}}
            return {"dataframe_records": [data]}  # one row, as {column: value}
        if isinstance(data, list) and data:
            if all(isinstance(r, dict) for r in data):
                return {"dataframe_records": data}
            if self.columns is not None and all(isinstance(r, list) for r in data):
                width = len(self.columns)
                bad = next((r for r in data if len(r) != width), None)
                if bad is not None:
                    raise ScoringInputError(
                        f"each row of 'data' needs {width} values (the model's inputs:"
                        f" {', '.join(self.columns)}); a row has {len(bad)}"
                    )
                return {"dataframe_split": {"columns": self.columns, "data": data}}
            return {"inputs": data}
        raise ScoringInputError(
            "'data' must be a non-empty list of rows or records, or an object of columns;"
            f" got {_kind(data)}"
        )


def jsonable(value: Any) -> Any:
    """Predictions as plain JSON data, as MLflow's server renders them: a DataFrame as records,
    arrays and Series as lists, numpy scalars as numbers, dates as ISO text."""
    if hasattr(value, "columns") and hasattr(value, "to_dict"):  # a pandas DataFrame
        return jsonable(value.to_dict(orient="records"))
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series
        return jsonable(value.tolist()) if hasattr(value, "to_dict") else value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def one_line(error: BaseException) -> str:
    """An error's message on one line and of bounded length, without MLflow's echo of the
    whole input ("Failed to enforce schema of data '...' with schema '...'")."""
    text = str(getattr(error, "message", None) or error) or type(error).__name__
    text = re.sub(
        r"Failed to enforce schema of data .*? with schema .*?\. Error: ",
        "the input does not fit the model's signature: ",
        text,
        flags=re.S,
    )
    text = " ".join(text.split())
    if len(text) > _LONGEST_MESSAGE:
        text = text[: _LONGEST_MESSAGE - 1] + "…"
    return text


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
