import os
import shutil
import sqlite3
import stat
import subprocess

import pytest
from click.testing import CliRunner

from mlws import Experiment, ScriptRunConfig, Workspace
from mlws.cli import cli
from mlws.errors import UserErrorException
from mlws.keyvault import KeyvaultKeyError, SecretNotFound, key_path

SECRET = "s3cr3t-value-that-must-not-leak"


def test_set_get_list_delete(ws):
    kv = ws.get_default_keyvault()
    kv.set_secret("db-password", SECRET)
    kv.set_secrets({"token": "t1", "other": "o"})
    kv.set_secret("token", "t2")  # replace
    assert kv.get_secret("db-password") == SECRET
    assert kv.get_secrets(["token", "other"]) == {"token": "t2", "other": "o"}
    assert kv.list_secrets() == [{"name": "db-password"}, {"name": "other"}, {"name": "token"}]
    kv.delete_secret("other")
    with pytest.raises(SecretNotFound):
        kv.get_secret("other")
    with pytest.raises(SecretNotFound):
        kv.delete_secret("other")
    with pytest.raises(UserErrorException):
        kv.set_secret("bad name!", "x")
    with pytest.raises(UserErrorException):
        kv.set_secret("ok", 42)


def test_key_lives_outside_the_workspace_with_mode_0600(ws):
    ws.get_default_keyvault().set_secret("a", SECRET)
    kp = key_path(ws.id)
    assert kp.is_file() and not str(kp).startswith(str(ws.path))
    assert stat.S_IMODE(kp.stat().st_mode) == 0o600


def test_no_secret_value_anywhere_in_the_workspace(ws):
    ws.get_default_keyvault().set_secret("a", SECRET)
    ws.close()
    dump = subprocess.run(
        [
            "python3",
            "-c",
            f"import sqlite3; print('\\n'.join(sqlite3.connect({str(ws.path / 'mlws.db')!r}).iterdump()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CREATE TABLE secrets" in dump and SECRET not in dump
    grep = subprocess.run(
        ["grep", "-r", "-a", "-l", SECRET, str(ws.path)], capture_output=True, text=True
    )
    assert grep.returncode == 1, grep.stdout  # 1 = no match


def test_copied_workspace_without_key_cannot_read(ws, tmp_path, monkeypatch):
    ws.get_default_keyvault().set_secret("a", SECRET)
    ws.close()
    copy = tmp_path / "copy"
    shutil.copytree(ws.path, copy)
    # another machine: another HOME, so no key
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    with Workspace(copy) as other:
        kv = other.get_default_keyvault()
        assert kv.list_secrets() == [{"name": "a"}]  # names are not secret
        with pytest.raises(KeyvaultKeyError, match="import-key"):
            kv.get_secret("a")
        with pytest.raises(KeyvaultKeyError):
            kv.set_secret("b", "x")  # must not create a second, different key
        assert not key_path(other.id).exists()


def test_export_import_key(ws, tmp_path, monkeypatch):
    kv = ws.get_default_keyvault()
    kv.set_secret("a", SECRET)
    exported = kv.export_key()
    monkeypatch.setenv("HOME", str(tmp_path / "teammate"))
    with Workspace(ws.path) as mate:
        mkv = mate.get_default_keyvault()
        from cryptography.fernet import Fernet

        with pytest.raises(KeyvaultKeyError, match="does not open"):
            mkv.import_key(Fernet.generate_key().decode())
        assert not key_path(mate.id).exists()
        with pytest.raises(UserErrorException):
            mkv.import_key("not a key")
        mkv.import_key(exported)
        assert mkv.get_secret("a") == SECRET


def test_wrong_key_from_environment(ws, monkeypatch):
    ws.get_default_keyvault().set_secret("a", SECRET)
    from cryptography.fernet import Fernet

    monkeypatch.setenv("MLWS_KEYVAULT_KEY", Fernet.generate_key().decode())
    with Workspace(ws.path) as again, pytest.raises(KeyvaultKeyError, match="does not open"):
        again.get_default_keyvault().get_secret("a")


def test_run_get_secret_inside_a_submitted_run(ws, tmp_path):
    ws.get_default_keyvault().set_secret("api-token", SECRET)
    src = tmp_path / "src"
    src.mkdir()
    (src / "use.py").write_text(
        "from mlws import Run\nrun = Run.get_context()\nv = run.get_secret('api-token')\n"
        f"run.log('secret_ok', v == {SECRET!r})\nprint('length', len(v))\n"
    )
    run = Experiment(ws, "kv").submit(ScriptRunConfig(src, "use.py"))
    run.wait_for_completion(timeout=60)
    assert run.get_metrics() == {"secret_ok": True}
    assert SECRET not in "".join(run.iter_log())


def test_cli_secret_commands(ws, tmp_path):
    r = CliRunner()
    assert r.invoke(cli, ["secret", "set", "pw", "--value", SECRET]).exit_code == 0
    assert r.invoke(cli, ["secret", "set", "tok"], input="from-stdin\n").exit_code == 0
    assert r.invoke(cli, ["secret", "get", "pw"]).output.strip() == SECRET
    assert r.invoke(cli, ["secret", "get", "tok"]).output.strip() == "from-stdin"
    listed = r.invoke(cli, ["secret", "list", "--json"]).output
    assert '"pw"' in listed and SECRET not in listed
    keyfile = tmp_path / "key.txt"
    assert r.invoke(cli, ["secret", "export-key", "-o", str(keyfile)]).exit_code == 0
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert r.invoke(cli, ["secret", "import-key", str(keyfile)]).exit_code == 0
    assert r.invoke(cli, ["secret", "delete", "pw"]).exit_code == 0
    res = r.invoke(cli, ["secret", "get", "pw"])
    assert res.exit_code == 1 and res.output.startswith("Error: no secret named 'pw'")
    res = r.invoke(cli, ["secret", "set", "bad name", "--value", "x"])
    assert res.exit_code == 1 and "invalid secret name" in res.output


def test_secrets_table_comes_from_a_migration(ws):
    conn = sqlite3.connect(ws.path / "mlws.db")
    names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names[:2] == ["0001_initial", "0002_secrets"]
