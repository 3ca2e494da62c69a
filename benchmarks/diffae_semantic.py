"""Can a DiffAE's semantic code move the classifier at all? A supervised check of what GCD
needs from its backbone: the direction between the mean z_sem of the test images the
classifier calls positive and of those it calls negative, walked from negative images
(their own DDIM-inverted x_T kept), and the classifier's logit at each step size. Also
how many directions z_sem varies in: the effective rank (Σλ)²/Σλ² of the covariance of
the images' z_sem, and the share of the direction's squared norm in its top 10 principal
directions.

    PYTHONPATH=. python benchmarks/diffae_semantic.py --attr smile --record benchmarks/results/diffae-semantic-smile.json

GCD finds its directions without labels, from one image and queries; if even this direction
flips nothing within the steps GCD searches, the backbone, not the search, is the limit.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cfbench.classifiers import load_classifier
from cfbench.datasets import get_dataset, resolve_attribute
from cfbench.diffusion.backbones import create_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="synthfaces-diffae")
    parser.add_argument("--dataset", default="synthfaces")
    parser.add_argument("--attr", default="smile")
    parser.add_argument("--n", type=int, default=96, help="test images whose z_sem give the means")
    parser.add_argument("--walk", type=int, default=8, help="negative images walked along the direction")
    parser.add_argument("--steps", type=float, nargs="+", default=[0, 2, 4, 8, 16])
    parser.add_argument("--encode-steps", type=int, default=50)
    parser.add_argument("--render-steps", type=int, default=20)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    dataset = get_dataset(args.dataset)
    attribute = resolve_attribute(dataset, args.attr)
    classifier = load_classifier(dataset.classifiers[attribute], attribute).eval()
    model = create_backbone(args.backbone).model
    _, x, _ = dataset.split(dataset.eval_split).batch(list(range(args.n)))
    with torch.no_grad():
        logit = classifier(x).reshape(-1)
        z = torch.cat([model.encode(chunk * 2 - 1) for chunk in x.split(32)])
        direction = z[logit > 0].mean(0) - z[logit <= 0].mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(z.T.double()))
        effective_rank = float(eigenvalues.sum() ** 2 / eigenvalues.pow(2).sum())
        top10 = float((eigenvectors[:, -10:].T @ direction.double()).pow(2).sum() / direction.double().pow(2).sum())
        negatives = (logit <= 0).nonzero()[: args.walk, 0]
        x_neg, z_neg = x[negatives] * 2 - 1, z[negatives]
        x_T = model.invert(x_neg, z_neg, steps=args.encode_steps)
        walk = {}
        for step in args.steps:
            rendered = model.render(z_neg + step * direction / direction.norm(), x_T, steps=args.render_steps)
            walk[str(step)] = classifier((rendered + 1) / 2).reshape(-1).tolist()
    result = {
        "command": f"PYTHONPATH=. python benchmarks/diffae_semantic.py --attr {args.attr} --n {args.n}",
        "backbone": args.backbone, "attribute": attribute, "images": args.n, "walked": len(negatives),
        "z_sem_norm_mean": float(z.norm(dim=1).mean()), "mean_difference_norm": float(direction.norm()),
        "z_sem_effective_rank": effective_rank, "difference_share_in_top10_directions": top10,
        "encode_steps": args.encode_steps, "render_steps": args.render_steps,
        "logits_along_direction": walk,
        "flipped_pct": {step: 100 * sum(v > 0 for v in values) / len(values) for step, values in walk.items()},
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
