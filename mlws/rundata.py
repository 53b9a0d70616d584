"""Data a run consumes and produces.

Inputs are datasets named in a run's arguments: ``ds.as_named_input("iris").as_mount()`` (a
read-only view, no copy, where the kernel allows it), ``.as_download()`` (a private copy) or the
plain ``as_named_input`` (direct: the script gets the dataset itself from
``run.input_datasets``). Outputs are ``OutputFileDatasetConfig`` folders the script writes;
when the run completes they are uploaded to their datastore destination (``{run-id}`` and
``{output-name}`` filled in) and, with ``register_on_complete``, registered as the next version
of a dataset.

How a run carries them: at submit, each such argument becomes a placeholder
(``{"mlwsInput": name}`` / ``{"mlwsOutput": name}``) and the definition gains ``inputs`` and
``outputs``. Where the run is prepared (``prepare``, in its working folder), inputs are
materialized under ``.mlws-data/in/<name>`` and output folders made under
``.mlws-data/out/<name>``; the definition records those paths relative to the run's folder
(``dataPaths``), so the same definition works in the folder an ``ssh`` host receives, and
``script_argv`` puts absolute paths in their place. Every input also records, in
``run_datasets``, the dataset version *and* a fingerprint of the data the run actually got,
so a run's lineage says whether the data under a version had changed when it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserErrorException

if TYPE_CHECKING:
    from .datasets import AbstractDataset
    from .datastores import Datastore
    from .workspace import Workspace

DATA_DIR = ".mlws-data"
#: The data paths of the current run's script (``{"inputs": {name: path}, "outputs": ...}``).
PATHS_ENV = "MLWS_DATA_PATHS"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_MODES = ("direct", "mount", "download")


def check_data_name(name: Any, what: str = "input") -> str:
    """Return ``name`` if it can name a run input or output (``what``): letters, digits and ``_``,
    not starting with a digit, as Azure ML allows.

    :raises UserErrorException: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserErrorException(
            f"invalid {what} name {name!r}: letters, digits and '_', not starting with a digit"
            " (as Azure ML)"
        )
    return name


def _relative(path: str | None, what: str) -> str | None:
    """A ``path_on_compute``: relative to the run's folder, never out of it."""
    if path is None:
        return None
    from .blobs import check_relpath
    from .errors import UnsafePath

    try:
        return check_relpath(str(path).replace("\\", "/").strip("/"))
    except UnsafePath:
        raise UserErrorException(
            f"{what} {path!r} must be a relative path inside the run's folder, without '..'"
        ) from None


class DatasetConsumptionConfig:
    """How a run gets a dataset (v1's ``DatasetConsumptionConfig``): ``mode`` is ``direct``
    (the script gets the dataset object), ``mount`` or ``download``; put it in
    ``ScriptRunConfig.arguments`` and the script gets a path (or the dataset's id) there."""

    def __init__(
        self,
        name: str,
        dataset: AbstractDataset,
        mode: str = "direct",
        path_on_compute: str | None = None,
    ) -> None:
        self.name = check_data_name(name)
        if mode not in _MODES:
            raise UserErrorException(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
        self.dataset = dataset
        self.mode = mode
        self.path_on_compute = _relative(path_on_compute, "path_on_compute")

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig(name={self.name!r}, mode={self.mode!r}, dataset={self.dataset!r})"

    def as_mount(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """Read-only, without copying the files (where the machine allows it)."""
        return DatasetConsumptionConfig(self.name, self.dataset, "mount", path_on_compute)

    def as_download(self, path_on_compute: str | None = None) -> DatasetConsumptionConfig:
        """A copy of the files the script may change."""
        return DatasetConsumptionConfig(self.name, self.dataset, "download", path_on_compute)


class OutputFileDatasetConfig:
    """A folder a run writes, uploaded to a datastore when the run completes (v1's
    ``OutputFileDatasetConfig``). ``destination`` is ``(datastore, "path")``, where
    ``{run-id}`` and ``{output-name}`` are filled in; by default the workspace's default
    datastore at ``dataset/{run-id}/{output-name}`` (as v1).
    """

    def __init__(
        self,
        name: str | None = None,
        destination: tuple[Datastore, str] | None = None,
        source: str | None = None,
        partition_format: str | None = None,
    ) -> None:
        if partition_format is not None:
            raise UserErrorException("partition_format is not supported for outputs")
        self.name = check_data_name(name, "output") if name is not None else None
        if destination is not None:
            from .datastores import Datastore

            if not (
                isinstance(destination, tuple)
                and len(destination) == 2
                and isinstance(destination[0], Datastore)
                and isinstance(destination[1], str)
            ):
                raise UserErrorException(
                    f"destination is (datastore, 'path/{{run-id}}'); got {destination!r}"
                )
            _destination_path(destination[1], "run", self.name or "output")  # checked now
        self.destination = destination
        self.source = _relative(source, "source")
        self._register: dict[str, Any] | None = None
        self._overwrite = False
        #: Shared by every copy of this output (``register_on_complete``, ``as_upload``...):
        #: the pipeline keeps here the ``PipelineData`` that carries it between steps.
        self.pipeline_link: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r}, destination={self.destination!r})"

    def _copy(self) -> OutputFileDatasetConfig:
        other = OutputFileDatasetConfig.__new__(OutputFileDatasetConfig)
        other.__dict__.update(self.__dict__)
        return other

    def register_on_complete(
        self, name: str, description: str | None = None, tags: dict[str, Any] | None = None
    ) -> OutputFileDatasetConfig:
        """Register what the run wrote as the next version of dataset ``name``."""
        from .datasets import check_dataset_name

        other = self._copy()
        other._register = {
            "name": check_dataset_name(name),
            "description": description,
            "tags": {str(k): "" if v is None else str(v) for k, v in (tags or {}).items()},
        }
        return other

    def as_upload(
        self, overwrite: bool = False, source_globs: list[str] | None = None
    ) -> OutputFileDatasetConfig:
        """Upload when the run completes (the only mode here); ``overwrite`` replaces files
        already at the destination."""
        if source_globs is not None:
            raise UserErrorException("source_globs is not supported; write only what to upload")
        other = self._copy()
        other._overwrite = bool(overwrite)
        return other

    def as_mount(self) -> OutputFileDatasetConfig:
        """v1 writes through to the datastore; here the folder is uploaded when the run
        completes, which gives the same files at the destination."""
        return self._copy()

    def as_input(self, name: str | None = None) -> OutputAsInput:
        """This output as the input of a later pipeline step (a read-only copy of what the
        producing step wrote). ``name`` is accepted for v1 code: the input keeps the output's
        name (``$AZUREML_DATAREFERENCE_<output name>``)."""
        return OutputAsInput(self)

    def registration(self) -> dict[str, Any] | None:
        """What :meth:`register_on_complete` asked for (``name``, ``description``, ``tags``),
        or None."""
        return self._register

    def overwrites(self) -> bool:
        """Whether the upload replaces files already at the destination (:meth:`as_upload`)."""
        return self._overwrite

    def read_delimited_files(self, *args: Any, **kwargs: Any) -> Any:
        """This output as a table of CSV files for a later pipeline step (v1's
        ``OutputTabularDatasetConfig``; the options: :func:`mlws.pipelines.data.read_delimited`)."""
        from .pipelines.data import read_delimited

        return read_delimited(self, *args, **kwargs)

    def read_parquet_files(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`read_delimited_files`, over Parquet files."""
        from .pipelines.data import read_parquet

        return read_parquet(self, *args, **kwargs)


class OutputAsInput:
    """An ``OutputFileDatasetConfig`` read by a later pipeline step (what its ``as_input()``
    returns); only a pipeline step can take it, as its producer is another step."""

    def __init__(self, output: OutputFileDatasetConfig) -> None:
        self.output = output

    def __repr__(self) -> str:
        return f"OutputAsInput({self.output!r})"


class StoredInput:
    """A run input whose files are in the blob store already, named by their manifest: a
    pipeline step's upstream ``PipelineData``. The script gets a read-only folder of copies
    (``.mlws-data/in/<name>``), or with ``file`` that file of it (a v1 ``metrics_output``); put
    it in the arguments (or pass it to ``submit_script``'s ``data``)."""

    def __init__(
        self, name: str, manifest: str, tabular: dict[str, Any] | None = None, file: str = ""
    ) -> None:
        from .manifests import check_hash, check_relpath

        self.name = check_data_name(name)
        self.manifest = check_hash(manifest)
        #: How it is read as a table (``read_delimited_files()``); None: a folder.
        self.tabular = tabular
        self.file = check_relpath(file) if file else None

    def __repr__(self) -> str:
        return f"StoredInput(name={self.name!r}, manifest={self.manifest!r})"


class RunFilesOutput:
    """A folder a run writes that is kept as the run's own files, ``outputs/<name>/`` (stored
    content-addressed when the run ends, as all of ``outputs``), not uploaded to a datastore:
    a pipeline step's ``PipelineData`` output. The script gets the folder's path."""

    def __init__(self, name: str) -> None:
        self.name = check_data_name(name, "output")

    def __repr__(self) -> str:
        return f"RunFilesOutput(name={self.name!r})"


def _destination_path(template: str, run_id: str, name: str) -> str:
    from .datastores import clean_path

    return clean_path(template.replace("{run-id}", run_id).replace("{output-name}", name))


# -- at submit --------------------------------------------------------------------------------------
def encode_arguments(
    ws: Workspace, arguments: list[Any], extra: list[Any] | tuple[Any, ...] = ()
) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A run definition's arguments (placeholders for data), its inputs and its outputs.
    ``extra``: inputs and outputs the script finds by name (``run.input_datasets``,
    ``$AZUREML_DATAREFERENCE_<name>``) rather than in its arguments.

    :raises UserErrorException: two inputs or outputs of one name, a dataset that matches no
        file now, an unknown datastore.
    """
    from .datasets import AbstractDataset
    from .datastores import DataReference
    from .pipelines.data import OutputTabularDatasetConfig as OutputTabular

    args: list[Any] = []
    inputs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for a in arguments:
        args.append(_encode(ws, a, inputs, outputs))
    data = (AbstractDataset, DataReference, DatasetConsumptionConfig, OutputFileDatasetConfig)
    for a in extra:
        if not isinstance(a, (*data, StoredInput, RunFilesOutput, OutputAsInput, OutputTabular)):
            raise UserErrorException(f"not a run input or output: {a!r}")
        _encode(ws, a, inputs, outputs)  # named, not on the command line
    clash = set(inputs) & set(outputs)
    if clash:
        raise UserErrorException(f"{sorted(clash)[0]!r} names both an input and an output")
    return args, list(inputs.values()), list(outputs.values())


def _encode(
    ws: Workspace, a: Any, inputs: dict[str, dict[str, Any]], outputs: dict[str, dict[str, Any]]
) -> Any:
    """One argument as the definition records it; an input or output goes into ``inputs`` /
    ``outputs`` (by name) and becomes a placeholder."""
    from .datasets import AbstractDataset
    from .datastores import DataReference, Datastore

    if isinstance(a, AbstractDataset):
        a = a.as_named_input(default_input_name(a))
    elif isinstance(a, DataReference):
        from .datasets import Dataset

        a = DatasetConsumptionConfig(
            a.data_reference_name or default_input_name(a),
            Dataset.File.from_files(a, validate=False),
            "download" if a.mode == "download" else "mount",
        )
    from .pipelines.data import OutputTabularDatasetConfig

    if isinstance(a, (OutputAsInput, OutputTabularDatasetConfig)):
        raise UserErrorException(
            f"{a.output!r}.as_input() is the input of a later pipeline step; a single run cannot"
            " read an output it does not write"
        )
    if isinstance(a, StoredInput):
        spec = {"name": a.name, "mode": "mount", "pathOnCompute": None, "manifest": a.manifest}
        spec.update({k: v for k, v in (("tabular", a.tabular), ("file", a.file)) if v})
        return _add(inputs, spec, "inputs", {"mlwsInput": a.name})
    if isinstance(a, RunFilesOutput):
        spec = {"name": a.name, "runFiles": True, "source": f"outputs/{a.name}"}
        return _add(outputs, spec, "outputs", {"mlwsOutput": a.name})
    if isinstance(a, DatasetConsumptionConfig):
        spec = {
            "name": a.name,
            "mode": a.mode,
            "pathOnCompute": a.path_on_compute,
            "dataset": dataset_spec(a.dataset),
        }
        # Resolved now, so a dataset over nothing fails the submit, not the run.
        rebuild_dataset(ws, spec["dataset"]).current_files()
        return _add(inputs, spec, "inputs", {"mlwsInput": a.name})
    if isinstance(a, OutputFileDatasetConfig):
        name = a.name or f"output_{len(outputs) + 1}"
        store = a.destination[0] if a.destination else Datastore.get_default(ws)
        Datastore(ws, store.name)  # still registered
        spec = {
            "name": name,
            "datastore": store.name,
            "path": a.destination[1] if a.destination else "dataset/{run-id}/{output-name}",
            "source": a.source,
            "overwrite": a._overwrite,
            "register": a._register,
        }
        return _add(outputs, spec, "outputs", {"mlwsOutput": name})
    return str(a)


def _add(
    specs: dict[str, dict[str, Any]], spec: dict[str, Any], what: str, placeholder: dict[str, str]
) -> dict[str, str]:
    name = spec["name"]
    if name in specs and specs[name] != spec:
        raise UserErrorException(f"two different {what} are named {name!r}")
    specs[name] = spec
    return placeholder


def default_input_name(item: Any) -> str:
    """An input's name when the script did not give one: the dataset's, else one derived from
    its definition (the same data gets the same name)."""
    name = getattr(item, "name", None)
    if isinstance(name, str) and _NAME.fullmatch(name.replace("-", "_").replace(".", "_")):
        return name.replace("-", "_").replace(".", "_")
    key = json.dumps(getattr(item, "definition", None) or repr(item), sort_keys=True, default=str)
    return "input_" + hashlib.sha256(key.encode()).hexdigest()[:8]


def dataset_spec(ds: AbstractDataset) -> dict[str, Any]:
    """How a run's definition records a dataset: its name and version if registered, its definition,
    and its registered fingerprint."""
    return {
        "name": ds.name,
        "version": ds.version,
        "definition": ds.definition,
        "fingerprint": ds._fingerprint,
    }


def rebuild_dataset(ws: Workspace, spec: dict[str, Any]) -> AbstractDataset:
    """The dataset a run's input names (its :func:`dataset_spec`), as it was defined when the
    run was submitted."""
    from .datasets import from_definition

    ds = from_definition(ws, spec["definition"])
    ds.name, ds.version, ds._fingerprint = (
        spec.get("name"),
        spec.get("version"),
        spec.get("fingerprint"),
    )
    return ds


# -- where the run is prepared ------------------------------------------------------------------
def prepare(
    ws: Workspace,
    run_seq: int | str,
    definition: dict[str, Any],
    workdir: Path,
    links_ok: bool,
    remote: bool = False,
) -> list[str]:
    """Materialize the run's inputs and make its output folders in ``workdir``; records the
    paths in ``definition`` and the inputs' lineage in the catalog. ``links_ok``: mounted
    inputs may be hard links to the data (the script will get them read-only); otherwise they
    are copies. ``remote``: the folder goes to another machine, so direct inputs are copied
    too (the data is not there). Returns notes for the run's log (data changed since it was
    registered). ``run_seq``: the run's seq in the catalog (on a remote workspace, its id).

    :raises UserErrorException: an input matches no file any more.
    """
    from .blobs import canonical_manifest
    from .datasets import by_host, fingerprint, on_this_machine

    inputs, outputs = definition.get("inputs") or [], definition.get("outputs") or []
    if not inputs and not outputs:
        return []
    notes: list[str] = []
    paths: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {}}
    read_only: list[str] = []
    rows = []
    for spec in inputs:
        if spec.get("manifest"):  # files in the blob store: copies, made read-only
            rel = f"{DATA_DIR}/in/{spec['name']}"
            _fresh_folder(workdir, workdir / rel)
            ws.blobs.materialize(ws.blobs.read_manifest(spec["manifest"]), workdir / rel)
            read_only.append(rel)
            paths["inputs"][spec["name"]] = f"{rel}/{spec['file']}" if spec.get("file") else rel
            continue
        ds = rebuild_dataset(ws, spec["dataset"])
        files = ds.current_files()
        content = ws.blobs.put_bytes(canonical_manifest(fingerprint(files)))
        registered = spec["dataset"].get("fingerprint")
        changed = bool(registered) and registered != content
        if changed:
            notes.append(
                f"mlws: the data of dataset {ds.id} (input {spec['name']!r}) changed since it was"
                " registered; this run uses the data as it is now (see 'mlws dataset diff')"
            )
        rows.append((spec, ds, content, changed))
        if spec["mode"] == "direct" and not remote and not by_host(files):
            continue  # the script reads the dataset where it is
        # (Data on an ssh datastore is not where the script runs either: it gets a copy.)
        rel = spec["pathOnCompute"] or f"{DATA_DIR}/in/{spec['name']}"
        folder = workdir / rel
        _fresh_folder(workdir, folder)
        link = spec["mode"] == "mount" and links_ok
        for name, (src, _st) in on_this_machine(files).items():
            _place(src, folder / name, link)
        if spec["mode"] == "mount":
            read_only.append(rel)
        paths["inputs"][spec["name"]] = _entry_path(rel, list(files))
    for spec in outputs:
        rel = spec["source"] or f"{DATA_DIR}/out/{spec['name']}"
        (workdir / rel).mkdir(parents=True, exist_ok=True)
        paths["outputs"][spec["name"]] = rel
    definition["dataPaths"] = paths
    definition["readOnly"] = read_only
    record_lineage(
        ws,
        [(run_seq, "input", spec["name"], spec["mode"], ds, content, changed)
         for spec, ds, content, changed in rows],
    )  # fmt: skip
    return notes


def record_lineage(
    ws: Workspace, rows: list[tuple[int | str, str, str, str, Any, str | None, bool]]
) -> None:
    """Lineage rows: ``(run seq, direction, name in the run, mode, dataset, content, changed)``;
    on a remote workspace (where a run's seq is its id) the server records them."""
    if ws.remote is not None:
        from .remote.datasets import record_lineage as send

        return send(ws, rows)
    with ws.catalog.write() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO run_datasets (run_seq, direction, name, mode,"
            " dataset_name, dataset_version, definition, content, changed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (seq, direction, name, mode, ds.name, ds.version, json.dumps(ds.definition),
                 content, int(changed))
                for seq, direction, name, mode, ds, content, changed in rows
            ],
        )  # fmt: skip


def _fresh_folder(workdir: Path, folder: Path) -> None:
    from .datastores import is_inside

    if not is_inside(workdir, folder):
        raise UserErrorException(f"{folder} is outside the run's folder")
    if folder.exists():
        raise UserErrorException(
            f"path_on_compute {os.path.relpath(folder, workdir)!r} exists in the run's snapshot;"
            " choose another"
        )
    folder.mkdir(parents=True)


def _place(src: str, dest: Path, link: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass  # another filesystem, or not allowed: a copy (read-only all the same)
    shutil.copyfile(src, dest)


def _entry_path(rel: str, names: list[str]) -> str:
    """What the script is given: the file, for a single file; else the deepest folder that
    holds every file (a dataset over ``iris/**/*.csv`` gives the ``iris`` folder)."""
    if len(names) == 1:
        return f"{rel}/{names[0]}"
    common = os.path.commonpath(["/" + n for n in names]).strip("/")
    return f"{rel}/{common}" if common else rel


def absolute_paths(definition: dict[str, Any], run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's data paths (``{"inputs": {name: path}, "outputs": ...}``) made absolute under
    ``run_dir``: what a script finds in ``MLWS_DATA_PATHS``."""
    paths = definition.get("dataPaths") or {}
    return {
        kind: {k: os.path.join(run_dir, v) for k, v in (paths.get(kind) or {}).items()}
        for kind in ("inputs", "outputs")
    }


#: v1's argument placeholders, which its runtime expands on the compute (AZUREML_V1.md (c)):
#: ``$AZUREML_DATAREFERENCE_<name>`` (a data reference's or pipeline data's path),
#: ``$AML_PARAMETER_<name>`` (a pipeline parameter), and a whole argument
#: ``DatasetConsumptionConfig:<name>`` / ``DatasetOutputConfig:<name>``.
_V1_VARIABLE = re.compile(
    r"\$\{((?:AZUREML_DATAREFERENCE|AML_PARAMETER)_\w+)\}|\$((?:AZUREML_DATAREFERENCE|AML_PARAMETER)_\w+)"
)
_V1_PLACEHOLDER = re.compile(r"^(DatasetConsumptionConfig|DatasetOutputConfig):([A-Za-z_]\w*)$")


def v1_data_variables(
    definition: dict[str, Any], run_dir: str | os.PathLike[str]
) -> dict[str, str]:
    """``AZUREML_DATAREFERENCE_<name>`` for each of the run's inputs and outputs that has a path
    (what v1 scripts read from their environment), plus the run's own ``AML_PARAMETER_*`` and
    ``AZUREML_DATAREFERENCE_*`` variables (set by whoever submitted it, e.g. a pipeline step)."""
    paths = absolute_paths(definition, run_dir)
    found = {
        f"AZUREML_DATAREFERENCE_{name}": str(path)
        for kind in ("inputs", "outputs")
        for name, path in paths[kind].items()
    }
    given = {
        **((definition.get("environment") or {}).get("variables") or {}),
        **(definition.get("environmentVariables") or {}),
    }
    for k, v in given.items():
        if k.startswith(("AML_PARAMETER_", "AZUREML_DATAREFERENCE_")):
            found[k] = str(v)
    return found


def expand_argument(a: Any, definition: dict[str, Any], run_dir: str | os.PathLike[str]) -> str:
    """One argument of the script's command line: data placeholders become paths (or, for a
    direct input, the dataset's id), and v1's placeholders (``$AZUREML_DATAREFERENCE_x``,
    ``$AML_PARAMETER_x``, ``DatasetConsumptionConfig:x``, ``DatasetOutputConfig:x``) are
    expanded as v1's runtime does; one naming nothing the run has is left as it is."""
    if not isinstance(a, dict):
        text = str(a)
        if "AZUREML_DATAREFERENCE_" in text or "AML_PARAMETER_" in text:
            values = v1_data_variables(definition, run_dir)
            text = _V1_VARIABLE.sub(
                lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text
            )
        m = _V1_PLACEHOLDER.match(text)
        if m is None:
            return text
        is_input = m.group(1) == "DatasetConsumptionConfig"
        specs = definition.get("inputs" if is_input else "outputs") or []
        if m.group(2) not in {spec["name"] for spec in specs}:
            return text
        a = {"mlwsInput" if is_input else "mlwsOutput": m.group(2)}
    paths = absolute_paths(definition, run_dir)
    if "mlwsInput" in a:
        name = a["mlwsInput"]
        if name in paths["inputs"]:
            return str(paths["inputs"][name])
        spec = next(i for i in definition["inputs"] if i["name"] == name)
        d = spec["dataset"]
        return f"{d['name']}:{d['version']}" if d.get("name") else name
    return str(paths["outputs"][a["mlwsOutput"]])


# -- when the run has completed ------------------------------------------------------------------
def publish(
    ws: Workspace, run_id: str, run_seq: int, definition: dict[str, Any], workdir: Path
) -> list[str]:
    """Upload every output folder to its destination and register those that ask for it;
    returns notes for the run's log.

    :raises MlwsError: an upload failed (files already at the destination, without overwrite).
    """
    from .datasets import Dataset
    from .datastores import Datastore

    notes: list[str] = []
    for spec in definition.get("outputs") or []:
        if spec.get("runFiles"):
            continue  # stored with the run's outputs/ folder, nowhere else
        src = workdir / definition["dataPaths"]["outputs"][spec["name"]]
        store = Datastore(ws, spec["datastore"])
        dest = _destination_path(spec["path"], run_id, spec["name"])
        if not src.is_dir() or not any(p.is_file() for p in src.rglob("*")):
            notes.append(f"mlws: output {spec['name']!r} is empty: nothing uploaded")
            continue
        if not spec["overwrite"] and store._occupied(dest):
            # Keeping what is there would register another run's files as this run's output.
            raise UserErrorException(
                f"output {spec['name']!r}: {dest!r} on datastore {store.name!r} exists already"
                " (put '{run-id}' in the destination, or use .as_upload(overwrite=True))"
            )
        store.upload(str(src), dest, overwrite=spec["overwrite"], show_progress=False)
        ds = Dataset.File.from_files((store, dest), validate=False)
        if spec["register"]:
            r = spec["register"]
            ds = ds.register(
                ws, r["name"], description=r["description"], tags=r["tags"], create_new_version=True
            )
            notes.append(f"mlws: output {spec['name']!r} registered as dataset {ds.id}")
        record_lineage(
            ws, [(run_seq, "output", spec["name"], "upload", ds, ds._fingerprint, False)]
        )
    return notes


# -- what a run and a dataset know of each other ----------------------------------------------------
def run_data(run: Any, direction: str) -> dict[str, Any]:
    """``run.input_datasets`` / ``run.output_datasets``: inside the run's own script, the
    paths it reads and writes (direct inputs: the dataset); elsewhere the datasets."""
    from .datasets import Dataset, from_definition

    ws = run.experiment.workspace
    definition = json.loads(run._refresh()["definition"] or "{}")
    here = os.environ.get("MLWS_RUN_ID") == run.id and os.environ.get(PATHS_ENV)
    paths = json.loads(os.environ[PATHS_ENV]).get(f"{direction}s", {}) if here else {}
    out: dict[str, Any] = {}
    if direction == "input":
        for spec in definition.get("inputs") or []:
            if spec.get("manifest") and spec.get("tabular") and spec["name"] in paths:
                from .pipelines.data import tabular_view

                out[spec["name"]] = tabular_view(paths[spec["name"]], spec["tabular"])
            elif spec.get("manifest"):  # stored files: their folder in the run, else the manifest
                out[spec["name"]] = paths.get(spec["name"], spec["manifest"])
            elif spec["name"] in paths and spec["mode"] != "direct":
                out[spec["name"]] = paths[spec["name"]]
            elif spec["name"] in paths:
                # A direct input on a host: the dataset over the copy the host received.
                d = dict(spec["dataset"])
                d["definition"] = {**d["definition"], "sources": [{"local": paths[spec["name"]]}]}
                out[spec["name"]] = rebuild_dataset(ws, d)
            else:
                out[spec["name"]] = rebuild_dataset(ws, spec["dataset"])
        return out
    if ws.remote is not None:  # the server's lineage, from the run's details
        from .remote.datasets import output_datasets

        return dict(paths) or output_datasets(run, definition.get("outputs") or [])
    recorded = {
        r["name"]: r
        for r in ws.catalog.query(
            "SELECT * FROM run_datasets WHERE run_seq = ? AND direction = 'output'",
            (run._refresh()["seq"],),
        )
    }
    for spec in definition.get("outputs") or []:
        name = spec["name"]
        if name in paths:
            out[name] = paths[name]
        elif name in recorded and recorded[name]["dataset_name"]:
            r = recorded[name]
            out[name] = Dataset.get_by_name(ws, r["dataset_name"], r["dataset_version"])
        elif name in recorded:
            out[name] = from_definition(ws, json.loads(recorded[name]["definition"]))
    return out


def lineage_of_run(ws: Workspace, run_seq: int) -> dict[str, list[dict[str, Any]]]:
    """v1-shaped ``inputDatasets`` / ``outputDatasets`` of ``get_details()``."""
    out: dict[str, list[dict[str, Any]]] = {"inputDatasets": [], "outputDatasets": []}
    for r in ws.catalog.query(
        "SELECT * FROM run_datasets WHERE run_seq = ? ORDER BY direction, name", (run_seq,)
    ):
        ident = {
            "name": r["dataset_name"],
            "version": r["dataset_version"],
            "id": f"{r['dataset_name']}:{r['dataset_version']}" if r["dataset_name"] else None,
            "content": r["content"],
        }
        if r["direction"] == "input":
            ident["changedSinceRegistered"] = bool(r["changed"])
            out["inputDatasets"].append(
                {
                    "dataset": ident,
                    "consumptionDetails": {
                        "type": "RunInput",
                        "inputName": r["name"],
                        "mechanism": r["mode"].capitalize(),
                    },
                }
            )
        else:
            out["outputDatasets"].append(
                {
                    "dataset": ident,
                    "outputType": "RunOutput",
                    "outputDetails": {"outputName": r["name"]},
                }
            )
    return out


def runs_of_dataset(ws: Workspace, name: str, version: int) -> list[dict[str, Any]]:
    """The runs that used (``input``) or produced (``output``) a dataset version."""
    return [
        {"run": r["id"], "direction": r["direction"], "as": r["name"], "status": r["status"]}
        for r in ws.catalog.query(
            "SELECT runs.id, runs.status, d.direction, d.name FROM run_datasets d"
            " JOIN runs ON runs.seq = d.run_seq WHERE d.dataset_name = ? AND d.dataset_version = ?"
            " ORDER BY runs.seq",
            (name, version),
        )
    ]


class MountContext:
    """``FileDataset.mount()``: the dataset's files under ``mount_point`` while it is started,
    read-only (v1's MountContext). A process cannot make a mount for itself alone, so outside
    a run this is a read-only copy; runs get true mounts with ``as_mount()``."""

    def __init__(
        self, dataset: AbstractDataset, mount_point: str | os.PathLike[str] | None
    ) -> None:
        self.dataset = dataset
        self._given = mount_point is not None
        self.mount_point = str(mount_point) if mount_point is not None else None
        self._started = False

    def start(self) -> None:
        """Lay the dataset's files out under the mount point (a new temp folder if none was given)
        and make them read-only; a second call does nothing.

        :raises UserErrorException: the mount point given is not empty.
        """
        import tempfile

        from . import readonly

        if self._started:
            return
        from .datasets import on_this_machine

        files = on_this_machine(self.dataset.current_files())
        if self.mount_point is None:
            self.mount_point = tempfile.mkdtemp(prefix="mlws-mount-")
        root = Path(self.mount_point)
        if root.exists() and any(root.iterdir()):
            raise UserErrorException(f"mount point {root} is not empty")
        root.mkdir(parents=True, exist_ok=True)
        for name, (src, _st) in files.items():
            _place(src, root / name, link=False)
        readonly.strip_write_bits(root)
        self._started = True

    def stop(self) -> None:
        """Take the files away: a mount point that was given is emptied and left, one made by
        :meth:`start` is removed. Does nothing unless started."""
        from . import readonly

        if not self._started or self.mount_point is None:
            return
        readonly.restore_write_bits(self.mount_point)
        root = Path(self.mount_point)
        if self._given:  # the folder was empty before: empty it again, and leave it
            for p in root.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        else:
            shutil.rmtree(root)
        self._started = False

    def __enter__(self) -> MountContext:
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
