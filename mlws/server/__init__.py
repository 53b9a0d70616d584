"""``mlws serve``: one process that owns a workspace on its local disk and serves it over HTTP
to a team — users with tokens and Azure's built-in roles, and the REST API under ``/api/v1/``.

- :mod:`.auth` — users, tokens (stored hashed) and roles;
- :mod:`.api` — the API's contract: endpoints as data, the one error shape, request checks,
  the OpenAPI document;
- :mod:`.workspace`, :mod:`.runs`, :mod:`.models`, :mod:`.blobs` — the routes of each noun;
- :mod:`.app` — the ASGI app (starlette) that puts them behind one gate;
- :mod:`.process` — the server process: checks, the socket, its state file, stop, detach.

Nothing here is imported by ``import mlws``: starlette and uvicorn load only in a server.
"""
