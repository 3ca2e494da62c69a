"""Throughput of the diffusion backbones: network evaluations per second and images
per second (one evaluation per image) for each backbone at several batch sizes, fp32
and bf16 autocast, on the CPU and, when present, the GPU.

    PYTHONPATH=. python benchmarks/bench_diffusion.py                         # all backbones
    PYTHONPATH=. python benchmarks/bench_diffusion.py --backbones synthfaces-ddpm --batch-sizes 1 8 32
    PYTHONPATH=. python benchmarks/bench_diffusion.py --train --backbones synthfaces-ddpm --batch-sizes 32
    PYTHONPATH=. python benchmarks/bench_diffusion.py --backbones synthfaces-ddpm --card   # into the model card

Weights are random (speed does not depend on them). A "UNet evaluation" is one
forward pass of the denoising network on a batch; DiME's cost is counted in these.
The DiffAE rows time its conditional UNet with a precomputed z_sem, and its
semantic encoder separately (``…-encoder``), which runs once per image. With
``--train`` a row times one training step instead (forward, backward of a mean-square
loss on the output, AdamW update; the DiffAE's encoder included): images/s is then
training throughput, the figure that decides whether a recipe trains on a machine.
With ``--card`` the rows of the trained zoo backbones are stored in their model cards,
one table per mode and device (a GPU run keeps the CPU figures).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from typing import Callable

import torch

from cfbench.diffusion.diffae import CELEBA_128 as DIFFAE_CELEBA_128
from cfbench.diffusion.diffae import DiffAE
from cfbench.diffusion.unet import CELEBA_128, CELEBAHQ_256, UNet
from cfbench.environment import device_name
from cfbench.zoo import ZOO
from cfbench.zoo.train import record_throughput

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def backbones() -> dict[str, tuple[Callable[[], torch.nn.Module], int, str]]:
    """name -> (builder, image size, what is timed)."""
    table: dict[str, tuple[Callable[[], torch.nn.Module], int, str]] = {
        "ddpm-celeba128": (lambda: UNet(CELEBA_128), 128, "unet"),
        "ddpm-celebahq256": (lambda: UNet(CELEBAHQ_256), 256, "unet"),
        "diffae-celeba128": (lambda: DiffAE(DIFFAE_CELEBA_128), 128, "diffae"),
        "diffae-celeba128-encoder": (lambda: DiffAE(DIFFAE_CELEBA_128), 128, "encoder"),
    }
    for name, entry in ZOO.items():
        if entry.kind in ("ddpm", "diffae"):
            table[name] = (entry.build, entry.image_size, "unet" if entry.kind == "ddpm" else "diffae")
            if entry.kind == "diffae":
                table[f"{name}-encoder"] = (entry.build, entry.image_size, "encoder")
    return table


def forward_of(model: torch.nn.Module, what: str, batch: int, size: int, device: torch.device) -> Callable[[], None]:
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.randint(0, 500, (batch,), device=device)
    if what == "unet":
        return lambda: model(x, t)
    if what == "encoder":
        return lambda: model.encode(x)
    z = model.encode(x)
    return lambda: model(x, t, z)


def training_step_of(model: torch.nn.Module, what: str, batch: int, size: int, device: torch.device,
                     bf16: bool) -> Callable[[], None]:  # fmt: skip
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.randint(0, 500, (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, t, model.encode(x)) if what == "diffae" else model(x, t)
        optimizer.zero_grad(set_to_none=True)
        out.float().square().mean().backward()
        optimizer.step()

    return step


def measure(fn: Callable[[], None], device: torch.device, bf16: bool, min_seconds: float, train: bool = False) -> float:
    """Seconds per call, after one warm-up call (``train``: with gradients, ``fn``
    handles its own autocast)."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 and not train else contextlib.nullcontext()
    with torch.inference_mode(not train), autocast:
        fn()
        calls, began = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            if time.perf_counter() - began >= min_seconds:
                return (time.perf_counter() - began) / calls


def main() -> None:
    table = backbones()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=list(table), choices=list(table))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    ap.add_argument("--min-seconds", type=float, default=2.0, help="time each setting at least this long")
    ap.add_argument("--train", action="store_true", help="time training steps instead of forward passes")
    ap.add_argument("--card", action="store_true", help="store the zoo backbones' rows in their model cards")
    args = ap.parse_args()
    machine = (f"torch {torch.__version__}, {platform.machine()}, {device_name(torch.device('cpu'))}"
               + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))  # fmt: skip
    print(f"# {machine}")
    print(f"{'backbone':<28} {'device':<6} {'dtype':<5} {'batch':>5} {'steps/s' if args.train else 'evals/s':>9} "
          f"{'images/s':>9}")  # fmt: skip
    rows: dict[str, list[dict]] = {}
    for name in args.backbones:
        build, size, what = table[name]
        if args.train and what == "encoder":
            continue  # trained with its DiffAE row
        for device_name in args.devices:
            device = torch.device(device_name)
            model = build().to(device).train(args.train)
            for bf16 in (False, True):
                for batch in args.batch_sizes:
                    fn = (training_step_of(model, what, batch, size, device, bf16) if args.train
                          else forward_of(model, what, batch, size, device))  # fmt: skip
                    seconds = measure(fn, device, bf16, args.min_seconds, args.train)
                    print(f"{name:<28} {device_name:<6} {'bf16' if bf16 else 'fp32':<5} {batch:>5} "
                          f"{1 / seconds:>9.2f} {batch / seconds:>9.1f}", flush=True)  # fmt: skip
                    rows.setdefault(name, []).append({
                        "device": device_name, "dtype": "bf16" if bf16 else "fp32", "batch": batch,
                        "evals_per_s": round(1 / seconds, 2), "images_per_s": round(batch / seconds, 1)})  # fmt: skip
    if args.card:
        mode = "training steps" if args.train else "forward"
        for name in [n for n in rows if n.removesuffix("-encoder") in ZOO]:
            for device_name in args.devices:
                record_throughput(name.removesuffix("-encoder"), {
                    "mode": mode + (", semantic encoder" if name.endswith("-encoder") else "") + f", {device_name}",
                    "command": "PYTHONPATH=. python " + " ".join(sys.argv), "machine": machine,
                    "rows": [r for r in rows[name] if r["device"] == device_name]})  # fmt: skip


if __name__ == "__main__":
    main()
