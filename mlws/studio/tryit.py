"""The service page's "try it" box: a JSON body sent to the service's scoring URI by the studio's
server, not by the browser.

A scoring service answers no CORS preflight (it is an API for programs, with key auth), and its
keys must not reach a page: so the page POSTs the body to the studio, which adds the service's
primary key and forwards it to ``/score``, and the page shows the status and the answer as
text. Under ``mlws serve`` this is a write (it runs the user's scoring code and records
telemetry): contributor or higher, CSRF-checked (:mod:`.app`).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import UserErrorException

if TYPE_CHECKING:
    from ..workspace import Workspace

#: The largest body the box sends (a scoring request typed or pasted into a page).
MAX_BODY = 1024 * 1024
#: The most of an answer shown (the rest is cut, and says so).
MAX_ANSWER = 256 * 1024


def check_body(body: bytes) -> bytes:
    """``body`` if it is at most :data:`MAX_BODY` bytes of JSON.

    :raises UserErrorException: too large, or not JSON.
    """
    if len(body) > MAX_BODY:
        raise UserErrorException(f"the request body is over {MAX_BODY} bytes")
    try:
        json.loads(body)
    except ValueError as e:
        raise UserErrorException(f"the request body is not JSON: {e}") from None
    return body


def try_service(ws: Workspace, name: str, body: bytes) -> dict[str, Any]:
    """POST ``body`` to service ``name``'s scoring URI with its primary key: ``{"status",
    "body", "ms", "truncated"}`` as it answered (an error status is an answer too), or
    ``{"status": None, "error": ...}`` when it cannot be reached.

    :raises WebserviceException: no such service. :raises UserErrorException: a bad body.
    """
    import urllib.error
    import urllib.request

    from ..serving import Webservice

    check_body(body)
    svc = Webservice(ws, name)
    uri = svc.scoring_uri
    state = svc.state
    if uri is None or state not in ("Healthy", "Unhealthy"):
        return {"status": None, "error": f"service {name!r} is {state}, not serving"}
    headers = {"Content-Type": "application/json"}
    primary, _secondary = svc.get_keys()
    if primary:
        headers["Authorization"] = f"Bearer {primary}"
    request = urllib.request.Request(uri, data=body, headers=headers, method="POST")
    timeout = float(svc.config.get("scoringTimeoutMs", 60000)) / 1000 + 10
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, answer = r.status, r.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read(MAX_ANSWER + 1)
    except OSError as e:
        return {"status": None, "error": f"cannot reach service {name!r} at {uri}: {e}"}
    return {
        "status": status,
        "body": answer[:MAX_ANSWER].decode("utf-8", "replace"),
        "ms": round((time.perf_counter() - t0) * 1000, 1),
        "truncated": len(answer) > MAX_ANSWER,
    }
