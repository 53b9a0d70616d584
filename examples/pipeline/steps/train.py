"""Step 2: fit a ridge regression on the train split (closed form, numpy only: a step's start
is part of every run); the model goes to PipelineData "model"."""

import argparse
import os

import numpy as np

from mlws import Run

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--alpha", type=float, required=True)  # a PipelineParameter
parser.add_argument("--model", required=True)
args = parser.parse_args()

train = np.loadtxt(os.path.join(args.data, "train.csv"), delimiter=",", skiprows=1)
X = np.c_[np.ones(len(train)), train[:, :-1]]
penalty = args.alpha * np.eye(X.shape[1])
penalty[0, 0] = 0  # the intercept is not penalised
weights = np.linalg.solve(X.T @ X + penalty, X.T @ train[:, -1])
Run.get_context().log("alpha", args.alpha)
os.makedirs(args.model, exist_ok=True)
np.save(os.path.join(args.model, "weights.npy"), weights)
print(f"ridge(alpha={args.alpha}) fitted on {len(train)} rows")
