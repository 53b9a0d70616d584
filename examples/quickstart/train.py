"""Train a ridge regression on scikit-learn's bundled diabetes data, Azure ML v1 style.

Runs unchanged under `mlws run submit` (or Azure ML v1): the run comes from Run.get_context(),
metrics go through run.log, and the model lands in ./outputs, which is collected when it ends.
Run directly (`python train.py`), it records an offline run instead.
"""

import argparse
import os
import pickle

from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

from mlws import Run

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float, default=1.0)
args = parser.parse_args()

run = Run.get_context()
X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)

print(f"Training Ridge(alpha={args.alpha}) on {len(X_train)} rows")
model = Ridge(alpha=args.alpha).fit(X_train, y_train)
pred = model.predict(X_test)

run.log("alpha", args.alpha)
run.log("r2", r2_score(y_test, pred))  # a numpy float: stored as a plain number
run.log("rmse", mean_squared_error(y_test, pred) ** 0.5)
for coef in model.coef_:
    run.log("coef", coef)  # logged repeatedly: a series, get_metrics() returns a list
run.log_row("prediction sample", actual=float(y_test[0]), predicted=float(pred[0]))

os.makedirs("outputs", exist_ok=True)
with open("outputs/model.pkl", "wb") as f:
    pickle.dump(model, f)
print(f"r2={r2_score(y_test, pred):.4f}; model saved to outputs/model.pkl")
