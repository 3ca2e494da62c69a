"""GCD's reports on a finished run: the classifier's probability of the original class
along the transferred direction (GCD App. D.2, Fig. 7) as a plot, and, on synthfaces,
where the BB-LIG maps put their mass: the share of Σ|a| on the cheeks and on the mouth
(the renderer's regions, `SynthFacesSplit.region_masks`), and that share over the region's
share of the image (its density: 1 where a map is uniform), which compares regions of
different sizes.

    PYTHONPATH=. python benchmarks/gcd_report.py runs/synthfaces_smile/gcd-quick-s0-XXXX \
        --record benchmarks/results/gcd-smile.json --plot benchmarks/results/gcd-smile-curve.png

On `synthfaces-shortcut-smile`, which decides on Rosy_Cheeks, maps that follow the
classifier put their mass on the cheeks. Shares and densities are given with 95% bootstrap
CIs, over the successful counterfactuals; ``cheeks_above_mouth_pct`` compares densities.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cfbench.datasets import get_dataset
from cfbench.record import RunRecord, png_bytes
from cfbench.stats import bootstrap_ci
from cfbench.visualize import line_plot

REGIONS = ("cheeks", "mouth")


def _ci(values: np.ndarray) -> dict | None:
    return {"value": float(values.mean()), "ci": list(bootstrap_ci(values))} if len(values) else None


def probability_curves(record: RunRecord, table, config: dict) -> tuple[list[float], list[list[float]]]:
    """Step sizes and, per successful sample, p(original class) along its line search."""
    steps = np.linspace(0, config["max_step"], config["steps"] + 1).tolist()
    curves = []
    for sample_id, pred, success in zip(table["id"], table["pred"], table["success"]):
        if not success or not record.has_array("path_logits", sample_id):
            continue
        p = torch.sigmoid(record.load_array("path_logits", sample_id).double())
        curves.append((p if pred == 1 else 1 - p).tolist())
    return steps, curves


def region_shares(a: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Per region of ``REGIONS``: the share of Σ|a| inside it, and that share over the
    region's share of the image (1 where |a| is uniform); nothing for a map without mass."""
    mass = np.abs(a)
    total = mass.sum()
    if not total > 0:
        return {}
    return {name: (share := float(mass[regions[name]].sum() / total), share / float(regions[name].mean()))
            for name in REGIONS}  # fmt: skip


def region_mass(record: RunRecord, table, dataset: str) -> dict:
    split = get_dataset(dataset).split("test")
    shares = {name: [] for name in REGIONS}
    for index, sample_id, success in zip(table["index"], table["id"], table["success"]):
        if not success or not record.has_array("attributions", sample_id):
            continue
        a = record.load_array("attributions", sample_id)[0].numpy()
        for name, pair in region_shares(a, split.region_masks(int(index))).items():
            shares[name].append(pair)
    found = {name: np.array(shares[name]).reshape(-1, 2) for name in REGIONS}
    return {"n": len(found["cheeks"]),
            **{f"{name}_mass_share": _ci(found[name][:, 0]) for name in REGIONS},
            **{f"{name}_density": _ci(found[name][:, 1]) for name in REGIONS},
            "cheeks_above_mouth_pct": _ci((found["cheeks"][:, 1] > found["mouth"][:, 1]).astype(float) * 100)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished gcd run directory")
    parser.add_argument("--record", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="write the probability plot (PNG) here")
    args = parser.parse_args()
    record = RunRecord(args.run)
    info = record.read_info()
    if info is None or info.get("identity", {}).get("method") != "gcd":
        raise SystemExit(f"{args.run}: not a gcd run directory (no run.json of method gcd).")
    identity, table = info["identity"], record.read_table()
    steps, curves = probability_curves(record, table, identity["config"])
    median = np.median(np.array(curves), axis=0).tolist() if curves else None
    result = {
        "command": f"PYTHONPATH=. python benchmarks/gcd_report.py {args.run}",
        "run": {k: identity.get(k) for k in ("method", "dataset", "attribute", "classifier", "profile", "seed")},
        "direction": identity["config"]["direction"],
        "probability_along_direction": {"steps": steps, "median_successful": median, "n": len(curves)},
    }
    if identity["dataset"] == "synthfaces":
        result["bb_lig_region_mass"] = region_mass(record, table, identity["dataset"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")
    if args.plot and curves:
        args.plot.write_bytes(png_bytes(line_plot(steps, curves, median)))


if __name__ == "__main__":
    main()
