"""``python -m mlws.server WORKSPACE [--host H] [--port P] [--certfile F --keyfile F]
[--insecure] [--max-body BYTES] [--run-lease-s S]``: the server process that ``mlws serve`` starts or becomes."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve until stopped; a refusal is one ``Error:`` line, exit 1."""
    from ..errors import MlwsError
    from .process import DEFAULT_PORT, serve

    p = argparse.ArgumentParser(prog="python -m mlws.server")
    p.add_argument("workspace")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--certfile")
    p.add_argument("--keyfile")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--max-body", type=int)
    p.add_argument("--run-lease-s", type=float)
    a = p.parse_args(argv)
    try:
        serve(
            a.workspace,
            host=a.host,
            port=a.port,
            certfile=a.certfile,
            keyfile=a.keyfile,
            insecure=a.insecure,
            max_body=a.max_body,
            run_lease_s=a.run_lease_s,
        )
    except MlwsError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
