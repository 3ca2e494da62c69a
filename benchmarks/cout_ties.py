"""How much COUT depends on the order in which equal mask values are inserted.

    PYTHONPATH=. python benchmarks/cout_ties.py RUN_DIR [RUN_DIR …] --orders 5 \
        --record benchmarks/results/cout-ties.json

COUT ranks pixels by Σ_c |x' − x| of the saved 8-bit images, so many pixels tie (every
unchanged pixel, and changes of equal size). cfbench inserts ties by pixel index; ACE's
``compute_COUT.py`` sorts with ``torch.argsort`` (an unstable sort, whose tie order is an
implementation detail). For each run (its COUT subset, the run's classifier), this
computes COUT with ties by index, by reversed index, and in ``--orders`` random orders,
and reports the largest difference from the index order: of the run's mean and of a
single sample's score, and the share of the mask that is tied with another pixel.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cfbench.classifiers import load_classifier
from cfbench.metrics.cout import cout_scores
from cfbench.record import RunRecord


def measure(run_dir: Path, orders: int) -> dict:
    record = RunRecord(run_dir)
    identity, table = record.read_info()["identity"], record.read_table()
    rows = table[table["pred"] == table["label"]]
    classifier = load_classifier(identity["classifier"], identity["attribute"])
    ids = rows["id"].astype(str).tolist()
    originals = torch.stack([record.load_image("originals", i) for i in ids]).double()
    counterfactuals = torch.stack([record.load_image("counterfactuals", i) for i in ids]).double()
    targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
    classifier = classifier.double()
    pixels = originals.shape[-1] * originals.shape[-2]
    generator = torch.Generator().manual_seed(0)
    tie_orders = {"index": None, "reversed": torch.arange(pixels - 1, -1, -1)}
    tie_orders.update({f"random {k}": torch.randperm(pixels, generator=generator) for k in range(orders)})
    scores = {name: cout_scores(classifier, originals, counterfactuals, targets, order)
              for name, order in tie_orders.items()}  # fmt: skip
    base = scores["index"]
    mask = (counterfactuals - originals).abs().sum(dim=1).flatten(1)
    tied = np.mean([1 - len(torch.unique(m)) / pixels for m in mask])
    return {
        "run": run_dir.name, "samples": len(ids), "cout_index_order": float(base.mean()),
        "max_run_difference": max(abs(float(s.mean() - base.mean())) for s in scores.values()),
        "max_sample_difference": max(float((s - base).abs().max()) for s in scores.values()),
        "tied_share_of_pixels": float(tied),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    rows = [measure(run, args.orders) for run in args.runs]
    text = json.dumps({"orders": ["index", "reversed"] + [f"random {k}" for k in range(args.orders)], "rows": rows},
                      indent=2)  # fmt: skip
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
