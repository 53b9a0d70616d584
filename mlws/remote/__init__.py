"""Remote workspaces: ``Workspace("https://host:port")`` — the workspace ``mlws serve`` serves
there, through the same classes as a local one.

The workspace's ``remote`` is its :class:`~.client.RemoteClient`; its ``catalog`` and ``blobs``
are the backend of :mod:`.backend`. What works remotely: the workspace's facts, experiments,
interactive runs (``start_logging``, ``child_run``, logging, tags, properties, status, details,
metrics, listing), run files (uploads send only what the server lacks; downloads are hash
checked), models (:mod:`.models`, with metadata edits and deletes), datastores
(:mod:`.datastores`: the server's folders) and datasets (:mod:`.datasets`), submitted script runs
with their data (:mod:`.submit`), secrets (:mod:`.vault`: the server keeps the key and
decrypts), environments (:mod:`.environments`), services (:mod:`.services`: run where deployed,
recorded on the server). Metrics go in batches from a background thread (:mod:`.tracker`) and,
while the server is away, to an on-disk spool (:mod:`.spool`). Everything else raises
:class:`~mlws.errors.NotAvailableRemotely` (one line).
"""

from __future__ import annotations

from .client import RemoteClient, find_token, is_url, save_token

__all__ = ["RemoteClient", "find_token", "is_url", "save_token"]
