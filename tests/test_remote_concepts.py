"""Secrets, environments and metadata edits on a remote workspace (``mlws serve``): the same
classes as locally, the key vault's key kept on the server, roles enforced (a reader sees no
secret, a contributor no credential, only an owner deletes), refused requests change nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from helpers import invoke, one_error_line, served_workspace, workspace_fingerprint

from mlws import Environment, Experiment, Model, ScriptRunConfig, Workspace
from mlws.errors import (
    EnvironmentNotFound,
    Forbidden,
    ModelNotFound,
    PropertyConflict,
    SecretNotFound,
    UserErrorException,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (server, ws path, tokens)
    with served_workspace(tmp_path_factory.mktemp("concepts")) as served:
        yield served


@pytest.fixture
def as_role(served, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201 - role -> Workspace
    server, _ws_path, tokens = served
    monkeypatch.delenv("MLWS_TOKEN", raising=False)
    opened: list[Workspace] = []

    def open_as(role: str) -> Workspace:
        opened.append(Workspace(server.url, token=tokens[role]))
        return opened[-1]

    yield open_as
    for ws in opened:
        ws.close()


def _cli(token: str, *args: str, input: str | None = None):  # noqa: ANN202, A002 - a Result
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLWS_TOKEN", token)
        return invoke(*args, input=input)


def test_secrets_through_the_server_by_role(served, as_role, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    kv = as_role("contributor").get_default_keyvault()
    kv.set_secret("db-password", "hunter2")
    kv.set_secrets({"api-key": "k1", "other": "o"})
    assert kv.get_secret("db-password") == "hunter2"
    assert kv.get_secrets(["api-key", "other"]) == {"api-key": "k1", "other": "o"}
    assert [s["name"] for s in kv.list_secrets()] == ["api-key", "db-password", "other"]
    # The key stays with the server: nothing on this machine (its HOME) holds it.
    assert not list((Path(os.environ["HOME"]) / ".config" / "mlws").glob("keys/*"))
    with Workspace(ws_path) as local:  # encrypted at rest in the server's catalog
        stored = local.catalog.scalar("SELECT value FROM secrets WHERE name = 'db-password'")
        assert b"hunter2" not in bytes(stored)
    with pytest.raises(SecretNotFound):
        kv.get_secret("nope")
    with pytest.raises(UserErrorException, match="invalid secret name"):
        kv.set_secret("bad name", "x")
    # A contributor never reads or replaces a credential (the ssh key of a compute target).
    owner_kv = as_role("owner").get_default_keyvault()
    owner_kv.set_secret("compute-gpu1", "PRIVATE KEY")
    with pytest.raises(Forbidden, match="owner"):
        kv.get_secret("compute-gpu1")
    with pytest.raises(Forbidden, match="owner"):
        kv.set_secret("compute-gpu1", "mine now")
    assert owner_kv.get_secret("compute-gpu1") == "PRIVATE KEY"
    # A reader sees nothing of the vault; a contributor deletes nothing; nothing changes.
    before = workspace_fingerprint(ws_path)
    reader_kv = as_role("reader").get_default_keyvault()
    for call in (
        lambda: reader_kv.get_secret("db-password"),
        reader_kv.list_secrets,
        lambda: reader_kv.set_secret("db-password", "x"),
        lambda: kv.delete_secret("db-password"),
    ):
        with pytest.raises(Forbidden):
            call()
    status, body = server.api("POST", "/secrets/values", tokens["reader"], {"names": ["other"]})
    assert status == 403 and "k1" not in json.dumps(body)
    status, body = server.api("PUT", "/secrets", tokens["contributor"], {"secrets": {"a": 1}})
    assert status == 400 and "must be a string" in body["error"]["message"]
    assert workspace_fingerprint(ws_path) == before
    owner_kv.delete_secret("other")
    with pytest.raises(SecretNotFound):
        owner_kv.delete_secret("other")
    # The CLI, with -w URL.
    out = _cli(tokens["contributor"], "-w", server.url, "secret", "set", "cli-s", input="v\n")
    assert out.exit_code == 0, out.output
    out = _cli(tokens["contributor"], "-w", server.url, "secret", "get", "cli-s")
    assert out.output.strip() == "v"
    line = one_error_line(_cli(tokens["reader"], "-w", server.url, "secret", "get", "cli-s"))
    assert "403" not in line and "contributor" in line


def test_environments_registered_on_the_server(served, as_role) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    ws = as_role("contributor")
    env = Environment("team-py")
    env.python.interpreter_path = sys.executable
    env.environment_variables = {"TEAM": "blue"}
    assert env.register(ws).version == "1"
    assert env.register(ws).version == "1"  # the same definition: the same version
    env.environment_variables = {"TEAM": "red"}
    assert env.register(ws).version == "2"
    got = Environment.get(ws, "team-py")
    assert (got.version, got.environment_variables) == ("2", {"TEAM": "red"})
    assert Environment.get(ws, "team-py", version=1).environment_variables == {"TEAM": "blue"}
    assert list(Environment.list(as_role("reader"))) == ["team-py"]
    status, page = server.api("GET", "/environments/team-py/versions", tokens["reader"])
    assert status == 200 and [v["version"] for v in page["value"]] == ["2", "1"]
    assert page["value"][0]["createdBy"] == "contributor"
    with pytest.raises(EnvironmentNotFound):
        Environment.get(ws, "team-py", version=9)
    with pytest.raises(EnvironmentNotFound):
        Environment.get(ws, "never")
    before = workspace_fingerprint(ws_path)
    with pytest.raises(Forbidden):
        Environment("by-reader").register(as_role("reader"))
    bad = {"python": {"condaDependencies": {"pip": [1]}}}
    status, body = server.api("POST", "/environments/x/versions", tokens["contributor"], bad)
    assert status == 400 and "list of strings" in body["error"]["message"]
    status, body = server.api("POST", "/environments/bad%20name/versions", tokens["owner"], {})
    assert status == 400 and "invalid environment name" in body["error"]["message"]
    assert workspace_fingerprint(ws_path) == before
    out = _cli(tokens["reader"], "-w", server.url, "environment", "list")
    assert out.exit_code == 0 and "team-py" in out.output


SCRIPT = """
import os, sys
from mlws import Run
run = Run.get_context()
run.log("team", os.environ.get("TEAM", "none"))
run.log("secret", run.get_secret("db-password"))
run.fail("the data was bad", "BadData")
"""


def test_submitted_run_uses_a_registered_environment_reads_secrets_and_fails(
    served,
    as_role,
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
) -> None:
    server, _ws_path, tokens = served
    monkeypatch.setenv("MLWS_TOKEN", tokens["contributor"])
    ws = as_role("contributor")
    env = Environment("run-env")
    env.python.interpreter_path = sys.executable
    env.environment_variables = {"TEAM": "green"}
    env.register(ws)
    ws.get_default_keyvault().set_secret("db-password", "s3cret")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    config = ScriptRunConfig(src, "train.py", environment="run-env")
    run = Experiment(ws, "renv").submit(config)
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed", details
    assert details["error"]["error"]["code"] == "BadData"
    assert "the data was bad" in details["error"]["error"]["message"]
    assert run.get_metrics() == {"team": "green", "secret": "s3cret"}


def test_model_and_run_metadata_edits(served, as_role, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    ws = as_role("contributor")
    (tmp_path / "w.bin").write_bytes(b"weights")
    model = Model.register(ws, tmp_path / "w.bin", "meta", tags={"a": "1", "b": "2"})
    model.add_tags({"c": 3})
    model.remove_tags("a")
    model.add_properties({"p": "1"})
    with pytest.raises(PropertyConflict):
        model.add_properties({"p": "2"})
    model.update(description="better")
    fresh = Model(ws, "meta")
    assert fresh.tags == {"b": "2", "c": "3"} and fresh.properties == {"p": "1"}
    assert fresh.description == "better" and model.description == "better"
    model.update(tags={"only": "this"})
    assert Model(ws, "meta").tags == {"only": "this"}
    run = Experiment(ws, "meta").start_logging(tags={"x": "1", "y": "2"})
    run.remove_tags(["x", "absent"])
    run.display_name = "renamed"
    assert run.display_name == "renamed" and ws.get_run(run.id).display_name == "renamed"
    assert run.get_tags() == {"y": "2"}
    # A reader changes nothing; a contributor deletes nothing; bad input is one line.
    before = workspace_fingerprint(ws_path)
    reader = as_role("reader")
    for call in (
        lambda: Model(reader, "meta").add_tags({"r": "1"}),
        lambda: reader.get_run(run.id).remove_tags("y"),
        lambda: setattr(reader.get_run(run.id), "display_name", "mine"),
        lambda: Model(ws, "meta").delete(),
    ):
        with pytest.raises(Forbidden):
            call()
    path = "/models/meta/versions/1"
    for body in ({"addTags": {"a": 1}, "removeTags": ["a"]}, {"nope": 1}, {}):
        status, answer = server.api("PATCH", path, tokens["contributor"], body)
        assert status == 400, answer
    status, answer = server.api("PATCH", f"/runs/{run.id}", tokens["owner"], {"displayName": " "})
    assert status == 400
    assert workspace_fingerprint(ws_path) == before
    run.complete()
    owner = as_role("owner")
    Model(owner, "meta").delete()
    with pytest.raises(ModelNotFound):
        Model(owner, "meta", version=1)
    out = _cli(tokens["contributor"], "-w", server.url, "model", "list")
    assert out.exit_code == 0 and "meta" not in out.output
