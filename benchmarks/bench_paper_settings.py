"""Seconds and peak memory per counterfactual of ACE and LDCE at the papers' settings, on
the papers' architectures with random weights (the published checkpoints' builds; the
weights do not change the cost). A GPU task: at these settings a counterfactual takes
minutes on a CPU.

    PYTHONPATH=. python benchmarks/bench_paper_settings.py --method ace --batch-sizes 3 16 --device cuda \
        --record benchmarks/results/ace-paper-celeba128-gpu.json
    PYTHONPATH=. python benchmarks/bench_paper_settings.py --method ldce --batch-sizes 4 --device cuda \
        --record benchmarks/results/ldce-txt-paper-celebahq-gpu.json

* ``ace``: the CelebA 128 px DDPM (`CELEBA_128`, 500 linear steps respaced to 50), ACE's
  CelebA setting (τ = 5, PGD 50 × 1/255, ℓ1, λ_d = 0.001; `scripts/celeba-attack.sh`),
  a DenseNet-121 with 40 outputs at 128 px; the networks run on the whole batch, as in the
  official code (ACE reports 9.5 s at batch 3 and 1.95 s at batch 16 on one H100, 41 GB).
* ``ldce``: LDCE-txt at the CelebA-HQ setting of the official config (miniSD, 256 px,
  500 DDIM steps × strength 0.502 = 251 guided steps, batch 4); the prompt embeddings are
  fixed random (77, 768) tensors, as the CLIP text encoder runs once per prompt, not per
  step; a DenseNet-121 with 3 outputs at 256 px.

``--tiny`` runs the same code on tiny networks and a few steps (a smoke test on a CPU).
Times include the first batch's warm-up unless ``--repeat`` > 1 (the last repeat counts).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models import densenet121

from cfbench.diffusion.backbones import BACKBONES, Backbone
from cfbench.diffusion.latent import LatentBackbone, PublishedFirstStage
from cfbench.diffusion.ldm import MINI_SD, build_unet_and_first_stage
from cfbench.diffusion.spaces import PixelSpace
from cfbench.diffusion.unet import CELEBA_128, UNet
from cfbench.environment import device_name
from cfbench.handles import WhiteBoxClassifier
from cfbench.randomness import SampleRNG
from cfbench.weights import state_digest


class Logit(nn.Module):
    """One output of a network on [0, 1] images, normalised to [-1, 1] (the papers'
    classifiers) and resized to ``resolution`` where they differ (tiny runs only)."""

    def __init__(self, network: nn.Module, index: int, resolution: int):
        super().__init__()
        self.network, self.index, self.resolution = network, index, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution:
            x = nn.functional.interpolate(x, size=self.resolution, mode="bilinear", align_corners=False)
        return self.network(x * 2 - 1)[:, self.index]


def ace(tiny: bool, batch: int, device: torch.device):
    from methods.ace import ACE, ACEConfig

    record = BACKBONES.get("ddpm-celeba128")
    unet = CELEBA_128 if not tiny else dataclasses.replace(CELEBA_128, image_size=16, model_channels=32,
                                                           channel_mult=(1, 2), attention_resolutions=())
    model = UNet(unet).to(device).eval()
    record = dataclasses.replace(record, resolution=unet.image_size)
    backbone = Backbone(record, model, record.make_process("50"), state_digest(model))
    settings = {"attack_iterations": 2, "tau": 2} if tiny else {}
    config = dataclasses.replace(ACEConfig(), **{**ACE.dataset_configs["celeba"], **settings, "network_batch": batch})
    method = ACE(config, device, backbone=backbone)
    classifier = Logit(densenet121(num_classes=40), 31, 64 if tiny else 128)
    return method, classifier, unet.image_size


def ldce(tiny: bool, batch: int, device: torch.device):
    from methods.ldce import LDCE, LDCEConfig

    arch = MINI_SD if not tiny else dataclasses.replace(MINI_SD, resolution=16, model_channels=32, context_dim=32,
                                                        first_stage_channels=32, channel_mult=(1, 1),
                                                        attention_resolutions=(2,), first_stage_mult=(1, 2))
    torch.manual_seed(0)
    unet, first = build_unet_and_first_stage(arch)  # LDCE-txt's networks without the text encoder
    unet.to(device)
    first.to(device)
    record = BACKBONES.get("minisd")
    steps = 10 if tiny else 500
    process = record.make_process(f"ddim{steps}")
    prompts = torch.randn(3, 77, arch.context_dim, generator=torch.Generator().manual_seed(0)).to(device)  # "", 0, 1

    def network(z, t, context):
        return unet(z, t, encoder_hidden_states=context).sample

    backbone = LatentBackbone(
        "minisd (random)", network, PublishedFirstStage(first, arch.scale_factor), process,
        PixelSpace(arch.resolution), lambda targets, query: prompts[1 + targets.long()],
        lambda n: prompts[:1].expand(n, -1, -1), {"unet": unet, "first stage": first})
    official = LDCE.dataset_profiles[("celebahq", "official")]
    config = dataclasses.replace(LDCEConfig(), **{**LDCE.dataset_configs["celebahq"], **official}, ddim_steps=steps,
                                 query="smile", network_batch=batch)
    config = dataclasses.replace(config, guidance="projected")  # the method, at the official config's numbers
    method = LDCE(config, device, backbone=backbone)
    classifier = Logit(densenet121(num_classes=3), 1, 64 if tiny else 256)
    return method, classifier, arch.resolution


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=("ace", "ldce"), required=True)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="tiny networks and steps: a smoke test")
    ap.add_argument("--record", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for batch in args.batch_sizes:
        method, network, size = {"ace": ace, "ldce": ldce}[args.method](args.tiny, batch, device)
        network = network.to(device).eval().requires_grad_(False)
        images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
        targets = torch.ones(batch, dtype=torch.long)
        for _ in range(args.repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            began = time.perf_counter()
            result = method.explain(images, targets.to(device), WhiteBoxClassifier(network, batch),
                                    SampleRNG(0, [f"x{i}" for i in range(batch)]))
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - began
        row = {"batch": batch, "seconds_per_cf": round(seconds / batch, 3),
               "unet_evals_per_cf": float(result.counters["diffusion_evals"].float().mean()),
               "unet_backward_per_cf": float(result.counters["diffusion_gradients"].float().mean())}
        if device.type == "cuda":
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows.append(row)
        print(json.dumps(row))
    machine = device_name(device)
    found = {"method": args.method, "tiny": args.tiny, "device": args.device, "machine": machine,
             "torch": torch.__version__, "command": "python benchmarks/bench_paper_settings.py " + " ".join(
                 f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                 for k, v in vars(args).items() if v not in (None, False)), "rows": rows}
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
