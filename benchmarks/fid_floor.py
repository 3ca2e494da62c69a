"""The real-vs-real floor of FID and KID against n: from which n a realism figure on a
dataset's features network means something.

    PYTHONPATH=. python benchmarks/fid_floor.py --dataset synthfaces --sizes 32 64 128 256 512 1024 2048 \
        --repeats 3 --record benchmarks/results/synthfaces-fid-floor.json

For each n, ``--repeats`` pairs of disjoint sets of n test images (pair r: indices
[2rn, 2rn + n) and [2rn + n, 2rn + 2n)) go through the ``features`` role. Two sets of
real images of one distribution have a true FID and KID of 0, so what is measured is
the estimator at that n: FID's small-sample bias, and KID's spread around 0.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cfbench.datasets import get_dataset
from cfbench.metrics.fid import frechet_distance
from cfbench.metrics.kid import kid
from cfbench.oracles import load_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthfaces")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    split = get_dataset(args.dataset).split("test")
    network = load_network("features", args.dataset)
    needed = 2 * max(args.sizes) * args.repeats
    features = []
    with torch.no_grad():
        for start in range(0, needed, 512):
            features.append(network.module(split.batch(range(start, min(start + 512, needed)))[1]))
    features = torch.cat(features)
    rows = []
    for n in args.sizes:
        pairs = [(features[2 * r * n : 2 * r * n + n], features[2 * r * n + n : 2 * r * n + 2 * n])
                 for r in range(args.repeats)]  # fmt: skip
        fids, kids = [frechet_distance(a, b) for a, b in pairs], [kid(a, b) for a, b in pairs]
        rows.append({"n": n, "fid": fids, "kid": kids})
        print(f"n={n:5d}  FID {sum(fids) / len(fids):8.2f}  KID {sum(kids) / len(kids):+.5f}", flush=True)
    record = {"dataset": args.dataset, "features": network.label, "repeats": args.repeats, "rows": rows,
              "command": "PYTHONPATH=. python benchmarks/fid_floor.py --dataset " + args.dataset + " --sizes "
                         + " ".join(map(str, args.sizes)) + f" --repeats {args.repeats}"}  # fmt: skip
    if args.record:
        args.record.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
