"""Step 4: register the model (with its r2 as a tag) when it is good enough."""

import argparse
import json
import os
import shutil

from mlws import Run

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--report", required=True)
parser.add_argument("--min-r2", type=float, default=0.3)
args = parser.parse_args()

run = Run.get_context()
r2 = json.load(open(os.path.join(args.report, "metrics.json")))["r2"]
if r2 < args.min_r2:
    print(f"r2 {r2:.4f} is below {args.min_r2}: not registered")
else:
    os.makedirs("outputs", exist_ok=True)
    shutil.copy(os.path.join(args.model, "weights.npy"), "outputs/weights.npy")
    model = run.register_model("diabetes-ridge", "outputs/weights.npy", tags={"r2": f"{r2:.4f}"})
    print(f"registered {model.name}:{model.version}")
