"""Train a logistic regression on scikit-learn's bundled iris data, Azure ML v1 style.

Runs unchanged under `mlws run submit` (or Azure ML v1): the run comes from Run.get_context(),
the accuracy goes through run.log, and the model lands in ./outputs, which is collected when the
run ends. Run directly (`python train.py`), it records an offline run instead.
"""

import argparse
import os

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from mlws import Run

parser = argparse.ArgumentParser()
parser.add_argument("--C", type=float, default=1.0, help="inverse regularization strength")
args = parser.parse_args()

run = Run.get_context()
X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)

print(f"Training LogisticRegression(C={args.C}) on {len(X_train)} rows")
model = LogisticRegression(C=args.C, max_iter=1000, random_state=0).fit(X_train, y_train)
accuracy = accuracy_score(y_test, model.predict(X_test))

run.log("C", args.C)
run.log("accuracy", accuracy)  # a numpy float: stored as a plain number

os.makedirs("outputs", exist_ok=True)
joblib.dump(model, "outputs/model.pkl")
print(f"accuracy={accuracy:.4f}; model saved to outputs/model.pkl")
