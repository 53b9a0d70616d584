"""Train examples/distributed/train.py on 2 ranks with torch.distributed (gloo, CPU), in a
managed environment with torch==2.13.0, and print what rank 0 logged.

torch==2.13.0 exactly: on this project's machines it is a CPU build on the local disk, in the
folder pip's configuration names as find-links (mlws's builds look there too); other versions
pull a multi-GB CUDA build.
"""

import sys
from pathlib import Path

from mlws import (
    CondaDependencies,
    Environment,
    Experiment,
    PyTorchConfiguration,
    ScriptRunConfig,
    Workspace,
)

HERE = Path(__file__).resolve().parent

ws = Workspace.from_config()
env = Environment("torch-cpu")
env.python.user_managed_dependencies = False
env.python.conda_dependencies = CondaDependencies.create(pip_packages=["torch==2.13.0"])

config = ScriptRunConfig(
    source_directory=HERE,
    script="train.py",
    environment=env,
    distributed_job_config=PyTorchConfiguration(communication_backend="Gloo", process_count=2),
)
run = Experiment(ws, "distributed").submit(config)
print(f"Submitted {run.id}: 2 ranks (building the environment the first time takes a while)")
run.wait_for_completion(show_output="-q" not in sys.argv, raise_on_error=False)
metrics = run.get_metrics()
status = run.get_status()
print(f"Status: {status}")
if status != "Completed":
    print("Error:", (run.get_details().get("error") or {}).get("error", {}).get("message"))
print(f"world_size={metrics.get('world_size')} ranks_in_step={metrics.get('ranks_in_step')}")
print(f"final loss={metrics['loss'][-1] if metrics.get('loss') else None}")
print(f"weight_error={metrics.get('weight_error')}")
print("Logs:", ", ".join(n for n in run.get_file_names() if n.startswith("logs/std_log")))
ws.close()
sys.exit(0 if status == "Completed" else 1)
