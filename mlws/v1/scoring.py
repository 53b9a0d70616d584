"""What v1 scoring scripts import from ``azureml.contrib.services``: ``rawhttp``,
``AMLRequest`` and ``AMLResponse``.

mlws's scoring replica calls ``run(raw_data)`` with the body as text (or ``run(**fields)`` for
inference_schema-decorated scripts). ``@rawhttp`` marks ``run`` as wanting the request itself:
a replica that knows the mark passes an :class:`AMLRequest`; the names here let such scripts
load, and :class:`AMLResponse` is a plain value a replica can send as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: The attribute ``@rawhttp`` sets on ``run``.
RAWHTTP_MARK = "_mlws_rawhttp"


def rawhttp(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a scoring ``run(request)`` as taking the whole HTTP request (v1's decorator)."""
    setattr(func, RAWHTTP_MARK, True)
    return func


class AMLRequest:
    """An HTTP request as a ``@rawhttp`` scoring function sees it (the parts of Flask's request
    that v1 scoring scripts use): ``method``, ``headers``, ``args``, ``data``,
    ``get_data()``, ``get_json()``, ``full_path``."""

    def __init__(
        self,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        data: bytes = b"",
        args: dict[str, str] | None = None,
        path: str = "/score",
    ) -> None:
        self.method = method
        self.headers = dict(headers or {})
        self.data = data
        self.args = dict(args or {})
        self.path = path

    @property
    def full_path(self) -> str:
        """The path with its query string."""
        from urllib.parse import urlencode

        return f"{self.path}?{urlencode(self.args)}"

    def get_data(self, as_text: bool = False) -> bytes | str:
        """The body, as bytes (or text with ``as_text``)."""
        return self.data.decode("utf-8") if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False) -> Any:
        """The body parsed as JSON (``None`` if ``silent`` and it is not JSON)."""
        try:
            return json.loads(self.data or b"null")
        except ValueError:
            if silent:
                return None
            raise


class AMLResponse:
    """A scoring response with its own status and headers (v1's ``AMLResponse(response,
    status, headers, json_str=False)``); ``json_str``: ``response`` is JSON-encoded."""

    def __init__(
        self,
        response: Any,
        status: int = 200,
        headers: dict[str, str] | None = None,
        json_str: bool = False,
    ) -> None:
        self.status_code = int(status)
        self.headers = dict(headers or {})
        if json_str:
            response = json.dumps(response)
            self.headers.setdefault("Content-Type", "application/json")
        self.body = (
            response.encode("utf-8") if isinstance(response, str) else bytes(response or b"")
        )

    def get_data(self) -> bytes:
        """The body as bytes."""
        return self.body
