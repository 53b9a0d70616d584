"""``mlws serve``: a model version uploaded over HTTP — blobs first (only the missing ones),
then ``POST /models/{name}/versions`` with the manifest — registered through the library's own
registration, made by the token's user; at most once per ``registrationId``; bad input refused
in one line with nothing stored. A real server subprocess on a free loopback port."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import invoke, server_token, start_server, workspace_fingerprint

from mlws import Model, Workspace


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path: Path):  # noqa: ANN201 - (server, ws path, tokens)
    ws_path = tmp_path / "ws"
    Workspace.create(ws_path, _remember_name=False).close()
    tokens = {role: server_token(ws_path, role, role) for role in ("reader", "contributor")}
    server = start_server("-m", "mlws.server", str(ws_path), "--port", "0")
    try:
        yield server, ws_path, tokens
    finally:
        assert server.stop() == 0, server.lines


def _upload(server, tok: str, files: dict[str, bytes]) -> list[dict]:  # noqa: ANN001
    """Send the blobs the server lacks; the manifest list of ``files``."""
    manifest = [{"path": p, "hash": _digest(d), "size": len(d)} for p, d in files.items()]
    status, ans = server.api(
        "POST", "/blobs/missing", tok, {"blobs": [m["hash"] for m in manifest]}
    )
    assert status == 200, ans
    data = {_digest(d): d for d in files.values()}
    for digest in ans["missing"]:
        assert server.api("PUT", f"/blobs/{digest}", tok, raw=data[digest])[0] == 200
    return manifest


def test_a_model_version_is_uploaded_manifest_first(served, tmp_path: Path) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["contributor"]
    files = {"model/weights.bin": b"w" * 5000, "model/conf/params.json": b'{"lr": 0.1}'}
    manifest = [{"path": p, "hash": _digest(d), "size": len(d)} for p, d in files.items()]
    _upload(server, tok, {"other": b"x"})  # the blob store's lock file exists from here on
    before = workspace_fingerprint(ws_path)
    status, body = server.api("POST", "/models/clf/versions", tok, {"manifest": manifest})
    assert status == 400 and "not stored" in body["error"]["message"]
    assert workspace_fingerprint(ws_path) == before
    _upload(server, tok, files)
    status, v1 = server.api(
        "POST",
        "/models/clf/versions",
        tok,
        {
            "manifest": manifest,
            "description": "first",
            "tags": {"stage": "dev"},
            "properties": {"auc": 0.9},
            "modelFramework": "ScikitLearn",
            "modelFrameworkVersion": "1.5",
        },
    )
    assert status == 201, v1
    assert (v1["id"], v1["version"], v1["path"], v1["createdBy"]) == (
        "clf:1",
        1,
        "model",
        "contributor",
    )
    assert v1["framework"] == "ScikitLearn" and v1["properties"] == {"auc": "0.9"}
    # The second version's blobs are all there: nothing to send but the manifest.
    status, ans = server.api(
        "POST", "/blobs/missing", tok, {"blobs": [m["hash"] for m in manifest]}
    )
    assert ans == {"missing": []}
    assert (
        server.api("POST", "/models/clf/versions", tok, {"manifest": manifest})[1]["version"] == 2
    )
    # One file keeps its name; a stored manifest blob works as well as a list.
    single = _upload(server, tok, {"m.pkl": b"pickle"})
    from mlws.manifests import Entry, canonical_manifest

    stored = canonical_manifest([Entry(e["path"], e["hash"], e["size"]) for e in single])
    server.api("PUT", f"/blobs/{_digest(stored)}", tok, raw=stored)
    status, one = server.api("POST", "/models/one/versions", tok, {"manifest": _digest(stored)})
    assert status == 201 and one["path"] == "m.pkl"
    with Workspace(ws_path) as ws:
        local = Model(ws, "clf", version=1)
        assert local.created_by == "contributor" and local.tags == {"stage": "dev"}
        assert sorted(local.get_file_names()) == ["model/conf/params.json", "model/weights.bin"]
        got = Path(local.download(str(tmp_path / "dl")))
        assert (got / "weights.bin").read_bytes() == files["model/weights.bin"]
        assert Path(Model(ws, "one").download(str(tmp_path / "dl1"))).read_bytes() == b"pickle"
    result = invoke("-w", str(ws_path), "fsck")
    assert result.exit_code == 0, result.output


def test_a_registration_id_registers_once(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["contributor"]
    manifest = _upload(server, tok, {"m.pkl": b"bytes"})
    body = {"manifest": manifest, "registrationId": "reg-1"}
    status, first = server.api("POST", "/models/m/versions", tok, body)
    assert status == 201 and first["version"] == 1 and "duplicate" not in first
    status, again = server.api("POST", "/models/m/versions", tok, body)
    assert status == 201 and again == {**first, "duplicate": True}
    before = workspace_fingerprint(ws_path)
    status, err = server.api("POST", "/models/other/versions", tok, body)
    assert status == 409 and "reg-1" in err["error"]["message"]
    assert err["error"]["innerError"]["code"] == "RegistrationConflict"
    assert workspace_fingerprint(ws_path) == before
    assert (
        server.api("POST", "/models/m/versions", tok, {**body, "registrationId": "reg-2"})[1][
            "version"
        ]
        == 2
    )
    # A deleted version is not handed back: the retry registers a new one.
    with Workspace(ws_path) as ws:
        Model(ws, "m", version=1).delete()
    assert server.api("POST", "/models/m/versions", tok, body)[1]["version"] == 3


def test_bad_uploads_are_one_line_errors_and_store_nothing(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["contributor"]
    good = _upload(server, tok, {"model/a": b"a", "model/b": b"bb"})
    h, n = good[0]["hash"], good[0]["size"]
    before = workspace_fingerprint(ws_path)
    cases = [
        ({"manifest": [{"path": "../x", "hash": h, "size": n}]}, 400, "'..'"),
        ({"manifest": [{"path": "model/../../x", "hash": h, "size": n}]}, 400, "'..'"),
        ({"manifest": [{"path": "/etc/passwd", "hash": h, "size": n}]}, 400, "absolute"),
        ({"manifest": [{"path": "C:/x", "hash": h, "size": n}]}, 400, "absolute"),
        ({"manifest": [{"path": "m\\x", "hash": h, "size": n}]}, 400, "backslash"),
        ({"manifest": [{"path": "m/a", "hash": h, "size": n}] * 2}, 400, "twice"),
        ({"manifest": [{"path": "m/a", "hash": h, "size": 999}]}, 400, "size 999"),
        ({"manifest": [{"path": "m/a", "hash": "sha256:../../x", "size": n}]}, 400, "hash"),
        ({"manifest": [{"path": "m/a", "hash": h, "size": -1}]}, 400, "size"),
        ({"manifest": [{"path": "m/a", "hash": h, "size": True}]}, 400, "size"),
        ({"manifest": [{"path": "m/a", "hash": h, "size": n, "mode": 0o777}]}, 400, "mode"),
        ({"manifest": [{"path": "m/a", "hash": h, "size": n, "owner": "x"}]}, 400, "path, hash"),
        ({"manifest": [{"path": "a", "hash": h, "size": n}, {**good[1], "path": "b"}]}, 400, "one"),
        ({"manifest": [{"path": "a", "hash": h, "size": n}, good[1]]}, 400, "one file"),
        ({"manifest": []}, 400, "non-empty"),
        ({"manifest": 7}, 400, "manifest"),
        ({}, 400, "manifest"),
        ({"manifest": good, "surprise": 1}, 400, "unknown field"),
        ({"manifest": good, "tags": ["x"]}, 400, "tags"),
        ({"manifest": good, "tags": {"": "empty key"}}, 400, "keys"),
        ({"manifest": good, "registrationId": "x" * 65}, 400, "registrationId"),
        ({"manifest": good, "modelFramework": 3}, 400, "modelFramework"),
    ]
    for body, expected, words in cases:
        status, answer = server.api("POST", "/models/clf/versions", tok, body)
        assert status == expected, (body, answer)
        assert set(answer) == {"error"} and "\n" not in answer["error"]["message"]
        assert words in answer["error"]["message"], (words, answer)
    assert server.api("POST", "/models/bad%20name/versions", tok, {"manifest": good})[0] == 400
    assert (
        server.api("POST", "/models/clf/versions", tokens["reader"], {"manifest": good})[0] == 403
    )
    assert server.api("POST", "/models/clf/versions", None, {"manifest": good})[0] == 401
    assert workspace_fingerprint(ws_path) == before


def test_concurrent_uploads_number_versions_without_gap_or_duplicate(served) -> None:  # noqa: ANN001
    server, ws_path, tokens = served
    tok = tokens["contributor"]
    manifest = _upload(server, tok, {"m.pkl": b"shared"})

    def client(c: int) -> list[int]:
        out = []
        for i in range(10):
            status, m = server.api(
                "POST",
                "/models/busy/versions",
                tok,
                {"manifest": manifest, "registrationId": f"c{c}-{i}", "tags": {"c": str(c)}},
            )
            assert status == 201, m
            out.append(m["version"])
        return out

    with ThreadPoolExecutor(4) as pool:
        got = [v for vs in pool.map(client, range(4)) for v in vs]
    assert sorted(got) == list(range(1, 41))
    with Workspace(ws_path) as ws:
        assert sorted(m.version for m in Model.list(ws, name="busy")) == list(range(1, 41))
