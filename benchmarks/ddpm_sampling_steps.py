"""FID and oracle attribute-frequency gap of a zoo DDPM's samples at several sampling
respacings: tells whether a gap to the data comes from too few sampling steps or from
the network itself (the figures of the model card, `cfbench.zoo.evaluate`).

    PYTHONPATH=. python benchmarks/ddpm_sampling_steps.py --n 1000 --respacings 50 500 --device cuda --bf16
    PYTHONPATH=. python benchmarks/ddpm_sampling_steps.py --weights other.safetensors --n 500 --respacings 50 250

Prints, per respacing, the seconds taken, FID (synthfaces features), the largest
frequency gap in points and every attribute whose frequency is more than 5 points off
(generated, data).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cfbench.zoo import ZOO
from cfbench.zoo import evaluate as ev
from cfbench.zoo.weights import WEIGHTS_DIR, load_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="synthfaces-ddpm", choices=[n for n, e in ZOO.items() if e.kind == "ddpm"])
    ap.add_argument("--weights", type=Path, default=None, help="safetensors of the model (default: the shipped ones)")
    ap.add_argument("--n", type=int, default=1000, help="samples, against as many test images")
    ap.add_argument("--respacings", nargs="+", default=["50", "500"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="sample under bf16 autocast")
    args = ap.parse_args()
    entry, device = ZOO[args.model], torch.device(args.device)
    model = load_weights(entry.build(), args.weights or WEIGHTS_DIR / f"{entry.name}.safetensors", entry.name)
    model = model.eval().to(device)
    for respacing in args.respacings:
        began = time.time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            figures, _ = ev.ddpm_sample_quality(model, entry.process(respacing=respacing), entry.image_size, args.n,
                                                device, batch_size=500)  # fmt: skip
        generated, data = figures["oracle_frequency_generated"], figures["oracle_frequency_data"]
        off = {a: (generated[a], data[a]) for a in generated if abs(generated[a] - data[a]) > 5}
        print(f"respacing {respacing}: {time.time() - began:.0f} s, FID {figures['fid_synthfaces_features']:.1f}, "
              f"gap {figures['max_frequency_gap_points']:.1f}, off by > 5 points: {off}", flush=True)  # fmt: skip


if __name__ == "__main__":  # the renderer's worker processes import this file
    main()
