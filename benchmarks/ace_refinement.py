"""Why an ACE counterfactual fails: for the failed samples of a finished ACE run, the
classifier on the saved pre-explanation x′, on the filter F_τ(x′) with fresh noise, and on
the refinement (Algorithm 2) of the saved x and x′ redone with fresh noise at other mask
thresholds.

    PYTHONPATH=. python benchmarks/ace_refinement.py runs/synthfaces_smile/ace-quick-s0-XXXX \\
        --draws 3 --thresholds 0.15 0.1 0.05 --record benchmarks/results/ace-refinement-smile.json

A failure whose x′ crosses the boundary and whose redrawn refinement flips lost to the
randomness of the filter, not to the attack. Shares are % of the failed samples; a
draw d uses the per-sample noise of seed ``--seed`` + d.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from cfbench.classifiers import load_classifier
from cfbench.methods import METHODS
from cfbench.methods.ace import Denoiser
from cfbench.randomness import SampleRNG
from cfbench.record import RunRecord


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished ace run directory")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.15])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    record = RunRecord(args.run)
    info = record.read_info() or {}
    identity = info.get("identity", {})
    if identity.get("method") != "ace":
        raise SystemExit(f"{args.run}: not an ace run")
    table = record.read_table()
    failed = table[~table["success"].astype(bool)].sort_values("index")
    if failed.empty:
        raise SystemExit(f"{args.run}: no failed sample")
    ids = failed["id"].tolist()  # x and x′ as saved, both 8-bit
    x, pre = (torch.stack([record.load_image(folder, i) for i in ids]) for folder in ("originals", "pre_explanations"))
    classifier = load_classifier(identity["classifier"], identity["attribute"]).eval()
    toward = torch.where(torch.tensor(failed["target"].to_numpy()) == 1, 1.0, -1.0)
    cls = METHODS.get("ace")
    rows = torch.arange(len(ids))

    def crossed(images: torch.Tensor) -> float:
        return float(((toward * classifier(images).view(-1)) > 0).double().mean() * 100)

    result: dict = {"run": info["run_id"], "n": len(table), "failed": len(ids), "draws": args.draws}
    with torch.no_grad():
        result["pre_explanation_crossed_pct"] = crossed(pre)
        config = cls.Config(**identity["config"]).validate()
        ace = cls(config, "cpu")
        result["filtered_crossed_pct"] = [
            crossed(ace.filter(pre, Denoiser(ace._chunked, ace.backbone.process, len(ids)),
                               SampleRNG(args.seed + d, ids), rows)) for d in range(args.draws)]  # fmt: skip
        result["refined_flipped_pct"] = {}
        for threshold in args.thresholds:
            ace = cls(dataclasses.replace(config, mask_threshold=threshold), "cpu", backbone=ace.backbone)
            masks = ace.mask(x, pre)
            result["refined_flipped_pct"][str(threshold)] = {"mask_area_pct": float(masks.mean() * 100), "flipped": [
                crossed(ace.refine(x, pre, masks, Denoiser(ace._chunked, ace.backbone.process, len(ids)),
                                   SampleRNG(args.seed + d, ids))) for d in range(args.draws)]}  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
