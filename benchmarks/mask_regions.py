"""Where a masked method (ACE's refinement) lets itself edit on synthfaces: for every sample
of a run that saved masks, the share of the image's cheeks and mouth (the renderer's
regions, `SynthFacesSplit.region_masks`) inside the mask.

    PYTHONPATH=. python benchmarks/mask_regions.py runs/synthfaces_smile/ace-quick-s0-XXXX \
        --record benchmarks/results/ace-mask-regions-shortcut.json

On `synthfaces-shortcut-smile`, which decides on Rosy_Cheeks, a method that finds the
shortcut masks the cheeks; one that follows the label masks the mouth. Reported over all
samples and over the successful counterfactuals: the % of samples whose mask covers at
least half of each region, and the mean share covered, with 95% bootstrap CIs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cfbench.datasets import get_dataset
from cfbench.record import RunRecord
from cfbench.stats import bootstrap_ci

REGIONS = ("cheeks", "mouth")


def coverage(run: Path) -> tuple[dict, list[dict]]:
    record = RunRecord(run)
    info = record.read_info()
    if info is None:
        raise SystemExit(f"{run}: no run.json; give a run directory.")
    identity = info["identity"]
    split = get_dataset(identity["dataset"]).split("test")
    table = record.read_table()
    rows = []
    for index, sample_id, success in zip(table["index"], table["id"], table["success"]):
        if not record.has_image("masks", sample_id):
            raise SystemExit(f"{run}: no mask for {sample_id}; the method saved no masks.")
        mask = record.load_image("masks", sample_id)[0].numpy() > 0.5
        regions = split.region_masks(int(index))
        rows.append({"id": sample_id, "success": bool(success), "area": float(mask.mean()),
                     **{name: float(mask[regions[name]].mean()) for name in REGIONS}})  # fmt: skip
    return identity, rows


def summary(rows: list[dict]) -> dict:
    found: dict = {"n": len(rows)}
    for name in REGIONS:
        share = np.array([r[name] for r in rows])
        half = (share >= 0.5).astype(float) * 100
        found[f"{name}_half_covered_pct"] = {"value": float(half.mean()), "ci": bootstrap_ci(half)} if len(rows) else None
        found[f"{name}_share_mean"] = {"value": float(share.mean()), "ci": bootstrap_ci(share)} if len(rows) else None
    area = np.array([r["area"] for r in rows])
    found["mask_area_mean"] = float(area.mean()) if len(rows) else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory (run.json, samples.csv, masks/)")
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    identity, rows = coverage(args.run)
    result = {
        "command": f"PYTHONPATH=. python benchmarks/mask_regions.py {args.run}",
        "run": {k: identity.get(k) for k in ("method", "dataset", "attribute", "classifier", "profile", "seed")},
        "all": summary(rows),
        "successful": summary([r for r in rows if r["success"]]),
    }
    text = json.dumps(result, indent=2, default=list)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
