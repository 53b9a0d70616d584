"""Data in, data out, as an Azure ML v1 driver script does it:

1. upload an iris CSV to the workspace's default datastore;
2. register a tabular dataset over it (the next version of "iris");
3. submit prepare.py with the dataset as a mounted input and an OutputFileDatasetConfig as its
   output, registered on completion as the next version of "iris_by_species";
4. show where the output went, that it is a dataset now, and the lineage both ways.

Works from any folder; the workspace comes from `Workspace.from_config()` (-w, MLWS_WORKSPACE,
.mlws/config.json or the per-user default):

    MLWS_WORKSPACE=/tmp/ex-ws python examples/datasets/driver.py
"""

import csv
import tempfile
from pathlib import Path

from mlws import Dataset, Experiment, OutputFileDatasetConfig, ScriptRunConfig, Workspace

HERE = Path(__file__).resolve().parent

ws = Workspace.from_config()
print(f"Workspace {ws.name!r} at {ws.path}")
store = ws.get_default_datastore()

# 1. The data: scikit-learn's iris as a CSV, uploaded to the default datastore.
with tempfile.TemporaryDirectory() as tmp:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame
    iris["species"] = iris["target"].map(dict(enumerate(load_iris().target_names)))
    iris.drop(columns="target").to_csv(Path(tmp) / "iris.csv", index=False)
    store.upload(tmp, target_path="iris", overwrite=True, show_progress=False)

# 2. A tabular dataset over it, registered (a new version whenever the data changed).
ds = Dataset.Tabular.from_delimited_files((store, "iris/iris.csv"))
latest = Dataset.get_all(ws).get("iris")
if latest is None or latest.has_changed():
    latest = ds.register(ws, "iris", description="Fisher's iris", create_new_version=True)
print(f"Dataset {latest.id}: {len(latest.to_pandas_dataframe())} rows")

# 3. The run: the dataset mounted read-only, an output folder uploaded and registered.
out = OutputFileDatasetConfig(name="by_species", destination=(store, "iris_by_species/{run-id}"))
run = Experiment(ws, "datasets-example").submit(
    ScriptRunConfig(
        source_directory=HERE,
        script="prepare.py",
        arguments=[
            "--data", latest.as_named_input("iris").as_mount(),
            "--out", out.register_on_complete("iris_by_species"),
        ],
    )
)  # fmt: skip
print(f"Submitted {run.id}")
run.wait_for_completion(show_output=True)

# 4. The output is on the datastore, registered, with lineage both ways.
produced = run.output_datasets["by_species"]
print(f"Output dataset {produced.id}: {produced.to_path()}")
with tempfile.TemporaryDirectory() as tmp:  # the datastore may be on a workspace server
    store.download(tmp, prefix=f"iris_by_species/{run.id}/counts.csv", show_progress=False)
    with open(Path(tmp, "iris_by_species", run.id, "counts.csv")) as f:
        print("counts.csv:", dict(csv.reader(f)))
used = run.get_details()["inputDatasets"][0]
print(f"The run read {used['dataset']['id']} ({used['consumptionDetails']['mechanism']})")
print(f"Runs that used {latest.id}: {[r['run'] for r in latest.runs()]}")
