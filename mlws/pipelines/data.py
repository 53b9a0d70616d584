"""What flows between a pipeline's steps: ``PipelineData`` (a folder one step writes and later
steps read) and ``PipelineParameter`` (a value set when the pipeline is submitted).

Where ``PipelineData`` lives: the producing step writes it under its own ``outputs/<name>/``
(the script is given that folder's absolute path), so when the step ends its files are stored
as the step run's files, content-addressed like every run output. A consuming step gets a
read-only copy of them (``.mlws-data/in/<name>`` in its working folder, from the blobs: no
datastore in between). In both steps the path is also ``$AZUREML_DATAREFERENCE_<name>``, as in
v1, and ``str(data)`` is that variable's name, so ``f"--out={data}"``-style code keeps working
when the argument is the object itself.

v1's other data classes are carried the same way. An ``OutputFileDatasetConfig`` a step
writes (in its ``outputs``, or in its ``arguments`` when no earlier step writes it) is an
:class:`OutputData`: a ``PipelineData`` that also remembers the output's destination and
registration, so the producing step's run writes it under ``outputs/<name>/`` *and* uploads it
to its datastore destination (and registers it) when it completes, as a single run would; a
later step reads it through ``.as_input()`` (or the object itself) as a read-only copy. A
``DataReference`` (``datastore.path("x")``) a step reads becomes a dataset over those files
(see :func:`graph_item`), so its content is in the step's fingerprint.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..rundata import check_data_name

if TYPE_CHECKING:
    from .steps import PipelineStep

#: v1 turns a parameter's name into an environment variable name this way (``builder.py``).
_NOT_WORD = re.compile(r"[~\W]")


class PipelineData:
    """A folder written by one step and read by the steps that take it as an input (v1's
    ``PipelineData``). ``datastore``, ``output_mode`` and the like are accepted for v1 code
    and do not change where the data lives (see the module docstring).

    :raises UserErrorException: ``name`` is not letters, digits and ``_``.
    """

    def __init__(
        self,
        name: str,
        datastore: Any = None,
        output_name: str | None = None,
        output_mode: str = "mount",
        output_path_on_compute: str | None = None,
        output_overwrite: bool | None = None,
        data_type: str | None = None,
        is_directory: bool | None = None,
        pipeline_output_name: str | None = None,
        training_output: Any = None,
    ) -> None:
        self.name = check_data_name(name, "PipelineData")
        self.datastore = datastore
        self.is_directory = True if is_directory is None else bool(is_directory)
        #: The step that writes it; set when a step lists it among its ``outputs``.
        self.producer: PipelineStep | None = None

    def __repr__(self) -> str:
        return f"PipelineData(name={self.name!r})"

    def __str__(self) -> str:
        return self.get_env_variable_name()

    def get_env_variable_name(self) -> str:
        """``$AZUREML_DATAREFERENCE_<name>``: where a step finds the folder."""
        return f"$AZUREML_DATAREFERENCE_{self.name}"

    def as_input(self, input_name: str | None = None) -> PipelineData:
        """The data as a step's input (it always is a read-only folder here)."""
        return self

    def as_mount(self, input_name: str | None = None) -> PipelineData:
        """The data as a step's input, read-only (as :meth:`as_input`)."""
        return self

    def as_download(
        self,
        input_name: str | None = None,
        path_on_compute: str | None = None,
        overwrite: Any = None,
    ) -> PipelineData:
        """The data as a step's input (a copy here whatever the mode, read-only)."""
        return self


class OutputData(PipelineData):
    """The ``PipelineData`` that carries an ``OutputFileDatasetConfig`` between steps;
    ``config`` is the output as its producing step gave it (destination, registration)."""

    def __init__(self, config: Any, name: str) -> None:
        super().__init__(name)
        self.config = config

    def __repr__(self) -> str:
        return f"OutputData(name={self.name!r})"

    def spec(self) -> dict[str, Any]:
        """Where the producing step uploads it and how it registers it, as the pipeline run's
        definition records it (``datastore`` None: the workspace's default)."""
        c = self.config
        return {
            "datastore": c.destination[0].name if c.destination else None,
            "path": c.destination[1] if c.destination else "dataset/{run-id}/{output-name}",
            "overwrite": c.overwrites(),
            "register": c.registration(),
        }


class OutputTabularDatasetConfig:
    """An ``OutputFileDatasetConfig`` read as a table by a later step (what its
    ``read_delimited_files()`` / ``read_parquet_files()`` return, as v1): given to a step
    (its ``inputs``, its ``arguments`` or a ``ParallelRunStep``'s inputs) the step's
    ``run.input_datasets[<output name>]`` is a ``TabularDataset`` over the files the producing
    step wrote, and ``$AZUREML_DATAREFERENCE_<output name>`` their folder."""

    def __init__(self, output: Any, reader: dict[str, Any]) -> None:
        self.output = output
        #: How the files are read (:func:`tabular_view`).
        self.reader = reader

    def __repr__(self) -> str:
        return f"OutputTabularDatasetConfig({self.output!r}, {self.reader['format']})"

    @property
    def name(self) -> str | None:
        """The output's name."""
        return self.output.name

    def as_input(self, name: str | None = None) -> OutputTabularDatasetConfig:
        """The table as a step's input (``name`` accepted for v1 code; the input keeps the
        output's name)."""
        return self

    def as_named_input(self, name: str) -> OutputTabularDatasetConfig:
        """As :meth:`as_input`."""
        return self

    def as_mount(self) -> OutputTabularDatasetConfig:
        """As :meth:`as_input` (the files are a read-only copy whatever the mode)."""
        return self


def read_delimited(
    output: Any,
    include_path: bool = False,
    separator: str = ",",
    header: bool = True,
    partition_format: str | None = None,
    path_glob: str | None = None,
    set_column_types: Any = None,
) -> OutputTabularDatasetConfig:
    """``output.read_delimited_files()``: the consuming step's ``run.input_datasets[name]`` is a
    ``TabularDataset`` over the CSV files the producing step wrote (``path_glob``: only those
    matching it, inside the output folder).

    :raises UserErrorException: ``partition_format`` or ``set_column_types`` (not supported),
        a bad separator or glob.
    """
    options = {"include_path": include_path, "separator": separator, "header": header}
    return tabular_output(
        output, "delimited", options, partition_format, path_glob, set_column_types
    )


def read_parquet(
    output: Any,
    include_path: bool = False,
    partition_format: str | None = None,
    path_glob: str | None = None,
    set_column_types: Any = None,
) -> OutputTabularDatasetConfig:
    """``output.read_parquet_files()``: as :func:`read_delimited`, over Parquet files."""
    options = {"include_path": include_path}
    return tabular_output(output, "parquet", options, partition_format, path_glob, set_column_types)


def tabular_output(
    output: Any,
    kind: str,
    options: dict[str, Any],
    partition_format: str | None,
    path_glob: str | None,
    set_column_types: Any,
) -> OutputTabularDatasetConfig:
    """``output`` read as a table of ``kind`` (``delimited``, ``parquet``) files.

    :raises UserErrorException: an option not supported, a bad separator or glob.
    """
    from ..errors import UserErrorException

    if partition_format is not None or set_column_types is not None:
        raise UserErrorException(
            f"read_{kind}_files: partition_format and set_column_types are not supported for"
            " a pipeline output; read the table and convert its columns in the step"
        )
    sep = options.get("separator", ",")
    if not isinstance(sep, str) or len(sep) != 1 or sep in '"\r\n':
        raise UserErrorException(f"separator is one character, e.g. ',' or '\\t'; got {sep!r}")
    if path_glob is not None and (
        not isinstance(path_glob, str) or path_glob.startswith("/") or ".." in path_glob.split("/")
    ):
        raise UserErrorException(
            f"path_glob is a pattern inside the output folder, e.g. '*.csv'; got {path_glob!r}"
        )
    reader = {"format": kind, **{k: v for k, v in options.items()}, "pathGlob": path_glob}
    reader["include_path"] = bool(reader.get("include_path"))
    if "header" in reader:
        reader["header"] = bool(reader["header"])
    return OutputTabularDatasetConfig(output, reader)


def tabular_view(folder: str, reader: dict[str, Any]) -> Any:
    """The ``TabularDataset`` a step sees over an upstream output's files in ``folder``."""
    import os

    from ..datasets import Dataset

    path = os.path.join(folder, reader["pathGlob"]) if reader.get("pathGlob") else folder
    if reader["format"] == "parquet":
        return Dataset.Tabular.from_parquet_files(
            path, validate=False, include_path=reader["include_path"]
        )
    return Dataset.Tabular.from_delimited_files(
        path,
        validate=False,
        include_path=reader["include_path"],
        separator=reader["separator"],
        header=reader["header"],
    )


def output_data(config: Any, step: PipelineStep) -> OutputData:
    """The one :class:`OutputData` of an ``OutputFileDatasetConfig`` (shared by its copies),
    made when ``step`` is the first to mention it. An unnamed one is named as v1 does,
    ``output_<8 hex>``, but from the step's name and how many unnamed outputs it mentioned
    before: the same pipeline built again (in another driver process too) gives the same
    names, so its steps are reused."""
    import hashlib

    link = config.pipeline_link
    if "data" not in link:
        name = config.name
        if name is None:
            seen = step.unnamed_outputs
            step.unnamed_outputs += 1
            name = "output_" + hashlib.sha256(f"{step.name}\0{seen}".encode()).hexdigest()[:8]
        link["data"] = OutputData(config, name)
    return link["data"]


def graph_item(item: Any, step: PipelineStep, where: str) -> Any:
    """A step's argument, input or output (``where``) with v1's data classes turned into what
    the graph carries: an ``OutputFileDatasetConfig`` its :class:`OutputData` (an output of
    ``step`` when it is in its ``outputs``, or in its ``arguments`` and no other step writes
    it), its ``as_input()`` the same data as an input, a ``DataReference`` a dataset input
    over its files. Anything else is returned as it is."""
    from ..datastores import DataReference
    from ..rundata import OutputAsInput, OutputFileDatasetConfig

    if isinstance(item, OutputAsInput):
        return output_data(item.output, step)
    if isinstance(item, OutputTabularDatasetConfig) and where != "outputs":
        data = output_data(item.output, step)
        step.tabular_inputs[data.name] = item.reader
        return data
    if isinstance(item, OutputFileDatasetConfig):
        data = output_data(item, step)
        if where == "outputs" or (where == "arguments" and data.producer in (None, step)):
            data.config = item  # the producer's copy says where it goes and how it registers
            if where == "arguments" and data not in step.outputs:
                step.outputs.append(data)
        return data
    data_path = data_path_parameter(item) if where != "outputs" else None
    if data_path is not None:
        return DataPathInput(*data_path)
    if isinstance(item, DataReference) and where != "outputs":
        from ..rundata import DatasetConsumptionConfig, default_input_name

        mode = "download" if item.mode == "download" else "mount"
        name = item.data_reference_name or default_input_name(item)
        return DatasetConsumptionConfig(name, _data_path_dataset(item), mode)
    return item


class PipelineParameter:
    """A value given when the pipeline is submitted (``pipeline_parameters={name: value}``),
    else ``default_value``. In a step's ``arguments`` it becomes the value; in ``params`` the
    variable ``$AML_PARAMETER_<name>`` (as v1). A string argument that mentions
    ``$AML_PARAMETER_<name>`` gets the value in its place.

    :raises UserErrorException: ``name`` is empty or not a string.
    """

    def __init__(self, name: str, default_value: Any) -> None:
        from ..errors import UserErrorException

        if not isinstance(name, str) or not name.strip():
            raise UserErrorException(f"a PipelineParameter needs a name, got {name!r}")
        self.name = name
        self.default_value = default_value

    def __repr__(self) -> str:
        return f"PipelineParameter(name={self.name!r}, default_value={self.default_value!r})"

    def __str__(self) -> str:
        return f"$AML_PARAMETER_{env_name(self.name)}"


def env_name(name: str) -> str:
    """A parameter's name as v1 puts it in ``AML_PARAMETER_<name>``."""
    return _NOT_WORD.sub("_", name)


def substitute(text: str, values: dict[str, Any]) -> str:
    """``text`` with every ``$AML_PARAMETER_<name>`` of a parameter in ``values`` replaced by
    its value (longest names first, so ``$AML_PARAMETER_ab`` is not read as ``a``)."""
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(f"$AML_PARAMETER_{env_name(name)}", str(values[name]))
    return text


# -- DataPath parameters ---------------------------------------------------------------------------
def data_path_parameter(item: Any) -> tuple[PipelineParameter, Any] | None:
    """``(parameter, binding)`` when ``item`` is a step input of v1's DataPath form, a
    ``(PipelineParameter(default_value=DataPath(...)), DataPathComputeBinding(...))`` pair or
    such a parameter alone (mounted); else None."""
    from ..datastores import DataReference

    if isinstance(item, PipelineParameter) and isinstance(item.default_value, DataReference):
        return item, None
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], PipelineParameter)
        and isinstance(item[0].default_value, DataReference)
        and hasattr(item[1], "mode")
    ):
        return item[0], item[1]
    return None


def _data_path_dataset(ref: Any) -> Any:
    """A file dataset over ``ref`` (a ``DataReference`` or ``(datastore, path)``) that looks
    for its files in the datastore's workspace (an unregistered dataset otherwise asks
    ``Workspace.from_config()``)."""
    from ..datasets import Dataset

    ds = Dataset.File.from_files(ref, validate=False)
    store = ref.datastore if hasattr(ref, "datastore") else ref[0]
    ds.workspace = ds.workspace or store.workspace
    return ds


class DataPathInput:
    """A step's input whose files a DataPath pipeline parameter names: the parameter's
    default path, or the ``DataPath`` given for it at submission (``pipeline_parameters=
    {name: DataPath(...)}``, REST ``DataPathAssignments``). The step gets it as a dataset
    input named after the parameter (mounted, or downloaded as its binding says), so its files'
    content is in the step's fingerprint."""

    def __init__(self, parameter: PipelineParameter, binding: Any = None) -> None:
        from ..rundata import DatasetConsumptionConfig

        mode = "download" if getattr(binding, "mode", "mount") == "download" else "mount"
        self.parameter = parameter
        self.config = DatasetConsumptionConfig(
            parameter.name,
            _data_path_dataset(parameter.default_value),
            mode,
            getattr(binding, "path_on_compute", None),
        )

    @property
    def name(self) -> str:
        """The input's (and the parameter's) name."""
        return self.config.name

    def __repr__(self) -> str:
        return f"DataPathInput({self.parameter!r}, mode={self.config.mode!r})"

    def __str__(self) -> str:
        return f"$AZUREML_DATAREFERENCE_{self.name}"


def data_path_value(value: Any) -> dict[str, str] | None:
    """A DataPath parameter's value as a definition records it, ``{"datastore", "path"}``, from
    a ``DataPath`` / ``DataReference``, that dict, or v1's REST form ``{"DataStoreName",
    "RelativePath"}``; None when ``value`` is none of them."""
    from ..datastores import DataReference

    if isinstance(value, DataReference):
        return {"datastore": value.datastore.name, "path": value.path_on_datastore}
    if isinstance(value, dict):
        for store, path in (("datastore", "path"), ("DataStoreName", "RelativePath")):
            if set(value) == {store, path}:
                if not all(isinstance(value[k], str) for k in (store, path)):
                    return None
                return {"datastore": value[store], "path": value[path]}
    return None


def check_value_kinds(defaults: dict[str, Any], given: dict[str, Any] | None) -> None:
    """A DataPath parameter (its recorded default a ``{"datastore", "path"}``) is given a
    DataPath, and no other parameter is.

    :raises PipelineValidationError: one is not (its name, what it needs)."""
    from ..errors import PipelineValidationError

    for name, value in (given or {}).items():
        if name not in defaults:
            continue  # an unknown name has its own error
        wants = data_path_value(defaults[name]) is not None
        if wants != (data_path_value(value) is not None):
            need = "a DataPath(datastore, path)" if wants else "a value, not a DataPath"
            raise PipelineValidationError(f"parameter {name!r} takes {need}, got {value!r}")


def data_path_datasets(ws: Any, values: dict[str, Any], names: Any) -> dict[str, Any]:
    """``{name: dataset spec}`` of the files each DataPath parameter in ``names`` names now,
    by its value in ``values`` (as a definition records them).

    :raises PipelineValidationError: a value that is not a DataPath, an unknown datastore, or a
        path that matches no file.
    """
    from ..datastores import Datastore, clean_path
    from ..errors import MlwsError, PipelineValidationError
    from ..rundata import dataset_spec

    out: dict[str, Any] = {}
    for name in names:
        if name in out:
            continue
        value = data_path_value(values.get(name))
        if value is None:
            raise PipelineValidationError(
                f"parameter {name!r} is a DataPath: give DataPath(datastore, path) (REST:"
                f" DataPathAssignments {{DataStoreName, RelativePath}}), got {values.get(name)!r}"
            )
        try:
            ds = _data_path_dataset((Datastore(ws, value["datastore"]), clean_path(value["path"])))
            ds.current_files()  # :raises: the path matches no file
        except MlwsError as e:
            raise PipelineValidationError(f"parameter {name!r}: {e}") from None
        out[name] = dataset_spec(ds)
    return out


def bind_data_paths(ws: Any, spec: dict[str, Any]) -> None:
    """Point every DataPath input of the definition ``spec`` at the files its parameter's value
    names now (in place).

    :raises PipelineValidationError: as :func:`data_path_datasets` (nothing is recorded or
        started).
    """
    inputs = [d for s in spec["steps"] for d in s.get("datasets") or [] if "dataPathParameter" in d]
    found = data_path_datasets(ws, spec["parameters"], [d["dataPathParameter"] for d in inputs])
    for d in inputs:
        d["dataset"] = found[d["dataPathParameter"]]
