"""Distributed runs (issue 12 section 4): ``PyTorchConfiguration``, ``MpiConfiguration`` and
``TensorflowConfiguration`` as ``ScriptRunConfig(distributed_job_config=...)``; one process per
rank started by ``mlws.compute.ranks`` with torchrun's variables; a failed rank fails the run and
stops the others; every rank's log kept; the same on one and on two ssh hosts and in a Dask task;
bad layouts refused with nothing changed."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from helpers import (
    SCRIPT_PRELUDE,
    make_source,
    run_v1_driver,
    submit,
    wait_status,
    wait_until,
    workspace_fingerprint,
)

from mlws import (
    Experiment,
    MpiConfiguration,
    PyTorchConfiguration,
    RunConfiguration,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from mlws.compute import ranks
from mlws.distributed import layout as ranks_layout
from mlws.errors import RunConfigError

#: Ranks meet at MASTER_ADDR:MASTER_PORT over plain TCP (no torch): rank 0 listens, the others
#: connect and send their rank; rank 0 logs the sum. Every rank logs its own "rank" metric.
MEET = """
import socket
from mlws import Run

run = Run.get_context()
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
print(f"rank {rank} of {world} local {os.environ['LOCAL_RANK']} node {os.environ['NODE_RANK']}", flush=True)
run.log("rank", rank)
if rank == 0:
    srv = socket.create_server((addr, port))
    total = 0
    for _ in range(world - 1):
        conn, _a = srv.accept()
        with conn:
            total += int(conn.recv(64).decode())
    run.log("rank_sum", total)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/sum.txt", "w") as f:
        f.write(str(total))
else:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection((addr, port), timeout=5) as c:
                c.sendall(str(rank).encode())
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
"""


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone as far as running goes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# -- configurations ------------------------------------------------------------------------------
def test_v1_signatures_and_defaults():
    pt = PyTorchConfiguration()
    assert (pt.communication_backend, pt.process_count, pt.node_count) == ("Nccl", None, 1)
    mpi = MpiConfiguration()
    assert (mpi.process_count_per_node, mpi.node_count) == (1, 1)
    tf = TensorflowConfiguration()
    assert (tf.worker_count, tf.parameter_server_count) == (1, 1)
    from mlws.distributed import layout

    assert layout(PyTorchConfiguration(process_count=4, node_count=2))["perNode"] == 2
    assert layout(PyTorchConfiguration(node_count=3))["worldSize"] == 3  # one per node
    assert layout(MpiConfiguration(3, 2))["worldSize"] == 6
    assert layout(TensorflowConfiguration(2, 1))["worldSize"] == 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PyTorchConfiguration(node_count=0), "node_count must be a whole number >= 1"),
        (lambda: PyTorchConfiguration(process_count=1, node_count=2), "less than node_count=2"),
        (lambda: PyTorchConfiguration(process_count=3, node_count=2), "does not split evenly"),
        (lambda: PyTorchConfiguration(communication_backend="tcp"), "communication_backend"),
        (lambda: MpiConfiguration(process_count_per_node=0), "process_count_per_node"),
        (lambda: MpiConfiguration(node_count="2"), "node_count must be"),
        (lambda: TensorflowConfiguration(worker_count=0), "worker_count"),
        (lambda: TensorflowConfiguration(parameter_server_count=-1), "parameter_server_count"),
    ],
)
def test_bad_layouts_are_one_line_errors(make, message):
    with pytest.raises(RunConfigError, match=message) as e:
        make()
    assert "\n" not in str(e.value)


def test_run_configuration_round_trip(tmp_path):
    for config in (
        PyTorchConfiguration("Gloo", process_count=4, node_count=2),
        MpiConfiguration(process_count_per_node=2, node_count=3),
        TensorflowConfiguration(worker_count=2, parameter_server_count=0),
    ):
        src = ScriptRunConfig(str(tmp_path), "train.py", distributed_job_config=config)
        rc = src.run_config
        assert src.distributed_job_config is config
        assert rc.node_count == config.node_count
        assert (rc.framework, rc.communicator) != ("Python", "None")
        saved = rc.save(tmp_path / f"{config.kind}.yml")
        loaded = RunConfiguration.load(saved)
        assert loaded.to_dict() == rc.to_dict()
        assert type(loaded.distributed_job_config) is type(config)
        assert loaded.distributed_layout() == rc.distributed_layout()
    # v1's file carries all three sections: the communicator picks the one in use
    v1 = tmp_path / "v1.runconfig"
    v1.write_text(
        "script: train.py\nframework: Python\ncommunicator: IntelMpi\nnodeCount: 2\n"
        "tensorflow: {workerCount: 1, parameterServerCount: 1}\n"
        "mpi: {processCountPerNode: 4, nodeCount: 2}\n"
        "pytorch: {communicationBackend: nccl, processCount: null, nodeCount: 1}\n"
    )
    got = RunConfiguration.load(v1).distributed_job_config
    assert isinstance(got, MpiConfiguration) and got.process_count_per_node == 4
    rc.distributed_job_config = None  # back to one process
    assert (rc.node_count, rc.framework, rc.communicator) == (1, "Python", "None")
    plain = RunConfiguration.load(RunConfiguration().save(tmp_path / "plain.yml"))
    assert plain.distributed_job_config is None and plain.distributed_layout() is None


def test_bad_distributed_input_changes_nothing(ws, tmp_path):
    src = make_source(tmp_path, "print('never')\n")
    rc = RunConfiguration()
    with pytest.raises(RunConfigError, match="must be a PyTorchConfiguration"):
        ScriptRunConfig(str(src), "train.py", run_config=rc, distributed_job_config={"nodes": 2})
    assert rc.distributed_job_config is None and rc.node_count == 1 and rc.script is None
    exp = Experiment(ws, "exp")  # made before the fingerprint: the submits below add nothing
    before = workspace_fingerprint(ws.path)
    # node_count without a configuration saying how to start the processes
    cfg = ScriptRunConfig(str(src), "train.py")
    cfg.run_config.node_count = 2
    with pytest.raises(RunConfigError, match="node_count=2 needs a distributed_job_config"):
        Experiment(ws, "exp").submit(cfg)
    # a configuration changed into a bad one after it was given
    pt = PyTorchConfiguration(process_count=2)
    cfg = ScriptRunConfig(str(src), "train.py", distributed_job_config=pt)
    pt.process_count = 0
    with pytest.raises(RunConfigError, match="process_count must be"):
        exp.submit(cfg)
    # node_count set apart from the configuration's
    cfg = ScriptRunConfig(str(src), "train.py", distributed_job_config=MpiConfiguration())
    cfg.run_config.node_count = 3
    with pytest.raises(RunConfigError, match="differs from the distributed_job_config"):
        exp.submit(cfg)
    assert workspace_fingerprint(ws.path) == before


def _refused_on(ws, tmp_path, target: str, config, match: str) -> None:  # noqa: ANN001
    """Submitting ``config`` to ``target`` is one RunConfigError matching ``match``, and the
    workspace is left as it was."""
    src = make_source(tmp_path, "print('never')\n")
    exp = Experiment(ws, "exp")
    before = workspace_fingerprint(ws.path)
    cfg = ScriptRunConfig(
        str(src), "train.py", compute_target=target, distributed_job_config=config
    )
    with pytest.raises(RunConfigError, match=match):
        exp.submit(cfg)
    assert workspace_fingerprint(ws.path) == before


def test_a_target_that_cannot_span_nodes_refuses_and_changes_nothing(ws, tmp_path):
    from mlws.compute import AmlCompute, ComputeTarget

    ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(max_nodes=2))
    config = MpiConfiguration(node_count=2)
    _refused_on(ws, tmp_path, "cpu", config, r"'cpu' \(dask\) runs .* at most 1 node")


# -- the rank environment -----------------------------------------------------------------------
def test_rank_env_has_torchrun_mpi_and_tf_variables():
    spec = {"kind": "mpi", "nodeCount": 2, "perNode": 2, "worldSize": 4}
    env = ranks.rank_env(spec, 3, "10.0.0.1", 29500, [29500])
    assert env["MASTER_ADDR"] == "10.0.0.1" and env["MASTER_PORT"] == "29500"
    assert (env["RANK"], env["LOCAL_RANK"], env["NODE_RANK"], env["GROUP_RANK"]) == (
        "3",
        "1",
        "1",
        "1",
    )
    assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == ("4", "2")
    assert env["OMPI_COMM_WORLD_RANK"] == "3" and env["OMPI_COMM_WORLD_SIZE"] == "4"
    assert env["OMPI_COMM_WORLD_LOCAL_RANK"] == "1" and env["OMPI_COMM_WORLD_LOCAL_SIZE"] == "2"
    tf = {"kind": "tensorflow", "nodeCount": 1, "perNode": 3, "worldSize": 3, "workers": 2}
    cfg = json.loads(ranks.rank_env(tf, 2, "127.0.0.1", 1, [1, 2, 3])["TF_CONFIG"])
    assert cfg["cluster"] == {"worker": ["127.0.0.1:1", "127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    assert cfg["task"] == {"type": "ps", "index": 0}


# -- runs on the local target --------------------------------------------------------------------
def test_two_ranks_meet_over_tcp_and_rank0_logs_the_sum(ws, tmp_path):
    src = make_source(tmp_path, MEET)
    run = submit(ws, src, distributed_job_config=PyTorchConfiguration("Gloo", process_count=2))
    assert wait_status(run, ("Completed", "Failed", "Canceled"), 60) == "Completed", (
        run.get_details()
    )
    metrics = run.get_metrics()
    assert metrics["rank_sum"] == 1
    # every rank's metrics are kept on the one run, as in v1
    assert sorted(metrics["rank"]) == [0, 1]
    names = run.get_file_names()
    assert "logs/std_log_process_0.txt" in names and "logs/std_log_process_1.txt" in names
    assert "outputs/sum.txt" in names
    assert "rank 1 of 2 local 1 node 0" in run._read_file_text("logs/std_log_process_1.txt")
    driver = run._read_file_text("logs/driver.log")
    assert "pytorch job, 2 rank(s)" in driver and "rank 0 of 2" in driver  # rank 0 followed
    assert "rank 1 of 2" not in driver
    definition = json.loads(
        ws.catalog.scalar("SELECT definition FROM runs WHERE id = ?", (run.id,))
    )
    assert definition["distributed"]["worldSize"] == 2


def test_two_nodes_of_two_on_local_make_four_ranks(ws, tmp_path):
    src = make_source(tmp_path, MEET)
    run = submit(ws, src, distributed_job_config=MpiConfiguration(2, node_count=2))
    assert wait_status(run, ("Completed", "Failed", "Canceled"), 60) == "Completed", (
        run.get_details()
    )
    assert run.get_metrics()["rank_sum"] == 1 + 2 + 3
    assert "rank 3 of 4 local 1 node 1" in run._read_file_text("logs/std_log_process_3.txt")
    assert sorted(run.get_metrics()["rank"]) == [0, 1, 2, 3]


#: Each rank publishes its pid; rank 1 fails once the test opens the gate "die", the others
#: wait as ranks blocked on a dead peer do.
DIES = """
rank = int(os.environ["RANK"])
write_pid(f"{sys.argv[1]}/rank{rank}.pid")
if rank == 1:
    wait_gate(sys.argv[1] + "/die")
    print("rank 1 gives up", flush=True)
    sys.exit(3)
time.sleep(120)
"""
#: Each rank publishes its pid and waits to be stopped.
SLEEPS = """
write_pid(f"{sys.argv[1]}/rank{os.environ['RANK']}.pid")
time.sleep(120)
"""


def _gated(tmp_path, body: str) -> tuple[Path, Path]:  # noqa: ANN001
    """A source folder running ``body`` and the folder of its gates and pid files."""
    gates = tmp_path / "gates"
    gates.mkdir()
    return make_source(tmp_path, body), gates


def _rank_pids(gates: Path, world: int, timeout: float = 60) -> list[int]:
    """The pids the ranks published, once all ``world`` have."""
    files = [gates / f"rank{r}.pid" for r in range(world)]
    return wait_until(
        lambda: all(f.exists() for f in files) and [int(f.read_text()) for f in files],
        timeout,
        f"{world} ranks to start",
    )


def _dies_and_fails(run, gates: Path) -> dict:  # noqa: ANN001
    """Rank 1 gives up: the run must fail, every rank be gone, rank 1's log kept; the error."""
    pids = _rank_pids(gates, 2)
    (gates / "die").touch()
    assert wait_status(run, ("Failed", "Completed", "Canceled"), 60) == "Failed"
    wait_until(lambda: all(_pid_gone(p) for p in pids), 15, "every rank to be gone")
    assert "rank 1 gives up" in run._read_file_text("logs/std_log_process_1.txt")
    return run.get_details()["error"]["error"]


def _canceled(run, gates: Path, world: int) -> None:  # noqa: ANN001
    """Cancel once every rank runs: the run ends Canceled and every rank is gone."""
    pids = _rank_pids(gates, world)
    run.cancel()
    assert wait_status(run, ("Canceled", "Failed", "Completed"), 60) == "Canceled"
    wait_until(lambda: all(_pid_gone(p) for p in pids), 15, "every rank to be gone")


def test_a_rank_that_dies_fails_the_run_and_stops_the_others(ws, tmp_path):
    src, gates = _gated(tmp_path, DIES)
    run = submit(ws, src, gates, distributed_job_config=PyTorchConfiguration(process_count=2))
    error = _dies_and_fails(run, gates)
    assert "exited with code 3" in error["message"] and "rank 1" in error["message"], error
    assert "stopping the other ranks" in run._read_file_text("logs/driver.log")


def test_a_rank_killed_by_a_signal_fails_the_run(ws, tmp_path):
    import signal

    src, gates = _gated(tmp_path, SLEEPS)
    run = submit(ws, src, gates, distributed_job_config=MpiConfiguration(process_count_per_node=2))
    pids = _rank_pids(gates, 2)
    os.kill(pids[1], signal.SIGKILL)
    assert wait_status(run, ("Failed", "Completed", "Canceled"), 30) == "Failed"
    wait_until(lambda: _pid_gone(pids[0]), 15, "rank 0 to be stopped")
    error = run.get_details()["error"]["error"]
    assert "rank 1 was killed by signal 9 (SIGKILL)" in error["message"], error


def test_cancel_stops_every_rank(ws, tmp_path):
    src, gates = _gated(tmp_path, SLEEPS)
    run = submit(ws, src, gates, distributed_job_config=MpiConfiguration(process_count_per_node=3))
    _canceled(run, gates, 3)


def test_tensorflow_workers_end_the_job_and_parameter_servers_are_stopped(ws, tmp_path):
    src = make_source(
        tmp_path,
        """
        cfg = json.loads(os.environ["TF_CONFIG"])
        print(cfg["task"]["type"], cfg["task"]["index"], len(cfg["cluster"]["worker"]), flush=True)
        if cfg["task"]["type"] == "ps":
            write_pid("ps.up")
            time.sleep(120)  # a parameter server serves until it is stopped
        wait_gate("ps.up")  # the workers end once it serves (the folder is shared here)
        """,
        prelude=SCRIPT_PRELUDE + "import json\n",
    )
    run = submit(ws, src, distributed_job_config=TensorflowConfiguration(2, 1))
    assert wait_status(run, ("Completed", "Failed", "Canceled"), 60) == "Completed", (
        run.get_details()
    )
    assert run._read_file_text("logs/std_log_process_2.txt").startswith("ps 0 2")
    assert run._read_file_text("logs/std_log_process_1.txt").startswith("worker 1 2")


# -- the v1 import style, from a driver with the azureml layer -----------------------------------
DRIVER = """
from azureml.core import Workspace, Experiment, ScriptRunConfig
from azureml.core.runconfig import PyTorchConfiguration, MpiConfiguration

ws = Workspace.from_config()
src = ScriptRunConfig(source_directory="src", script="train.py",
                      distributed_job_config=PyTorchConfiguration(communication_backend="Gloo",
                                                                  process_count=2))
run = Experiment(ws, "dist").submit(src)
run.wait_for_completion(show_output=False)
print("STATUS", run.get_status(), "SUM", run.get_metrics().get("rank_sum"))
"""


def test_a_v1_driver_submits_a_pytorch_job(tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "train.py").write_text(
        "import os, time\n"
        + textwrap.dedent(MEET).replace("from mlws import Run", "from azureml.core import Run")
    )
    (project / "driver.py").write_text(DRIVER)
    r = run_v1_driver(project, "dist1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "STATUS Completed SUM 1" in r.stdout, r.stdout + r.stderr


#: MEET, and every rank records on the run as v1 scripts do: a tag, an uploaded file, and
#: (the last rank) a child run with a metric.
RECORDS = """
with open(f"note_{rank}.txt", "w") as f:
    f.write(f"from rank {rank}")
run.tag(f"rank_{rank}", "here")
run.log("at_step", rank, step=10 + rank)  # a step the rank passes itself is kept
run.upload_file(f"uploads/rank_{rank}.txt", f"note_{rank}.txt")
if rank == world - 1:
    child = run.child_run(name=f"child_of_rank_{rank}")
    child.log("x", rank)
    child.complete()
"""

#: Each host's first rank reads a registered model (sent from home: the host has no models),
#: by path and as v1's Model object downloaded (its record from home too).
MODELS = """
from mlws import Model
if os.environ["LOCAL_RANK"] == "0":
    with open(Model.get_model_path("weights")) as f:
        run.tag(f"model_{rank}", f.read())
    with open(Model(run.experiment.workspace, "weights", version=1).download(f"dl_{rank}")) as f:
        run.tag(f"object_{rank}", f.read())
"""


# -- on ssh and Dask targets -------------------------------------------------------------------
def _meet_on(ws, tmp_path, target: str, config, expected_sum: int, body: str = MEET) -> None:  # noqa: ANN001
    """Run ``body`` (MEET) on ``target`` as ``config`` says; it must complete with every rank's
    log (under v1's name too) and rank 0's sum and outputs home."""
    from helpers import kill_run_processes

    src = make_source(tmp_path, body)
    try:
        run = submit(ws, src, target=target, distributed_job_config=config)
        status = wait_status(run, ("Completed", "Failed", "Canceled"), 90)
        assert status == "Completed", run.get_details()
        assert run.get_metrics()["rank_sum"] == expected_sum
        names = set(run.get_file_names())
        world = ranks_layout(config)["worldSize"]
        assert {f"logs/std_log_process_{r}.txt" for r in range(world)} <= names
        assert {f"azureml-logs/70_driver_log_{r}.txt" for r in range(world)} <= names
        assert "outputs/sum.txt" in names
    finally:
        kill_run_processes(ws)


@pytest.mark.timeout(120)
def test_two_ranks_on_one_ssh_host(ws, tmp_path, ssh_servers):
    from sshd import attach_ssh_target

    ssh_servers[0].start()
    attach_ssh_target(ws, "lab", ssh_servers[:1], tmp_path, python_path="/usr/bin/python3")
    _meet_on(ws, tmp_path, "lab", PyTorchConfiguration(process_count=2), 1)


@pytest.mark.timeout(120)
def test_two_ranks_in_one_dask_task(ws, tmp_path):
    pytest.importorskip("distributed")
    from mlws.compute import AmlCompute, ComputeTarget

    cpu = ComputeTarget.create(ws, "cpu", AmlCompute.provisioning_configuration(max_nodes=1))
    try:
        _meet_on(ws, tmp_path, "cpu", MpiConfiguration(process_count_per_node=2), 1)
    finally:
        cpu.stop()


@pytest.fixture
def two_hosts(ws, tmp_path, ssh_servers):  # noqa: ANN001, ANN201
    """The ssh target ``lab``: both test sshd as two hosts; what runs leave is killed after."""
    from helpers import kill_run_processes
    from sshd import attach_ssh_target

    for server in ssh_servers:
        server.start()
    attach_ssh_target(ws, "lab", ssh_servers, tmp_path, python_path="/usr/bin/python3")
    yield "lab"
    kill_run_processes(ws)


def test_a_multi_host_runs_metrics_keep_a_step_a_rank_passed(ws, monkeypatch):
    """A node numbers the steps it gives from NODE_AUTO_STEP; at home those are numbered
    again and a step the rank passed itself (step=) is kept."""
    from mlws import Experiment, metrics
    from mlws.compute.remote_catalog import metrics_home

    node = Experiment(ws, "node").start_logging()
    monkeypatch.setattr(metrics, "AUTO_STEP_FROM", metrics.NODE_AUTO_STEP)
    node.log("loss", 0.5)
    node.log("loss", 0.4, step=7)
    node.log("loss", 0.3)
    node.flush()
    monkeypatch.setattr(metrics, "AUTO_STEP_FROM", 0)
    on_node = ws.catalog.query(
        "SELECT step, value, time FROM metrics WHERE run_seq = ? ORDER BY time", (node.seq,)
    )
    base = metrics.NODE_AUTO_STEP
    assert [r[0] for r in on_node] == [base, 7, base + 1]
    home = Experiment(ws, "home").start_logging()
    home.log("loss", 1.0)  # rank 0's first value, step 0
    home.flush()
    row = lambda r: {"name": "loss", "kind": "scalar", "value": r[1], "step": r[0], "time": r[2]}  # noqa: E731
    changes = [
        {"table": "metrics", "op": "insert", "run_id": home.id, "row": row(r)} for r in on_node
    ]
    others = [{"table": "run_tags", "run_id": home.id}]
    assert metrics_home(ws, home.id, home.seq, changes + others, own_steps=True) == others
    got = ws.catalog.query(
        "SELECT step, value FROM metrics WHERE run_seq = ? ORDER BY step", (home.seq,)
    )
    # As on one machine: a value without a step after step 7 comes at 8.
    assert sorted(tuple(r) for r in got) == [(0, 1.0), (1, 0.5), (7, 0.4), (8, 0.3)]
    home.complete()
    node.complete()


@pytest.mark.timeout(120)
def test_two_ranks_on_two_ssh_hosts_meet_at_the_first(ws, tmp_path, two_hosts):
    from mlws import Model

    config = PyTorchConfiguration(process_count=4, node_count=2)
    (tmp_path / "model.pkl").write_text("weights v1")
    Model.register(ws, str(tmp_path / "model.pkl"), "weights")
    _meet_on(ws, tmp_path, two_hosts, config, 6, MEET + RECORDS + MODELS)
    run = ws.get_run(ws.catalog.scalar("SELECT id FROM runs WHERE parent_id IS NULL"))
    assert "ranks 2-3 here" in run._read_file_text("logs/node_1.log")
    assert "rank 3 of 4 local 1 node 1" in run._read_file_text("logs/std_log_process_3.txt")
    log3 = run._read_file_text("azureml-logs/70_driver_log_3.txt")
    assert log3 == run._read_file_text("logs/std_log_process_3.txt")
    # v1: every rank's Run.get_context() is the one run, whichever host it is on. Metrics: every
    # rank's values, numbered at home as they came (no host's own numbering leaks through).
    assert sorted(run.get_metrics()["rank"]) == [0, 1, 2, 3]
    steps = [r[0] for r in ws.catalog.query(
        "SELECT step FROM metrics WHERE run_seq = ? AND name = 'rank' ORDER BY step", (run.seq,)
    )]  # fmt: skip
    assert steps == [0, 1, 2, 3]
    at = ws.catalog.query(
        "SELECT step, value FROM metrics WHERE run_seq = ? AND name = 'at_step' ORDER BY step",
        (run.seq,),
    )
    assert [tuple(r) for r in at] == [(10 + r, r) for r in range(4)]
    # ... tags, uploaded files and child runs of the second host's ranks too.
    assert {f"rank_{r}" for r in range(4)} <= set(run.get_tags())
    tags = ("model_0", "model_2", "object_0", "object_2")
    assert {t: run.get_tags().get(t) for t in tags} == dict.fromkeys(tags, "weights v1")
    names = set(run.get_file_names())
    assert {f"uploads/rank_{r}.txt" for r in range(4)} <= names
    assert run._read_file_text("uploads/rank_3.txt") == "from rank 3"
    (child,) = run.get_children()
    assert child.display_name == "child_of_rank_3" and child.get_metrics() == {"x": 3}
    assert child.get_status() == "Completed"
    # both hosts' run folders are removed once the logs are home
    runs_there = tmp_path / "remote" / "runs"
    wait_until(lambda: not any(runs_there.iterdir()), 10, "the hosts' run folders to go")


@pytest.mark.timeout(120)
def test_a_rank_that_dies_on_the_second_host_fails_the_run(ws, tmp_path, two_hosts):
    src, gates = _gated(tmp_path, DIES)
    config = MpiConfiguration(process_count_per_node=1, node_count=2)
    run = submit(ws, src, gates, target=two_hosts, distributed_job_config=config)
    error = _dies_and_fails(run, gates)
    assert error["code"] == "NodeFailed", error
    assert "node 1" in error["message"] and "rank 1 exited with code 3" in error["message"]


@pytest.mark.timeout(120)
def test_cancel_stops_the_ranks_on_both_ssh_hosts(ws, tmp_path, two_hosts):
    src, gates = _gated(tmp_path, SLEEPS)
    config = PyTorchConfiguration(process_count=2, node_count=2)
    _canceled(submit(ws, src, gates, target=two_hosts, distributed_job_config=config), gates, 2)


def test_more_nodes_than_the_ssh_target_has_hosts_is_refused(ws, tmp_path, two_hosts):
    match = r"'lab' \(ssh\) runs .* at most 2 node\(s\), not node_count=3"
    _refused_on(ws, tmp_path, two_hosts, MpiConfiguration(1, 3), match)


@pytest.mark.timeout(120)
def test_two_multi_host_runs_take_turns_on_the_hosts(ws, tmp_path, two_hosts):
    src = make_source(tmp_path, MEET)
    config = PyTorchConfiguration(process_count=2, node_count=2)
    runs = [submit(ws, src, target=two_hosts, distributed_job_config=config) for _ in range(2)]
    for run in runs:
        assert wait_status(run, ("Completed", "Failed", "Canceled"), 90) == "Completed"
        assert run.get_metrics()["rank_sum"] == 1
