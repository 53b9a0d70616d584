"""Submit three training runs with different alphas to the default workspace and print them,
best first. This is what `make demo` runs."""

from pathlib import Path

from tabulate import tabulate

from mlws import Experiment, ScriptRunConfig, Workspace
from mlws.experiments import query_runs

HERE = Path(__file__).resolve().parent

ws = Workspace.from_config()  # -w / MLWS_WORKSPACE / .mlws/config.json / the per-user default
exp = Experiment(ws, "quickstart")
where = ws.url if ws.remote is not None else ws.path  # a served workspace: its URL
print(f"Workspace {ws.name!r} at {where}")

runs = []
for alpha in (0.01, 0.1, 1.0):
    config = ScriptRunConfig(source_directory=HERE, script="train.py", arguments=["--alpha", alpha])
    run = exp.submit(config, tags={"alpha": alpha})
    print(f"Submitted {run.id} (alpha={alpha})")
    runs.append(run)

for run in runs:
    run.wait_for_completion()

mine = {r.id for r in runs}
rows = [r for r in query_runs(ws, experiment=exp.name, sort_by="metric:r2") if r["id"] in mine]
table = []
for row in rows:
    metrics = ws.get_run(row["id"]).get_metrics()
    table.append([row["id"], row["status"], metrics["alpha"], metrics["r2"], metrics["rmse"]])
print()
print(tabulate(table, headers=["run id", "status", "alpha", "r2", "rmse"], floatfmt=".4f"))
print(f"\nSee them with: mlws -w {where} run list -e quickstart --sort-by metric:r2")
ws.close()
