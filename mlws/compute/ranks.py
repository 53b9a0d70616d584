"""The rank launcher of a distributed run: ``python -m mlws.compute.ranks SPEC -- ARGV...``.

A run whose definition has ``"distributed"`` (:func:`mlws.distributed.layout`) is started, on
any target, as this launcher instead of its script (``compute.script.script_argv`` wraps the
script's command line). To the run's supervisor (or the ``ssh`` agent, or a Dask task) the
launcher *is* the script: one process in its own process group, its output in
``logs/driver.log``, its exit status the run's outcome. It does what ``torchrun`` does:

- starts one process per rank with ``ARGV``, each in its own process group, each killed when the
  launcher dies (``PR_SET_PDEATHSIG``), with the variables of :func:`rank_env`;
- keeps each rank's output in ``logs/std_log_process_<rank>.txt`` (v1's per-process log name)
  and copies rank 0's into its own output, so ``driver.log`` (``mlws run logs -f``,
  ``wait_for_completion(show_output=True)``) shows rank 0;
- when a rank fails (non-zero exit, killed), stops the others (SIGTERM to each rank's process
  group, SIGKILL after :data:`STOP_GRACE_S`) and exits failing, its last line naming the rank;
- on SIGTERM (a cancel) passes it to every rank's group and ends when they have;
- for TensorFlow, ends once every worker has ended: parameter servers serve until stopped.

The run's channel home (``MLWS_SECRETS_FDS``: secrets, and on an ssh host registered models)
goes to the first rank on each host only (rank 0 on one machine): one pipe pair cannot tell
whose answer is whose.

On one machine the launcher starts every rank and picks ``MASTER_PORT``; on a node of a
multi-host ``ssh`` run (``compute.sshnodes``) the layout names this node's ranks
(``nodeRanks``) and where they meet (``masterAddr``, ``masterPort``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

#: Seconds the other ranks have between SIGTERM and SIGKILL once a rank has failed: they are
#: usually blocked in a collective with the dead rank, and a polite stop rarely takes longer.
STOP_GRACE_S = float(os.environ.get("MLWS_RANK_STOP_GRACE_S", "3"))
#: The per-rank log, in the run's ``logs/`` (v1 wrote ``user_logs/std_log_process_<N>.txt``).
RANK_LOG = "std_log_process_{rank}.txt"
#: The address ranks meet at when every rank runs on this machine.
LOOPBACK = "127.0.0.1"


def launcher_argv(spec: dict[str, Any], argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` as the ranks ``spec`` describes (this Python, which
    has mlws; the ranks run ``argv`` with the run's own interpreter)."""
    return [sys.executable, "-m", "mlws.compute.ranks", json.dumps(spec), "--", *argv]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct ports free on ``host`` now (held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rank_env(
    spec: dict[str, Any], rank: int, master_addr: str, master_port: int, ports: list[int]
) -> dict[str, str]:
    """The variables rank ``rank`` of ``spec`` gets: ``torchrun``'s (``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
    ``NODE_RANK``, ``GROUP_RANK``, ``GROUP_WORLD_SIZE``, ``ROLE_RANK``, ``ROLE_WORLD_SIZE``)
    for every kind; Open MPI's ``OMPI_COMM_WORLD_*`` (and ``PMI_RANK``/``PMI_SIZE``) for
    ``mpi``; ``TF_CONFIG`` for ``tensorflow`` (``ports``: one per task, in rank order)."""
    per, world, nodes = int(spec["perNode"]), int(spec["worldSize"]), int(spec["nodeCount"])
    node, local = divmod(rank, per)
    env = {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "RANK": str(rank),
        "LOCAL_RANK": str(local),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(per),
        "NODE_RANK": str(node),
        "GROUP_RANK": str(node),
        "GROUP_WORLD_SIZE": str(nodes),
        "ROLE_RANK": str(rank),
        "ROLE_WORLD_SIZE": str(world),
    }
    kind = spec["kind"]
    if kind == "pytorch":
        env["MLWS_DIST_BACKEND"] = str(spec.get("backend") or "")
    elif kind == "mpi":
        env.update(
            {
                "OMPI_COMM_WORLD_RANK": str(rank),
                "OMPI_COMM_WORLD_SIZE": str(world),
                "OMPI_COMM_WORLD_LOCAL_RANK": str(local),
                "OMPI_COMM_WORLD_LOCAL_SIZE": str(per),
                "OMPI_COMM_WORLD_NODE_RANK": str(node),
                "PMI_RANK": str(rank),
                "PMI_SIZE": str(world),
            }
        )
    elif kind == "tensorflow":
        workers = int(spec["workers"])
        addrs = [f"{master_addr}:{p}" for p in ports]
        cluster: dict[str, list[str]] = {"worker": addrs[:workers]}
        if addrs[workers:]:
            cluster["ps"] = addrs[workers:]
        task = (
            {"type": "worker", "index": rank}
            if rank < workers
            else {"type": "ps", "index": rank - workers}
        )
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task, "environment": "cloud"})
    return env


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-rc} ({name})"
    return f"exited with code {rc}"


class _Ranks:
    """The rank processes of this launcher, and how they are stopped."""

    def __init__(self, spec: dict[str, Any], argv: list[str], logs: Path) -> None:
        from ..processes import die_with_parent

        self.spec = spec
        world = int(spec["worldSize"])
        nodes_here = spec.get("nodeRanks") or list(range(int(spec["nodeCount"])))
        per = int(spec["perNode"])
        self.ranks = [n * per + i for n in nodes_here for i in range(per)]
        addr = spec.get("masterAddr") or LOOPBACK
        ports = free_ports(world if spec["kind"] == "tensorflow" else 1, LOOPBACK)
        port = int(spec.get("masterPort") or ports[0])
        self.header = (
            f"mlws: {spec['kind']} job, {world} rank(s) ({spec['nodeCount']} node(s) x {per}),"
            f" ranks {self.ranks[0]}-{self.ranks[-1]} here, meeting at {addr}:{port};"
            f" each rank's output in logs/{RANK_LOG.format(rank='<rank>')}\n"
        )
        base = dict(os.environ)
        channel = base.pop("MLWS_SECRETS_FDS", None)
        fds = tuple(int(x) for x in channel.split(",")) if channel else ()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs = logs
        for rank in self.ranks:
            env = {**base, **rank_env(spec, rank, addr, port, ports)}
            pass_fds: tuple[int, ...] = ()
            if rank == self.ranks[0] and fds:  # each host's first rank: rank 0 on one host
                env["MLWS_SECRETS_FDS"] = channel or ""
                pass_fds = fds
            with open(logs / RANK_LOG.format(rank=rank), "ab") as out:
                try:
                    self.procs[rank] = subprocess.Popen(
                        argv,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own group: stopped whole, with what it starts
                        preexec_fn=die_with_parent,  # and never outlives this launcher
                        pass_fds=pass_fds,
                    )
                except OSError as e:
                    self.signal_all(signal.SIGKILL)
                    raise SystemExit(f"mlws: cannot start rank {rank}: {e.strerror}") from None

    def live(self) -> list[int]:
        return [r for r, p in self.procs.items() if p.returncode is None]

    def signal_all(self, sig: int, ranks: list[int] | None = None) -> None:
        for r in self.live() if ranks is None else ranks:
            try:
                os.killpg(self.procs[r].pid, sig)
            except OSError:
                pass

    def stop(self, ranks: list[int], follow: Any) -> None:
        """SIGTERM to ``ranks``' groups, SIGKILL after :data:`STOP_GRACE_S`; returns once they
        have all ended."""
        self.signal_all(signal.SIGTERM, ranks)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(self.procs[r].poll() is None for r in ranks):
            if time.monotonic() > deadline:
                self.signal_all(signal.SIGKILL, ranks)
            time.sleep(0.02)
            follow()


class _Follower:
    """Copies rank 0's new log text to this process's output (the run's ``driver.log``)."""

    def __init__(self, path: Path, out: IO[bytes]) -> None:
        self.path = path
        self.out = out
        self.offset = 0

    def __call__(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return
        if data:
            self.offset += len(data)
            self.out.write(data)
            self.out.flush()


def run(spec: dict[str, Any], argv: list[str], logs: Path = Path("logs")) -> int:
    """Start the ranks of ``spec`` here running ``argv`` and watch them to their end (see the
    module docstring); the exit status for the launcher: 0 when every rank succeeded, else the
    failed rank's code (128 + its signal when killed)."""
    import select

    logs.mkdir(parents=True, exist_ok=True)
    out = sys.stdout.buffer
    stopping: list[int] = []

    def on_term(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    # Installed before the ranks start: a cancel in between must not kill only the launcher.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    ranks = _Ranks(spec, argv, logs)
    out.write(ranks.header.encode())
    out.flush()
    follow = _Follower(logs / RANK_LOG.format(rank=ranks.ranks[0]), out)
    pidfds = {}
    for r, p in ranks.procs.items():
        try:
            pidfds[os.pidfd_open(p.pid)] = r
        except (AttributeError, OSError):
            pass
    # TensorFlow: the job is its workers; parameter servers serve until they are stopped.
    essential = set(ranks.ranks)
    if spec["kind"] == "tensorflow":
        essential = {r for r in ranks.ranks if r < int(spec["workers"])}
    failed: tuple[int, int] | None = None
    forwarded = False
    try:
        while ranks.live():
            if pidfds:
                select.select(list(pidfds), [], [], 0.1)
            else:
                time.sleep(0.05)
            follow()
            if stopping and not forwarded:
                forwarded = True
                ranks.signal_all(signal.SIGTERM)
            for r, p in ranks.procs.items():
                if p.returncode is None and p.poll() is not None:
                    # An ended rank's pidfd stays readable: out of the select, or it spins.
                    for fd in [fd for fd, fr in pidfds.items() if fr == r]:
                        del pidfds[fd]
                        os.close(fd)
                    if p.returncode != 0 and failed is None and not stopping:
                        failed = (r, p.returncode)
            if failed is not None:
                out.write(
                    f"mlws: rank {failed[0]} {_describe(failed[1])}; stopping the other ranks\n".encode()
                )
                out.flush()
                ranks.stop(ranks.live(), follow)
                break
            if not stopping and essential and not (essential & set(ranks.live())):
                ranks.stop(ranks.live(), follow)  # only parameter servers are left
    finally:
        ranks.signal_all(signal.SIGKILL)  # anything still running (an exception here)
        for p in ranks.procs.values():
            p.wait()
        for fd in pidfds:
            os.close(fd)
        # What the ranks started in their groups and left behind goes with them.
        for p in ranks.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        follow()
    if failed is not None:
        # The last line of the run's log: the reason its failure names.
        out.write(f"mlws: rank {failed[0]} {_describe(failed[1])}\n".encode())
        out.flush()
        return failed[1] if failed[1] > 0 else 128 - failed[1]
    if stopping:
        return 128 + stopping[0]
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mlws.compute.ranks SPEC -- ARGV...``: run ``ARGV`` as the ranks of the JSON
    layout ``SPEC`` (:func:`mlws.distributed.layout`), logs in ``./logs``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m mlws.compute.ranks SPEC -- ARGV...", file=sys.stderr)
        return 2
    return run(json.loads(args[0]), args[2:])


if __name__ == "__main__":
    sys.exit(main())
