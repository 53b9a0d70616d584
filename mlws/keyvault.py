"""The workspace key vault: secrets encrypted at rest, with the key kept outside the workspace.

Values are Fernet tokens (AES-128-CBC + HMAC-SHA256, from ``cryptography``) in the catalog's
``secrets`` table. The key is per workspace and lives in ``~/.config/mlws/keys/<workspace id>``
(mode 0600), or comes from ``MLWS_KEYVAULT_KEY``; it is never written inside the workspace
folder, so a copied or shared folder does not leak secrets. A team shares the key deliberately:
``mlws secret export-key`` / ``import-key``. A sentinel row encrypted with the key lets a wrong
key be told apart from a damaged value.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dirs import user_config_dir, write_atomic
from .errors import KeyvaultKeyError, MlwsError, SecretNotFound, UserErrorException

if TYPE_CHECKING:
    from .workspace import Workspace

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,126}$")
_SENTINEL = "__mlws_key_check__"
ENV_KEY = "MLWS_KEYVAULT_KEY"


def check_secret_name(name: str) -> str:
    """Return ``name`` if it can name a secret (1-127 letters, digits or ``-``, starting with a
    letter or digit, as Azure Key Vault allows; mlws's own check entry is refused).

    :raises UserErrorException: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == _SENTINEL:
        raise UserErrorException(
            f"invalid secret name {name!r}: use 1-127 letters, digits or '-', starting with a "
            "letter or digit (as Azure Key Vault does)"
        )
    return name


def is_credential(name: str) -> bool:
    """Whether ``name`` is where mlws keeps an ssh key: a compute target's (``compute-...``) or
    a datastore's (``datastore-...-private-key``). A run on a host never gets one."""
    return name.startswith("compute-") or (
        name.startswith("datastore-") and name.endswith("-private-key")
    )


def key_path(workspace_id: str) -> Path:
    """Where this machine keeps the key of workspace ``workspace_id``: in the user's config folder,
    never in the workspace, so that a copied or shared workspace folder does not carry the key to
    its secrets."""
    return user_config_dir() / "keys" / workspace_id


class Keyvault:
    """The key vault of a workspace (v1: ``ws.get_default_keyvault()``)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._fernet: Any = None

    # -- the key ------------------------------------------------------------------------------
    def _has_secrets(self) -> bool:
        return bool(self.workspace.catalog.scalar("SELECT count(*) FROM secrets"))

    def _load_key(self) -> bytes | None:
        env = os.environ.get(ENV_KEY)
        if env:
            return env.strip().encode()
        try:
            return key_path(self.workspace.id).read_bytes().strip()
        except FileNotFoundError:
            return None

    def _cipher(self, create: bool) -> Any:
        if self._fernet is not None:
            return self._fernet
        from cryptography.fernet import Fernet, InvalidToken

        key = self._load_key()
        if key is None:
            # Another process may be creating the key right now: it links the key file before
            # it stores the sentinel, so once secrets are seen the key file is there too.
            has_secrets = self._has_secrets()
            key = self._load_key()
            if key is None and (not create or has_secrets):
                raise KeyvaultKeyError(
                    f"the key for workspace {self.workspace.name!r} (id {self.workspace.id}) is not on "
                    f"this machine ({key_path(self.workspace.id)}); get it from whoever shared the "
                    "workspace ('mlws secret export-key') and run 'mlws secret import-key FILE'"
                )
            if key is None:
                key = _create_key(key_path(self.workspace.id))
        try:
            fernet = Fernet(key)
        except (ValueError, TypeError):
            raise KeyvaultKeyError(
                f"the key vault key for workspace {self.workspace.name!r} is malformed"
            ) from None
        sentinel = self.workspace.catalog.scalar(
            "SELECT value FROM secrets WHERE name = ?", (_SENTINEL,)
        )
        if sentinel is None:
            with self.workspace.catalog.write() as conn:
                # The first to store the sentinel sets it; everyone checks the one stored (read
                # back in the same transaction), so a key that does not open it is refused
                # before it encrypts anything.
                conn.execute(
                    "INSERT OR IGNORE INTO secrets (name, value, created, updated)"
                    " VALUES (?, ?, ?, ?)",
                    (_SENTINEL, fernet.encrypt(b"ok"), time.time(), time.time()),
                )
                sentinel = conn.execute(
                    "SELECT value FROM secrets WHERE name = ?", (_SENTINEL,)
                ).fetchone()[0]
        try:
            fernet.decrypt(sentinel)
        except InvalidToken:
            raise KeyvaultKeyError(
                f"the key on this machine does not open the secrets of workspace "
                f"{self.workspace.name!r}; import the right one with 'mlws secret import-key FILE'"
            ) from None
        self._fernet = fernet
        return fernet

    def export_key(self) -> str:
        """The key, to hand to a teammate over a safe channel."""
        self._cipher(create=True)
        key = self._load_key()
        assert key is not None
        return key.decode()

    def import_key(self, key: str) -> None:
        """Install ``key`` for this workspace on this machine; refuses a key that does not open
        the existing secrets, and changes nothing then."""
        from cryptography.fernet import Fernet, InvalidToken

        raw = key.strip().encode()
        try:
            fernet = Fernet(raw)
        except (ValueError, TypeError):
            raise UserErrorException(
                "not a key vault key (expected 44 url-safe base64 characters)"
            ) from None
        sentinel = self.workspace.catalog.scalar(
            "SELECT value FROM secrets WHERE name = ?", (_SENTINEL,)
        )
        if sentinel is not None:
            try:
                fernet.decrypt(sentinel)
            except InvalidToken:
                raise KeyvaultKeyError(
                    f"that key does not open the secrets of workspace {self.workspace.name!r}"
                ) from None
        write_private(key_path(self.workspace.id), raw, private_folder=True)
        self._fernet = None

    # -- secrets ------------------------------------------------------------------------------
    def set_secret(self, name: str, value: str) -> None:
        """Store or replace a secret."""
        self.set_secrets({name: value})

    def set_secrets(self, secrets_batch: dict[str, str]) -> None:
        """Store or replace several secrets in one transaction: all or none. Makes the workspace's
        key on its first secret.

        :raises UserErrorException: a bad name or a value that is not a string (nothing is stored).
        :raises KeyvaultKeyError: the workspace has secrets but this machine lacks their key.
        """
        for name, value in secrets_batch.items():
            check_secret_name(name)
            if not isinstance(value, str):
                raise UserErrorException(f"secret {name!r}: the value must be a string")
        if self.workspace.remote is not None:  # the server encrypts; its key never leaves it
            from .remote.vault import set_secrets

            return set_secrets(self.workspace, secrets_batch)
        fernet = self._cipher(create=True)
        now = time.time()
        rows = [(n, fernet.encrypt(v.encode()), now, now) for n, v in secrets_batch.items()]
        with self.workspace.catalog.write() as conn:
            conn.executemany(
                "INSERT INTO secrets (name, value, created, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                rows,
            )

    def get_secret(self, name: str) -> str:
        """The value of a secret. :raises SecretNotFound:"""
        return self.get_secrets([name])[name]

    def get_secrets(self, secrets: list[str]) -> dict[str, str]:
        """Several secrets at once; in a run, asked of the run's supervisor (see
        ``secrets_for_run``). :raises SecretNotFound:"""
        names = [check_secret_name(n) for n in secrets]
        if not names:
            return {}
        if self.workspace.remote is not None:
            from .remote.vault import get_secrets

            return get_secrets(self.workspace, names)
        if os.environ.get(CHANNEL_ENV) and str(self.workspace.path) == os.environ.get(
            "MLWS_WORKSPACE"
        ):
            return _ask_home(names)
        return self._decrypt(names)

    def _decrypt(self, names: list[str]) -> dict[str, str]:
        from cryptography.fernet import InvalidToken

        rows = self.workspace.catalog.query(
            f"SELECT name, value FROM secrets WHERE name IN ({','.join('?' * len(names))})", names
        )
        found = {r[0]: r[1] for r in rows}
        missing = [n for n in names if n not in found]
        if missing:
            raise SecretNotFound(
                f"no secret named {missing[0]!r} in the key vault of workspace {self.workspace.name!r}"
            )
        fernet = self._cipher(create=False)
        out = {}
        for n in names:
            try:
                out[n] = fernet.decrypt(found[n]).decode()
            except InvalidToken:
                raise KeyvaultKeyError(f"secret {n!r} cannot be decrypted: it is damaged") from None
        return out

    def list_secrets(self) -> list[dict[str, str]]:
        """Names only, as v1: ``[{"name": ...}, ...]``."""
        if self.workspace.remote is not None:
            from .remote.vault import list_secrets

            return list_secrets(self.workspace)
        rows = self.workspace.catalog.query(
            "SELECT name FROM secrets WHERE name != ? ORDER BY name", (_SENTINEL,)
        )
        return [{"name": r[0]} for r in rows]

    def delete_secret(self, name: str) -> None:
        """:raises SecretNotFound:"""
        check_secret_name(name)
        if self.workspace.remote is not None:
            from .remote.vault import delete_secret

            return delete_secret(self.workspace, name)
        with self.workspace.catalog.write() as conn:
            cur = conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise SecretNotFound(f"no secret named {name!r} in workspace {self.workspace.name!r}")


#: In a run: "<write fd>,<read fd>" of the pipe pair to whoever answers for the key vault: the
#: run's supervising process (a local or Dask run), or on an ssh host the agent, which asks the
#: supervising process at home. The key never goes to the run; a run gets the values it asks
#: for, when it asks, and never a credential (``secrets_for_run``).
CHANNEL_ENV = "MLWS_SECRETS_FDS"
_channel_lock = threading.Lock()


def secrets_for_run(workspace: Workspace, names: list[str]) -> dict[str, str]:
    """What a run's script may read: any secret but credentials (``is_credential``: the ssh
    keys of compute targets and datastores, which open other hosts).

    :raises MlwsError: a credential was asked for; :raises SecretNotFound:"""
    names = [check_secret_name(str(n)) for n in names]
    kept = [n for n in names if is_credential(n)]
    if kept:
        whose = "a compute target's" if kept[0].startswith("compute-") else "a datastore's"
        raise MlwsError(f"secret {kept[0]!r} holds {whose} credentials; runs cannot read it")
    # Read here, never through a channel this process may itself have inherited.
    return workspace.get_default_keyvault()._decrypt(names) if names else {}


def serve_run_channel(workspace: Workspace) -> tuple[int, int]:
    """Answer a run's script's secret requests (``secrets_for_run``) from a thread of this
    process; returns the script's ends of the pipe pair ``(write, read)``, to pass to it (as
    ``CHANNEL_ENV``) and then close here. The thread ends when the script closes its end."""
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()

    def serve() -> None:
        with os.fdopen(req_r, "rb") as requests, os.fdopen(resp_w, "wb") as responses:
            _answer(workspace, requests, responses)

    threading.Thread(target=serve, name="mlws-run-secrets", daemon=True).start()
    return req_w, resp_r


#: ``CHANNEL_ENV`` names a folder of FIFOs (``fifo:<folder>``) where fds cannot be passed (a
#: script in a container): ``request`` and ``answer`` in it.
FIFO_PREFIX = "fifo:"


def serve_run_channel_at(workspace: Workspace, folder: Path) -> str:
    """As :func:`serve_run_channel`, through two named FIFOs made in ``folder`` (created
    private, 0700: only this user may ask) for a script that cannot inherit fds (one in a
    container, which sees ``folder`` at the same path); returns the ``CHANNEL_ENV`` value.
    One asking process is served at a time, in turn; the thread lives as long as this
    process."""
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)
    req, resp = folder / "request", folder / "answer"
    os.mkfifo(req, 0o600)
    os.mkfifo(resp, 0o600)

    def serve() -> None:
        while True:
            try:
                # Opening blocks until a script opens its ends (ask_channel, in that order).
                requests = open(req, "rb")
                responses = open(resp, "wb")
            except OSError:
                return  # the working folder is gone
            with requests, responses:
                _answer(workspace, requests, responses)

    threading.Thread(target=serve, name="mlws-run-secrets", daemon=True).start()
    return FIFO_PREFIX + str(folder)


def _answer(workspace: Workspace, requests: Any, responses: Any) -> None:
    """Answer each request line until the asking side closes its end."""
    for line in requests:
        try:
            names = json.loads(line)["names"]
            if not isinstance(names, list):
                raise TypeError
            answer: dict[str, Any] = {"values": secrets_for_run(workspace, names)}
        except MlwsError as e:
            answer = {"error": str(e)}
        except (ValueError, KeyError, TypeError):
            answer = {"error": "malformed request"}
        try:
            responses.write((json.dumps(answer) + "\n").encode())
            responses.flush()
        except OSError:
            return


_fifo_ends: tuple[int, int] | None = None


def _channel_fds() -> tuple[int, int]:
    value = os.environ.get(CHANNEL_ENV, "")
    if value.startswith(FIFO_PREFIX):
        global _fifo_ends
        if _fifo_ends is None:
            folder = Path(value[len(FIFO_PREFIX) :])
            try:  # the serving side opens request first, then answer: the same order here
                w = os.open(folder / "request", os.O_WRONLY)
                r = os.open(folder / "answer", os.O_RDONLY)
            except OSError as e:
                raise KeyvaultKeyError(
                    f"cannot reach the key vault from this process ({e.strerror})"
                ) from None
            _fifo_ends = (w, r)
        return _fifo_ends
    try:
        w, r = (int(x) for x in value.split(","))
    except ValueError:
        raise KeyvaultKeyError(f"{CHANNEL_ENV} is malformed") from None
    return w, r


def ask_channel(request: dict[str, Any]) -> dict[str, Any]:
    """Send one request down this run's channel (``CHANNEL_ENV``) and return the answer: the
    secrets of ``{"names": [..]}``, or on an ssh host a registered model (``{"model": ..}``,
    :mod:`mlws.compute.hostmodels`). One request at a time per process.

    :raises KeyvaultKeyError: no channel here, or nobody answers."""
    with _channel_lock:
        w, r = _channel_fds()
        try:
            os.write(w, (json.dumps(request) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            raise KeyvaultKeyError(
                f"cannot reach the key vault from this process ({e.strerror}); read secrets in"
                " the run's own process (run.get_secret), not in a subprocess it started"
            ) from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise KeyvaultKeyError("the key vault did not answer (the run is ending?)") from None
    if not isinstance(answer, dict):
        raise KeyvaultKeyError("the key vault did not answer (the run is ending?)")
    return answer


def _ask_home(names: list[str]) -> dict[str, str]:
    answer = ask_channel({"names": names})
    if "error" in answer:
        raise SecretNotFound(answer["error"])
    return {n: answer["values"][n] for n in names}


def _create_key(path: Path) -> bytes:
    """Create the workspace's key at ``path`` exactly once, whoever else tries at the same
    moment, and return the key that won. The key is written whole to a temp file and then
    hard-linked to its name: ``link`` fails when the name exists, so of many creators one wins
    and the others read its key (with a plain write-then-rename the last writer would win,
    after the first had already encrypted with its own key)."""
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_atomic(path, Fernet.generate_key(), 0o600, exclusive=True)  # False: another won
    return path.read_bytes().strip()


def write_private(path: Path, data: bytes, private_folder: bool = False) -> None:
    """Write a 0600 file atomically (never readable by others, not even for a moment);
    ``private_folder`` also makes its folder 0700 (the per-user keys folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_folder:
        os.chmod(path.parent, 0o700)
    write_atomic(path, data, mode=0o600)
