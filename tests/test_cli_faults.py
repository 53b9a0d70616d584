"""CLI faults a new user hit (issue 11, section 2): a single-file datastore upload, and
``environment show`` printing JSON without ``--json``."""

import json
from pathlib import Path

from helpers import invoke, one_error_line, write


def _ws(tmp_path: Path) -> str:
    ws = str(tmp_path / "ws")
    assert invoke("workspace", "create", ws).exit_code == 0
    return ws


def test_datastore_upload_of_a_single_file(tmp_path):
    ws = _ws(tmp_path)
    f = write(tmp_path / "src" / "iris.csv", "a,b\n1,2\n")
    store = tmp_path / "store"
    store.mkdir()
    assert invoke("-w", ws, "datastore", "register", "lab", str(store)).exit_code == 0

    out = invoke("-w", ws, "datastore", "upload", "lab", str(f), "-t", "data/v1")
    assert out.exit_code == 0, out.output
    assert "Uploaded 1 file(s)" in out.output
    assert (store / "data" / "v1" / "iris.csv").read_text() == "a,b\n1,2\n"

    # without -t: the datastore's root; there already, so kept unless --overwrite
    assert invoke("-w", ws, "datastore", "upload", "lab", str(f)).exit_code == 0
    assert (store / "iris.csv").read_text() == "a,b\n1,2\n"
    f.write_text("new\n")
    again = invoke("-w", ws, "datastore", "upload", "lab", str(f))
    assert "kept 1 already there" in again.output
    assert (store / "iris.csv").read_text() == "a,b\n1,2\n"
    invoke("-w", ws, "datastore", "upload", "lab", str(f), "--overwrite")
    assert (store / "iris.csv").read_text() == "new\n"


def test_datastore_upload_of_nothing_is_one_line(tmp_path):
    ws = _ws(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    invoke("-w", ws, "datastore", "register", "lab", str(store))
    out = invoke("-w", ws, "datastore", "upload", "lab", str(tmp_path / "missing.csv"))
    assert out.exit_code == 1
    assert "missing.csv" in one_error_line(out)
    assert list(store.iterdir()) == []


def test_environment_show_is_human_unless_json(tmp_path):
    ws = _ws(tmp_path)
    made = invoke("-w", ws, "environment", "create", "tab", "--pip", "tabulate", "--env", "A=1")
    assert made.exit_code == 0, made.output

    human = invoke("-w", ws, "environment", "show", "tab")
    assert human.exit_code == 0, human.output
    text = human.output
    assert not text.lstrip().startswith("{"), text
    lines = text.splitlines()
    assert any(ln.split()[:2] == ["name", "tab"] for ln in lines), text
    assert any(ln.split()[:2] == ["kind", "managed"] for ln in lines), text
    assert any("tabulate" in ln and ln.split()[0] == "pip" for ln in lines), text
    assert any(ln.split()[:2] == ["built", "no"] for ln in lines), text

    data = json.loads(invoke("-w", ws, "environment", "show", "tab", "--json").output)
    assert data["name"] == "tab" and data["build"]["built"] is False
