"""Checking what a user says about an ssh host: its address, paths on it, a private key.

Shared by the ``ssh`` compute target (:mod:`mlws.compute.ssh`) and the ``ssh`` datastore
(:mod:`mlws.sshstore`), which must not import the compute package for it. Each check raises the
caller's error class (``error=``), so a bad host is a ``ComputeTargetException`` when attaching a
target and a ``UserErrorException`` when registering a datastore.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import ComputeTargetException, MlwsError

# Host names and users reach ssh's command line (and rsync's): plain characters only.
_HOST = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d+))?"
)
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")


def parse_host(
    spec: str,
    username: str | None,
    port: int | None,
    error: type[MlwsError] = ComputeTargetException,
) -> dict[str, Any]:
    """``{"host", "port", "user"}`` of ``host``, ``host:port`` or ``user@host:port`` (user and
    port default to ``username`` and ``port``). :raises error: anything ssh could misread."""
    m = _HOST.fullmatch(str(spec).strip())
    if not m:
        raise error(f"invalid host {spec!r}: expected host, host:port or user@host:port")
    user = m["user"] or username
    if user is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", str(user)):
        raise error(f"invalid username {user!r}")
    if user is not None and str(user).startswith("-"):
        raise error(f"invalid username {user!r}: it may not start with '-'")
    if m["host"].startswith("-"):
        raise error(f"invalid host {spec!r}: it may not start with '-'")
    port = m["port"] or port
    if port is not None and not (str(port).isdigit() and 1 <= int(port) <= 65535):
        # Checked here, or a 20-digit port is stored and fails every connection later.
        raise error(f"invalid port {port!r} for host {spec!r}: a TCP port is 1 to 65535")
    return {"host": m["host"], "port": None if port is None else int(port), "user": user}


def check_host_path(
    value: Any, what: str, absolute: bool = False, error: type[MlwsError] = ComputeTargetException
) -> str:
    """A path for a host's shell and rsync: plain characters only (no '~', spaces or quotes),
    never an option; ``absolute``: from the root. :raises error:"""
    text = str(value)
    if absolute and not (text.startswith("/") and _SAFE_PATH.fullmatch(text)):
        raise error(f"{what} must be an absolute path on the hosts, got {value!r}")
    if not _SAFE_PATH.fullmatch(text) or text.startswith("-"):
        raise error(
            f"{what} must be a plain path (letters, digits, '.', '_', '-', '/'), got {value!r}"
        )
    return text


def read_key(
    path: Path, passphrase: str | None, error: type[MlwsError] = ComputeTargetException
) -> str:
    """The private key in ``path``, decrypted with ``passphrase``, as OpenSSH PEM text.
    :raises error: unreadable, not a key, a wrong passphrase, a kind ssh cannot use here."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as e:
        raise error(f"cannot read private_key_file {path}: {e.strerror}") from None
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(data, passphrase.encode() if passphrase else None)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(
                data, passphrase.encode() if passphrase else None
            )
        except (ValueError, TypeError) as e:
            raise error(
                f"{path} is not a private key ssh can use, or the passphrase is wrong: {e}"
            ) from None
    except TypeError as e:  # a passphrase given for a plain key, or missing for an encrypted one
        raise error(f"{path}: {e}") from None
    except UnsupportedAlgorithm as e:  # e.g. a security-key (-sk) key: needs its device
        raise error(
            f"{path}: this kind of key cannot be used by mlws ({e}); use an ed25519 or RSA key"
        ) from None
    # Stored decrypted (the key vault encrypts it at rest): BatchMode ssh cannot ask for a
    # passphrase, and the passphrase need not be kept anywhere.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
