"""Count the flowers of each species: reads the CSV path it is given, writes counts.csv and
one CSV per species into the output folder. Only the standard library, like many v1 scripts."""

import argparse
import csv
import os
from collections import Counter

from mlws import Run

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True, help="the iris CSV (a mounted input)")
parser.add_argument("--out", required=True, help="the output folder")
args = parser.parse_args()

with open(args.data, newline="") as f:
    rows = list(csv.DictReader(f))
print(f"read {len(rows)} rows from {args.data}")

by_species = Counter(r["species"] for r in rows)
with open(os.path.join(args.out, "counts.csv"), "w", newline="") as f:
    csv.writer(f).writerows(sorted(by_species.items()))
for species in by_species:
    with open(os.path.join(args.out, f"{species}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r["species"] == species)

run = Run.get_context()
for name, count in sorted(by_species.items()):
    run.log(f"count_{name}", count)
print(f"wrote {len(by_species) + 1} files to {args.out}")
