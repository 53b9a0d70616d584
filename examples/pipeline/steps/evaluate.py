"""Step 3: score the model on the test split; r2 is logged and written for the next step."""

import argparse
import json
import os

import numpy as np

from mlws import Run

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--report", required=True)
args = parser.parse_args()

test = np.loadtxt(os.path.join(args.data, "test.csv"), delimiter=",", skiprows=1)
weights = np.load(os.path.join(args.model, "weights.npy"))
pred = np.c_[np.ones(len(test)), test[:, :-1]] @ weights
y = test[:, -1]
r2 = float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
Run.get_context().log("r2", r2)
os.makedirs(args.report, exist_ok=True)
with open(os.path.join(args.report, "metrics.json"), "w") as f:
    json.dump({"r2": r2}, f)
print(f"r2 on {len(test)} test rows: {r2:.4f}")
