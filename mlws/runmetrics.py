"""A run's metrics: ``run.log`` and v1's other ``log_*`` calls, ``flush`` and
``get_metrics``; a base class of :class:`mlws.runs.Run`.

Values are buffered by the workspace's metric writer (:mod:`mlws.metrics`, or a served
workspace's tracker) and written in batches; every read of them flushes this process's buffers
first, so a script reads back what it logged.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import metrics as _metrics
from .errors import UserErrorException
from .lifecycle import SUBMITTED

if TYPE_CHECKING:
    import sqlite3

    from .runs import Run
    from .workspace import Workspace


class RunMetrics:
    """Logging and reading a run's metrics (the base class of :class:`mlws.runs.Run`)."""

    # Provided by Run.
    id: str
    seq: int
    workspace: Workspace
    _writer: Any
    _in_context: bool
    _row: sqlite3.Row

    if TYPE_CHECKING:  # Run's own (mlws.runfiles, mlws.runs)

        def get_file_names(self) -> list[str]: ...
        def upload_file(self, name: str, path_or_stream: Any) -> Any: ...
        def get_children(self, recursive: bool = False) -> list[Run]: ...

    # -- metrics ----------------------------------------------------------------------------
    @property
    def _metric_writer(self) -> _metrics.MetricWriter:
        if self._writer is None and self.workspace.remote is not None:
            self._writer = self.workspace.remote.tracker.writer(self.id)
        if self._writer is None:
            self._writer = _metrics.MetricWriter(self.workspace.catalog, self.seq)
        return self._writer

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Log a scalar. Logging a name again extends it into a series (step 0, 1, ...)."""
        # The writer, once made, straight from the instance: the property's look-up and tests
        # were ~15% of a call in a training loop.
        writer = self._writer
        if writer is None:
            writer = self._metric_writer
        writer.add_scalar(name, value, step)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        """Log a list of values under ``name`` (v1's ``log_list``); a list logged again under the
        name extends it."""
        self._metric_writer.add(name, _metrics.LIST, list(value))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Log one row of a table metric, its columns as keyword arguments; rows logged under one
        name make the table (v1's ``log_row``)."""
        self._metric_writer.add(name, _metrics.ROW, dict(kwargs))

    def log_table(self, name: str, value: dict[str, list[Any]], description: str = "") -> None:
        """Log a table metric, ``{column: [values]}`` (v1's ``log_table``); a table logged again
        under the name adds its rows."""
        self._metric_writer.add(name, _metrics.TABLE, {k: list(v) for k, v in value.items()})

    def _log_json(self, kind: str, name: str, value: Any) -> None:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise UserErrorException(
                    f"{kind} metric {name!r} must be a dict or a JSON string"
                ) from None
        self._metric_writer.add(name, kind, value)

    def log_confusion_matrix(self, name: str, value: Any, description: str = "") -> None:
        """Log a confusion matrix (a dict or its JSON text) as one metric (v1's
        ``log_confusion_matrix``).

        :raises UserErrorException: ``value`` is a string that is not JSON.
        """
        self._log_json("confusion_matrix", name, value)

    def log_accuracy_table(self, name: str, value: Any, description: str = "") -> None:
        """Log an accuracy table (a dict or its JSON text) as one metric (v1's
        ``log_accuracy_table``).

        :raises UserErrorException: ``value`` is a string that is not JSON.
        """
        self._log_json("accuracy_table", name, value)

    def log_residuals(self, name: str, value: Any, description: str = "") -> None:
        """Log residuals (a dict or its JSON text) as one metric (v1's ``log_residuals``).

        :raises UserErrorException: ``value`` is a string that is not JSON.
        """
        self._log_json("residuals", name, value)

    def log_predictions(self, name: str, value: Any, description: str = "") -> None:
        """Log predictions (a dict or its JSON text) as one metric (v1's ``log_predictions``).

        :raises UserErrorException: ``value`` is a string that is not JSON.
        """
        self._log_json("predictions", name, value)

    def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Log a PNG file (``path``) or a matplotlib figure / pyplot (``plot``) as an image metric;
        the image is stored as the run file ``images/<name>[_<n>].png``."""
        if (path is None) == (plot is None):
            raise UserErrorException("log_image needs exactly one of path= or plot=")
        if plot is not None:
            buf = io.BytesIO()
            plot.savefig(buf, format="png")
            data = buf.getvalue()
        else:
            try:
                data = Path(path).read_bytes()  # type: ignore[arg-type]
            except OSError as e:
                raise UserErrorException(f"cannot read image {path}: {e.strerror}") from None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"
        existing = set(self.get_file_names())
        fname, n = f"images/{safe}.png", 1
        while fname in existing:
            fname, n = f"images/{safe}_{n}.png", n + 1
        self.upload_file(fname, io.BytesIO(data))
        self._metric_writer.add(name, _metrics.IMAGE, fname)

    def flush(self) -> None:
        """Write buffered metrics now (they are flushed at least every second anyway)."""
        if self._writer is not None:
            self._writer.flush()

    def _sends_own_end(self, set_status: bool) -> bool:
        # A remote run that ends here: its last values travel with the outcome (one request).
        return (
            set_status
            and self.workspace.remote is not None
            and not (self._in_context and self._row["type"] in SUBMITTED)
        )

    def _close_writer(self, unsent: bool = False) -> None:
        """Flush and drop this run's metric buffer (a later log() opens a new one), so a process
        that creates thousands of runs does not keep a writer per finished run. ``unsent``: a
        remote run's values are left to the request that ends it."""
        if self._writer is not None:
            if not unsent:
                self._writer.flush()
            _metrics.unregister(self._writer)
            self._writer = None

    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
    ) -> dict[str, Any]:
        """Metrics in v1 shapes; with ``recursive``, ``{run_id: metrics}`` for this run and its
        descendants (optionally only those of ``run_type``)."""
        # Values logged in this process (to this run or its children) are read back.
        _metrics.flush_all()
        if not recursive:
            return _metrics.read_metrics(self.workspace.catalog, {self.seq: self.id}, name)[self.id]
        runs = [self, *self.get_children(recursive=True)]
        wanted = {r.seq: r.id for r in runs if run_type is None or r.type == run_type}
        return _metrics.read_metrics(self.workspace.catalog, wanted, name)
