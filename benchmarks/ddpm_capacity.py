"""Capacity study of the synthfaces DDPM: wider or deeper variants of `synthfaces-ddpm`
(the same process, data and recipe; batch 128), and where their samples lose the data's
open mouths and smiles.

    # train a variant until stopped (its state is saved every 200 steps) ...
    PYTHONPATH=. python benchmarks/ddpm_capacity.py train w64-m1222-r1 --device cuda
    # ... then measure the EMA of its last saved state as the model card does
    PYTHONPATH=. python benchmarks/ddpm_capacity.py measure w64-m1222-r1 --out /tmp/capacity --device cuda
    # oracle decisions kept when real test images are noised to respaced step k (of 50)
    # and denoised again; --variant zoo is the shipped model
    PYTHONPATH=. python benchmarks/ddpm_capacity.py retention --variant zoo --n 200 --starts 10 25

`measure` writes NAME.json (figures, step, seconds, loss history), NAME.png (32
samples) and NAME.safetensors (fp16 EMA weights) to --out. `retention` also prints, as
a control, how often the oracle keeps its decisions on the same images under small
Gaussian pixel noise. Records: `benchmarks/results/synthfaces-ddpm-capacity.json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from cfbench.datasets.synthfaces.spec import ATTRIBUTES
from cfbench.diffusion.sampling import Denoiser, denoise
from cfbench.record import png_bytes
from cfbench.zoo import ZOO
from cfbench.zoo import evaluate as ev
from cfbench.zoo import train as zoo_train
from cfbench.zoo.data import render_set
from cfbench.zoo.weights import WEIGHTS_DIR, load_weights, save_weights

BASE = ZOO["synthfaces-ddpm"]


def _unet(channels: int, mult: tuple[int, ...], res_blocks: int) -> dict:
    """UNet arguments of a variant: `synthfaces-ddpm`'s, 4 channels a normalisation group."""
    return {**BASE.arguments, "model_channels": channels, "channel_mult": mult, "num_res_blocks": res_blocks,
            "norm_groups": channels // 4}  # fmt: skip


#: name: w<base channels>-m<channel multipliers>-r<res blocks a level>
VARIANTS = {
    "w32-m1244-r1": _unet(32, (1, 2, 4, 4), 1),  # the shipped architecture
    "w32-m1244-r2": _unet(32, (1, 2, 4, 4), 2),
    "w64-m1122-r2": _unet(64, (1, 1, 2, 2), 2),
    "w64-m1222-r1": _unet(64, (1, 2, 2, 2), 1),
}
BATCH_SIZE = 128

for _name, _arguments in VARIANTS.items():  # zoo entries, so that `cfbench.zoo.train` can train and measure them
    ZOO[_name] = dataclasses.replace(BASE, name=_name, arguments=_arguments, batch_size=BATCH_SIZE)


def train(name: str, device: torch.device, steps: int) -> None:
    """The zoo's training loop on the variant; stop it at will, the saved state is what counts."""
    zoo_train.train(name, device, steps, None, 0, out_dir=Path("/tmp/cfbench-capacity-unused") / name, eval_size=16)


def measure(name: str, device: torch.device, out: Path, eval_size: int) -> dict:
    """The model card's sample figures for the EMA weights of the variant's saved state."""
    state = torch.load(zoo_train.checkpoint_path(name), map_location="cpu", weights_only=True)
    average = AveragedModel(ZOO[name].build())
    average.load_state_dict(state["average"])
    model = average.module.eval().to(device)
    began = time.time()
    figures, picture = zoo_train.measure(name, model, device, eval_size)
    record = {"name": name, "arguments": zoo_train._jsonable(ZOO[name].arguments),
              "parameters": sum(p.numel() for p in model.parameters()), "batch_size": BATCH_SIZE, "lr": BASE.lr,
              "steps": state["step"], "train_seconds": round(state["seconds"], 1),
              "measure_seconds": round(time.time() - began, 1), "measured": figures,
              "loss_history": [round(v, 5) for v in state["history"]]}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / f"{name}.png").write_bytes(png_bytes(picture))
    save_weights(model, out / f"{name}.safetensors")
    return record


def retention(variant: str, weights: Path | None, n: int, starts: list[int], device: torch.device) -> dict:
    """Oracle decisions on ``n`` test images against those on the images noised to
    respaced step k of 50 (`q_sample`) and sampled back to step 0 (`sampling.denoise`):
    for Mouth_Slightly_Open and Smiling, the share of positives kept and of negatives
    turned positive; with small pixel noise as the control."""
    entry = BASE if variant == "zoo" else ZOO[variant]
    model = load_weights(entry.build(), weights or WEIGHTS_DIR / f"{entry.name}.safetensors", entry.name)
    model, process = model.eval().to(device), BASE.process(respacing=50)
    oracle = ev._synthfaces_network("oracle", device)
    x = render_set(BASE.image_size, "test", np.arange(n)).floats(slice(None))
    before = ev._outputs(oracle, device, x) > 0
    generator = torch.Generator().manual_seed(0)

    def compared(images: torch.Tensor) -> dict:
        after = ev._outputs(oracle, device, images) > 0
        figures = {"all_decisions_kept": round(float((after == before).float().mean() * 100), 1)}
        for attribute in ("Mouth_Slightly_Open", "Smiling"):
            a = ATTRIBUTES.index(attribute)
            figures[attribute] = {
                "frequency": round(float(after[:, a].float().mean() * 100), 1),
                "positives_kept": round(float(after[before[:, a], a].float().mean() * 100), 1),
                "negatives_turned": round(float(after[~before[:, a], a].float().mean() * 100), 1),
            }
        return figures

    record = {"variant": variant, "weights": str(weights or "shipped"), "images": n,
              "data_frequency": {a: round(float(before[:, ATTRIBUTES.index(a)].float().mean() * 100), 1)
                                 for a in ("Mouth_Slightly_Open", "Smiling")},
              "pixel_noise": {str(s): compared((x + s * torch.randn(x.shape, generator=generator)).clamp(0, 1))
                              for s in (0.01, 0.02, 0.04)},
              "denoised_from_step": {}}  # fmt: skip
    for k in starts:
        t = torch.full((n,), k - 1)
        x_t = process.q_sample(x * 2 - 1, t, torch.randn(x.shape, generator=generator))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = torch.cat([denoise(Denoiser(model, process, len(x_t[i : i + 100])), x_t[i : i + 100].to(device),
                                     start=k, noise=generator) for i in range(0, n, 100)])  # fmt: skip
        record["denoised_from_step"][f"{k}/50"] = compared(((out.float().cpu() + 1) / 2).clamp(0, 1))
        print(f"{variant} from step {k}/50: {record['denoised_from_step'][f'{k}/50']}", flush=True)
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for command in ("train", "measure", "retention"):
        p = sub.add_parser(command)
        p.add_argument("--device", default="cpu")
        if command == "retention":
            p.add_argument("--variant", default="zoo", choices=["zoo", *VARIANTS])
            p.add_argument("--weights", type=Path, default=None, help="safetensors (default: the shipped ones)")
            p.add_argument("--n", type=int, default=200)
            p.add_argument("--starts", type=int, nargs="+", default=[10, 25])
        else:
            p.add_argument("name", choices=list(VARIANTS))
        if command == "train":
            p.add_argument("--steps", type=int, default=10**6, help="stop at (default: train until stopped)")
        if command == "measure":
            p.add_argument("--out", type=Path, required=True)
            p.add_argument("--eval-size", type=int, default=2000)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.command == "train":
        train(args.name, device, args.steps)
    elif args.command == "measure":
        figures = measure(args.name, device, args.out, args.eval_size)["measured"]
        fid, gap = figures["fid_synthfaces_features"], figures["max_frequency_gap_points"]
        print(f"{args.name}: FID {fid:.1f}, gap {gap:.1f}")
    else:
        print(json.dumps(retention(args.variant, args.weights, args.n, args.starts, device), indent=1))


if __name__ == "__main__":  # the renderer's worker processes import this file
    main()
