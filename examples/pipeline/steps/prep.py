"""Step 1: split the raw CSV into train and test sets (written to the PipelineData folder)."""

import argparse
import csv
import glob
import os
import random

parser = argparse.ArgumentParser()
parser.add_argument("--raw", required=True)  # the dataset, mounted read-only
parser.add_argument("--out", required=True)  # PipelineData "prepared": this step writes it
args = parser.parse_args()

files = (
    sorted(glob.glob(os.path.join(args.raw, "*.csv"))) if os.path.isdir(args.raw) else [args.raw]
)
rows = [row for f in files for row in csv.reader(open(f))]
header, body = rows[0], rows[1:]
random.Random(0).shuffle(body)
cut = int(len(body) * 0.8)
os.makedirs(args.out, exist_ok=True)  # as in v1, the step makes its output folder
for name, part in (("train.csv", body[:cut]), ("test.csv", body[cut:])):
    with open(os.path.join(args.out, name), "w", newline="") as f:
        csv.writer(f).writerows([header, *part])
print(f"{len(body)} rows: {cut} to train, {len(body) - cut} to test")
