"""This machine's identity: which computer (and which boot of it) a process runs on.

Ground floor: imports nothing of mlws. A shared folder is mounted on several machines, and a
hostname alone does not tell them apart (cloned VMs, containers, "localhost"), so a machine is
its hostname, ``/etc/machine-id`` (stable across reboots) and the kernel's boot id (new at every
boot: a process recorded under an older boot id cannot be alive any more).
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    """Which computer a process runs on, and which boot of it (see the module docstring)."""

    hostname: str
    machine_id: str
    boot_id: str

    @property
    def key(self) -> str:
        """The machine (not the boot): ``<hostname>/<machine id>``."""
        return f"{self.hostname}/{self.machine_id}"

    def same_machine(self, other: Machine) -> bool:
        """Whether ``other`` is this computer, whichever boot."""
        return self.key == other.key

    def same_boot(self, other: Machine) -> bool:
        """Whether ``other`` is this computer in this same boot: only then can a pid recorded there
        name a live process here."""
        return self.key == other.key and self.boot_id == other.boot_id

    def as_dict(self) -> dict[str, str]:
        """The JSON form, as recorded with runs and leases."""
        return {"hostname": self.hostname, "machine_id": self.machine_id, "boot_id": self.boot_id}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Machine:
        """The machine recorded by :meth:`as_dict`; missing fields are empty strings (records from
        older versions)."""
        return cls(
            str(d.get("hostname", "")), str(d.get("machine_id", "")), str(d.get("boot_id", ""))
        )


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _cached() -> Machine:
    machine_id = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")
    boot_id = _read("/proc/sys/kernel/random/boot_id")
    return Machine(socket.gethostname(), machine_id or "unknown", boot_id or "unknown")


def this_machine() -> Machine:
    """This machine, read once per process (a fork keeps the parent's, which is the same)."""
    return _cached()


def process_user() -> str:
    """The name of the user this process runs as, or the uid as text when it has no name (e.g. a
    container's user missing from ``/etc/passwd``)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())
