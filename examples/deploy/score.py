"""The entry script of the iris service, Azure ML v1's shape: ``init()`` once per replica,
``run(raw_data)`` for every ``POST /score``.

The body is ``{"data": [[sepal length, sepal width, petal length, petal width], ...]}``; the
answer is the predicted class of each row (0 setosa, 1 versicolor, 2 virginica) as a list.
"""

import json
import os

import joblib
import numpy as np

model = None


def init():
    global model
    # AZUREML_MODEL_DIR holds the registered model's files: outputs/model.pkl became model.pkl.
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pkl"))


def run(raw_data):
    data = np.asarray(json.loads(raw_data)["data"], dtype=float)
    return model.predict(data).tolist()
