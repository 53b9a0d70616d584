"""``ParallelRunStep``: batch scoring of a dataset in mini-batches spread over worker processes
(v1's ``ParallelRunConfig`` / ``ParallelRunStep``).

The step is a child run like any other (reuse, snapshot, environment, inputs and outputs are the
pipeline's); what it runs is mlws's driver (``python -m mlws.pipelines.parallel_driver``, see
:mod:`.parallel_driver`) with the configuration as its one argument. The driver cuts the input
into mini-batches, starts ``node_count x process_count_per_node`` workers
(:mod:`.parallel_worker`: each imports the entry script and calls its ``init()`` once), hands
the mini-batches out, retries a failing one up to ``run_max_try`` times, counts what still fails
against ``error_threshold`` and appends the results to one file in the order of the
mini-batches.

``mini_batch_size``: for a File dataset (or ``PipelineData``) a number of files (``10`` or
``"10"``); for a Tabular dataset a size (``"1KB"``, ``"10MB"``: rows are cut so that each
mini-batch holds about that much of the source files) or -- mlws's addition -- a number of rows
(an ``int``). The defaults are v1's: 10 files, ``"1MB"``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from ..errors import MlwsError, ParallelRunConfigError
from .data import PipelineData
from .steps import PipelineStep

#: The module that runs in the step's run (its command is ``python -m`` this).
DRIVER_MODULE = "mlws.pipelines.parallel_driver"
OUTPUT_ACTIONS = ("append_row", "summary_only")
#: The compute target types a ParallelRunStep's workers run on.
WORKER_TARGET_TYPES = ("local", "dask", "ssh")
DEFAULT_APPEND_FILE = "parallel_run_step.txt"
#: v1's size units for a tabular ``mini_batch_size``.
_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*$", re.IGNORECASE)
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _whole(name: str, value: Any, least: int) -> int:
    """``value`` if it is an ``int`` of at least ``least`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ParallelRunConfigError(
            f"ParallelRunConfig: {name} must be a whole number >= {least}, got {value!r}"
        )
    return value


def parse_mini_batch_size(value: Any) -> dict[str, Any]:
    """``mini_batch_size`` as ``{"count": n}`` (a number of files or rows), ``{"bytes": n}``
    (a size such as ``"10MB"``) or ``{}`` (None: the defaults).

    :raises ParallelRunConfigError: anything else (zero, negative, an unknown unit).
    """
    if value is None:
        return {}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"count": _whole("mini_batch_size", value, 1)}
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            number, unit = float(m.group(1)), m.group(2).upper()
            unit = unit if unit.endswith("B") or not unit else unit + "B"
            if not unit and number.is_integer() and number >= 1:
                return {"count": int(number)}
            size = int(number * _UNITS[unit])
            if unit and size >= 1:
                return {"bytes": size}
    raise ParallelRunConfigError(
        "ParallelRunConfig: mini_batch_size is a number of files or rows (10) or a size such as"
        f" '1KB' or '10MB', got {value!r}"
    )


class ParallelRunConfig:
    """How a :class:`ParallelRunStep` runs (v1's ``ParallelRunConfig``): the ``entry_script``
    (in ``source_directory``) with ``init()`` and ``run(mini_batch)``; ``mini_batch_size`` (see
    the module docstring); ``error_threshold``: how many failed items (rows, files) are
    tolerated, ``-1`` for any number; ``output_action``: ``"append_row"`` (each result of
    ``run`` one line of ``append_row_file_name``) or ``"summary_only"``; ``node_count`` x
    ``process_count_per_node`` workers (default: one per CPU); ``run_invocation_timeout``:
    seconds one ``run()`` may take before its worker is killed; ``run_max_try``: tries per
    mini-batch. ``allowed_failed_count`` / ``allowed_failed_percent`` bound failed
    mini-batches as v1. ``partition_keys`` is not supported.

    :raises ParallelRunConfigError: a value out of range (one line).
    """

    def __init__(
        self,
        environment: Any = None,
        entry_script: str | None = None,
        error_threshold: int | None = None,
        output_action: str = "append_row",
        compute_target: Any = None,
        node_count: int = 1,
        process_count_per_node: int | None = None,
        mini_batch_size: int | str | None = None,
        source_directory: str | os.PathLike[str] | None = None,
        description: str | None = None,
        logging_level: str = "INFO",
        run_invocation_timeout: float = 60,
        run_max_try: int = 3,
        append_row_file_name: str | None = None,
        allowed_failed_count: int | None = None,
        allowed_failed_percent: float | None = None,
        partition_keys: list[str] | None = None,
        environment_variables: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(entry_script, str) or not entry_script.strip():
            raise ParallelRunConfigError(
                f"ParallelRunConfig needs an entry_script (a .py file), got {entry_script!r}"
            )
        if error_threshold is None:
            raise ParallelRunConfigError(
                "ParallelRunConfig needs an error_threshold (failed items tolerated; -1: any)"
            )
        if output_action not in OUTPUT_ACTIONS:
            raise ParallelRunConfigError(
                f"ParallelRunConfig: output_action is 'append_row' or 'summary_only', got"
                f" {output_action!r}"
            )
        name = append_row_file_name or DEFAULT_APPEND_FILE
        if not isinstance(name, str) or "/" in name or "\\" in name or name in (".", ".."):
            raise ParallelRunConfigError(
                f"ParallelRunConfig: append_row_file_name is a file name, got {name!r}"
            )
        if str(logging_level).upper() not in _LEVELS:
            raise ParallelRunConfigError(
                f"ParallelRunConfig: logging_level is one of {', '.join(_LEVELS)},"
                f" got {logging_level!r}"
            )
        timeout = run_invocation_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ParallelRunConfigError(
                f"ParallelRunConfig: run_invocation_timeout is seconds > 0, got {timeout!r}"
            )
        if partition_keys:
            raise ParallelRunConfigError(
                "ParallelRunConfig: partition_keys is not supported by mlws; cut the data by"
                " mini_batch_size"
            )
        percent = allowed_failed_percent
        if percent is not None and (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or not 0 <= percent <= 100
        ):
            raise ParallelRunConfigError(
                f"ParallelRunConfig: allowed_failed_percent is 0..100, got {percent!r}"
            )
        self.entry_script = entry_script
        self.error_threshold = _whole("error_threshold", error_threshold, -1)
        self.output_action = output_action
        self.append_row_file_name = name
        self.mini_batch_size = mini_batch_size
        self._batch = parse_mini_batch_size(mini_batch_size)
        self.node_count = _whole("node_count", node_count, 1)
        self.process_count_per_node = (
            None
            if process_count_per_node is None
            else _whole("process_count_per_node", process_count_per_node, 1)
        )
        self.run_invocation_timeout = float(timeout)
        self.run_max_try = _whole("run_max_try", run_max_try, 1)
        self.allowed_failed_count = (
            None
            if allowed_failed_count is None
            else _whole("allowed_failed_count", allowed_failed_count, -1)
        )
        self.allowed_failed_percent = None if percent is None else float(percent)
        self.logging_level = str(logging_level).upper()
        self.source_directory = None if source_directory is None else str(source_directory)
        self.environment = environment
        self.compute_target = compute_target
        self.description = description
        self.environment_variables = {
            str(k): str(v) for k, v in (environment_variables or {}).items()
        }

    def __repr__(self) -> str:
        return (
            f"ParallelRunConfig(entry_script={self.entry_script!r},"
            f" mini_batch_size={self.mini_batch_size!r}, error_threshold={self.error_threshold!r})"
        )


def _input_name(item: Any) -> tuple[str, str]:
    """``(name, kind)`` of a ParallelRunStep input: kind ``file``, ``tabular`` or ``data``."""
    from ..datasets import AbstractDataset
    from ..rundata import DatasetConsumptionConfig, default_input_name
    from .data import OutputTabularDatasetConfig

    if isinstance(item, PipelineData):
        return item.name, "data"
    if isinstance(item, OutputTabularDatasetConfig):  # an upstream output read as a table
        # Its name is known once the step has taken it in (an unnamed output is named then).
        return "", "tabular"
    if isinstance(item, AbstractDataset):
        return default_input_name(item), item.kind
    if isinstance(item, DatasetConsumptionConfig):
        return item.name, item.dataset.kind
    raise ParallelRunConfigError(
        f"ParallelRunStep: an input is a File or Tabular dataset (or PipelineData), got {item!r}"
    )


class ParallelRunStep(PipelineStep):
    """A pipeline step that runs ``parallel_run_config.entry_script`` over ``inputs`` in
    mini-batches (v1's ``ParallelRunStep``). ``inputs``: datasets of one kind (File or Tabular;
    ``PipelineData`` counts as files); ``output``: the ``PipelineData`` that gets the
    ``append_row`` file (without one, the file is the step run's ``outputs/``);
    ``side_inputs``: more data the script reads by itself (``$AZUREML_DATAREFERENCE_<name>``,
    ``Run.get_context().input_datasets``); ``arguments``: the entry script's ``sys.argv[1:]``.

    :raises ParallelRunConfigError: no inputs, inputs of mixed kinds, a file count given as a
        size, a config that is not a ``ParallelRunConfig``.
    """

    def __init__(
        self,
        name: str,
        parallel_run_config: ParallelRunConfig,
        inputs: list[Any],
        output: PipelineData | None = None,
        side_inputs: list[Any] | None = None,
        arguments: list[Any] | None = None,
        allow_reuse: bool = True,
    ) -> None:
        from ..runconfig import RunConfiguration

        if not isinstance(parallel_run_config, ParallelRunConfig):
            raise ParallelRunConfigError(
                "ParallelRunStep needs a ParallelRunConfig, got"
                f" {type(parallel_run_config).__name__}"
            )
        inputs = [inputs] if not isinstance(inputs, (list, tuple)) else list(inputs)
        if not inputs:
            raise ParallelRunConfigError("ParallelRunStep needs at least one input dataset")
        named = [_input_name(i) for i in inputs]
        kinds = {"file" if k == "data" else k for _, k in named}
        if len(kinds) > 1:
            raise ParallelRunConfigError(
                "ParallelRunStep: the inputs are all File or all Tabular datasets, got both"
            )
        cfg = parallel_run_config
        self.input_kind = kinds.pop()
        if self.input_kind == "file" and "bytes" in cfg._batch:
            raise ParallelRunConfigError(
                "ParallelRunStep: over files, mini_batch_size is a number of files, got"
                f" {cfg.mini_batch_size!r}"
            )
        if output is not None and not isinstance(output, PipelineData):
            raise ParallelRunConfigError(
                f"ParallelRunStep: output is a PipelineData, got {type(output).__name__}"
            )
        side = list(side_inputs or [])
        for s in side:
            _input_name(s)
        self.parallel_run_config = cfg
        self.output = output
        rc = RunConfiguration()
        rc.environment = cfg.environment
        rc.environment_variables = dict(cfg.environment_variables)
        compute = cfg.compute_target
        #: Where the workers run (``local``, or a ``dask`` target); the step's own run -- the
        #: driver, which reads the input and writes the output -- runs on ``local``.
        self.workers_target: str = (
            "local"
            if compute is None
            else compute
            if isinstance(compute, str)
            else str(getattr(compute, "name", compute))
        )
        super().__init__(
            name,
            arguments=arguments,
            compute_target="local",
            runconfig=rc,
            inputs=[*inputs, *side],
            outputs=[output] if output is not None else [],
            source_directory=cfg.source_directory,
            allow_reuse=allow_reuse,
        )
        # As the graph carries them: an upstream output read as a table is its PipelineData.
        self.input_names = [n or self.inputs[i].name for i, (n, _) in enumerate(named)]
        self.side_input_names = [
            _input_name(s)[0] or self.inputs[len(named) + j].name for j, s in enumerate(side)
        ]

    def settings(self) -> dict[str, Any]:
        """What the driver is told (the JSON argument of its command line)."""
        cfg = self.parallel_run_config
        return {
            "entryScript": cfg.entry_script,
            "inputs": self.input_names,
            "inputKind": self.input_kind,
            "sideInputs": self.side_input_names,
            "output": None if self.output is None else self.output.name,
            "miniBatch": cfg._batch,
            "errorThreshold": cfg.error_threshold,
            "allowedFailedCount": cfg.allowed_failed_count,
            "allowedFailedPercent": cfg.allowed_failed_percent,
            "outputAction": cfg.output_action,
            "appendRowFileName": cfg.append_row_file_name,
            "nodeCount": cfg.node_count,
            "processCountPerNode": cfg.process_count_per_node,
            "runInvocationTimeout": cfg.run_invocation_timeout,
            "runMaxTry": cfg.run_max_try,
            "loggingLevel": cfg.logging_level,
            # Only when not local: the fingerprints of earlier local steps stay as they were.
            **({"workersTarget": self.workers_target} if self.workers_target != "local" else {}),
        }

    def command_line(self) -> dict[str, Any]:
        """``{"command": ["python", "-m", <driver>, <settings as JSON>], "stepType": ...}``:
        ``python`` is the step's environment's interpreter where the run starts."""
        text = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return {"command": ["python", "-m", DRIVER_MODULE, text], "stepType": "ParallelRunStep"}

    def check(self, source_directory: str, target_type: str) -> None:
        """The entry script is a file in the source folder; the workers' target
        (``target_type``: that of :attr:`workers_target`) is ``local``, ``dask`` or ``ssh``.

        :raises ParallelRunConfigError: either is not so.
        """
        from ..runconfig import check_script_path

        if target_type not in WORKER_TARGET_TYPES:
            raise ParallelRunConfigError(
                f"ParallelRunStep runs its workers on a 'local', 'dask' or 'ssh' compute target"
                f" in mlws; {self.workers_target!r} is {target_type!r}"
            )
        try:
            script = check_script_path(source_directory, self.parallel_run_config.entry_script)
        except MlwsError as e:
            raise ParallelRunConfigError(f"entry_script: {e}") from None
        if not os.path.isfile(os.path.join(source_directory, script)):
            raise ParallelRunConfigError(
                f"entry_script {self.parallel_run_config.entry_script!r} not found in the source"
                f" directory {source_directory}"
            )
