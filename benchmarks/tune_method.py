"""Hyperparameter sweep of a method plugin on a few images: one run per point of a grid,
through the harness with the protocol's metrics; the table a dataset config's tuned
values cite.

    PYTHONPATH=. python benchmarks/tune_method.py --method dime --profile quick --n 32 --split val \\
        --grid "classifier_scales=2|4|8" --grid "lambda_p=10|30" --out runs/tune-dime-smile

Each ``--grid KEY=V1|V2|…`` is a hyperparameter and its values (as ``cfbench run --set``
takes them); ``--set`` fixes others. The runs stay under ``--out``, one directory per
point, so an interrupted sweep goes on where it stopped; ``sweep.csv`` there holds the
table that is printed. ``--metrics`` outside the protocol (query_changed, …) are computed too.
``--record FILE`` keeps each point's metrics with their CIs in a JSON file; points of
another sweep on the same images join those already there.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pandas as pd

from cfbench.runner import Run, RunSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dime")
    parser.add_argument("--dataset", default="synthfaces")
    parser.add_argument("--attr", default="smile")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1|V2", help="values to sweep")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="fixed overrides")
    parser.add_argument("--metrics", nargs="+", default=["fr", "fva", "mnac", "fid", "l1"])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--split", default=None, help="the split whose first n images are explained (default: the "
                        "dataset's evaluation split; val keeps the tuning off the leaderboards' images)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--record", type=Path, default=None, help="keep the points' metrics and CIs in this JSON")
    args = parser.parse_args()
    axes = {key: values.split("|") for key, values in (g.split("=", 1) for g in args.grid)}
    fixed = dict(o.split("=", 1) for o in args.set)
    rows = []
    kept = open_record(args, fixed) if args.record else None
    for point in itertools.product(*axes.values()):
        setting = dict(zip(axes, point))
        name = ",".join(f"{k}={v}" for k, v in setting.items()) or "defaults"
        spec = RunSpec(method=args.method, dataset=args.dataset, attr=args.attr, n=args.n,
                       batch_size=args.batch_size, device=args.device, profile=args.profile,
                       overrides={**fixed, **setting}, out=args.out / name, extra_metrics=tuple(args.metrics),
                       progress=True, split=args.split)  # fmt: skip
        metrics = Run(spec).execute()
        rows.append({**setting, **{m: metrics[m]["value"] for m in args.metrics if m in metrics}})
        if kept is not None:
            kept["points"][name] = {m: {"value": metrics[m]["value"], "ci": metrics[m].get("ci")}
                                    for m in args.metrics if m in metrics}  # fmt: skip
            args.record.parent.mkdir(parents=True, exist_ok=True)
            args.record.write_text(json.dumps(kept, indent=1) + "\n")
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "sweep.csv", index=False)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)


def open_record(args: argparse.Namespace, fixed: dict) -> dict:
    """The sweep record to add points to: ``args.record``'s when it holds the same method,
    images and fixed settings (refused before any run when it does not), else a new one."""
    images = {"method": args.method, "dataset": args.dataset, "attr": args.attr, "split": args.split or "default",
              "n": args.n, "profile": args.profile, "set": fixed}  # fmt: skip
    kept = json.loads(args.record.read_text()) if args.record.exists() else {}
    if kept and {k: kept.get(k) for k in images} != images:
        raise SystemExit(f"{args.record} holds a sweep of other images or settings; use another file.")
    return {**images, "points": kept.get("points", {})}


if __name__ == "__main__":
    main()
