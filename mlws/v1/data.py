"""v1 data names mlws has no object for: ``DataPathComputeBinding`` (how a ``DataPath`` reaches
a pipeline step). A ``DataPath`` itself is mlws's :class:`~mlws.datastores.DataReference`."""

from __future__ import annotations


class DataPathComputeBinding:
    """How a ``DataPath`` is delivered to a run: ``mode`` ``mount`` (read in place) or
    ``download`` (a copy); ``path_on_compute`` and ``overwrite`` as v1."""

    def __init__(
        self, mode: str = "mount", path_on_compute: str | None = None, overwrite: bool = False
    ) -> None:
        if mode not in ("mount", "download"):
            from ..errors import UserErrorException

            raise UserErrorException(f"mode must be 'mount' or 'download', got {mode!r}")
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite
