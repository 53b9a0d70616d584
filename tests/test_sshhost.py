"""mlws.sshhost: the ssh host checks shared by the ssh compute target and the ssh datastore."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlws.errors import ComputeTargetException, UserErrorException
from mlws.sshhost import check_host_path, parse_host


def test_sshhost_does_not_import_the_compute_package() -> None:
    code = "import sys, mlws.sshhost; print(any(m.startswith('mlws.compute') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parse_host_and_paths_raise_the_callers_error() -> None:
    assert parse_host("alice@gpu1:2222", None, None) == {
        "host": "gpu1",
        "port": 2222,
        "user": "alice",
    }
    assert parse_host("gpu1", "bob", 22)["user"] == "bob"
    with pytest.raises(ComputeTargetException, match="invalid host"):
        parse_host("-oProxyCommand=x", None, None)
    with pytest.raises(UserErrorException, match="a TCP port is 1 to 65535"):
        parse_host("gpu1:70000", None, None, error=UserErrorException)
    assert check_host_path("/opt/py/bin/python", "python_path", absolute=True)
    with pytest.raises(UserErrorException, match="plain path"):
        check_host_path("~/data", "path", error=UserErrorException)
