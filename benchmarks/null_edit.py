"""What a diffusion method's backbone does unasked: its null edit (`Method.null_edit`, the
method at its own settings with no guidance) on the first ``--n`` test images of a dataset.

    PYTHONPATH=. python benchmarks/null_edit.py --method dime --profile quick --n 256 \
        --record benchmarks/results/null-edit-dime-quick.json

For each query (smile, age): the % of images on which the explained classifier keeps its
decision (100 − the null edit's flip rate, `fr_null`), with a 95% bootstrap CI; the % of
(image, attribute) pairs on which the oracle keeps its decision; and realism at the
metrics' resolution: FID and KID (features network) of the null edits against the
originals, beside the real-vs-real floor (the originals against as many fresh test images,
the next ``--n`` indices). The null edit is the same image for every query where it is
unguided (DiME's), so it is computed once; images are quantised as a run saves them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cfbench.classifiers import load_classifier
from cfbench.datasets import get_dataset
from cfbench.handles import make_handle
from cfbench.methods import METHODS
from cfbench.metrics.fid import frechet_distance
from cfbench.metrics.kid import kid
from cfbench.oracles import load_network
from cfbench.randomness import SampleRNG
from cfbench.record import quantize
from cfbench.stats import bootstrap_ci

QUERIES = {"smile": "Smiling", "age": "Young"}


def null_edits(args: argparse.Namespace, images: torch.Tensor, ids: list[str],
               classifier: torch.nn.Module) -> tuple[torch.Tensor, dict]:
    cls = METHODS.get(args.method)
    config = cls.resolve_config(args.dataset, args.profile, dict(o.split("=", 1) for o in args.set))
    method = cls(config, args.device).null_edit()
    classifier = classifier.to(args.device)
    out = []
    for start in tqdm(range(0, len(images), args.batch_size), desc="null edit", unit="batch"):
        x = images[start : start + args.batch_size].to(args.device)
        handle = make_handle(cls.access, classifier, len(x))
        targets = torch.zeros(len(x), dtype=torch.long)  # unguided: the target is not read
        result = method.explain(x, targets, handle, SampleRNG(args.seed, ids[start : start + len(x)]))
        out.append(quantize(result.images).float() / 255)
    return torch.cat(out), {k: v for k, v in vars(config).items() if isinstance(v, (int, float, str, tuple))}


def decisions(network: torch.nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([network(images[i : i + batch_size]) > 0 for i in range(0, len(images), batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dime")
    parser.add_argument("--dataset", default="synthfaces")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    split = get_dataset(args.dataset).split("test")
    ids, images, _ = split.batch(range(args.n))
    fresh = split.batch(range(args.n, 2 * args.n))[1]
    classifiers = {q: load_classifier(get_dataset(args.dataset).classifiers[a], a) for q, a in QUERIES.items()}
    began = time.time()
    nulls, config = null_edits(args, images, ids, classifiers["smile"])
    seconds = time.time() - began
    figures: dict = {}
    for query, classifier in classifiers.items():
        classifier = classifier.cpu()
        kept = (decisions(classifier, images) == decisions(classifier, nulls)).reshape(-1).double().numpy() * 100
        figures[f"classifier_kept_{query}"] = {"value": float(kept.mean()), "ci": bootstrap_ci(kept)}
    oracle = load_network("oracle", args.dataset).module
    figures["oracle_pairs_kept"] = float((decisions(oracle, images) == decisions(oracle, nulls)).double().mean() * 100)
    features = load_network("features", args.dataset).module
    with torch.no_grad():
        f_real, f_null, f_fresh = (torch.cat([features(x[i : i + 128]) for i in range(0, len(x), 128)])
                                   for x in (images, nulls, fresh))  # fmt: skip
    figures["fid"] = {"null_vs_originals": frechet_distance(f_real, f_null), "floor": frechet_distance(f_real, f_fresh)}
    figures["kid"] = {"null_vs_originals": kid(f_real, f_null), "floor": kid(f_real, f_fresh)}
    record = {"command": "PYTHONPATH=. python benchmarks/null_edit.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if k != "record" and v not in (None, [])), "n": args.n, "seconds": round(seconds, 1),
        "config": config, "figures": figures}  # fmt: skip
    text = json.dumps(record, indent=2, default=list)
    print(text)
    if args.record:
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
