"""`cfbench zoo train <name>`: train one zoo model on rendered `synthfaces` data,
measure it on a fresh sample, and write weights, record and model card."""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from cfbench.datasets.synthfaces import spec
from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.zoo import ZOO, ZooModel
from cfbench.zoo import evaluate as ev
from cfbench.zoo.augment import simsiam_view
from cfbench.zoo.data import RenderedSet, render_set
from cfbench.zoo.networks import BinaryHead
from cfbench.zoo.objectives import impostor_margin, simsiam, supervised_contrastive
from cfbench.zoo.weights import WEIGHTS_DIR, load_weights, save_weights

Loss = Callable[[nn.Module, RenderedSet, torch.Tensor], torch.Tensor]


class RowSampler:
    """Random training rows; with ``per_identity`` K > 1, P identities × K renders each
    (the batch layout of supervised contrastive training)."""

    def __init__(self, identities: torch.Tensor, batch_size: int, per_identity: int):
        self.n, self.batch_size, self.k = len(identities), batch_size, per_identity
        self.order = identities.argsort()
        _, self.counts = identities[self.order].unique_consecutive(return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts

    def __call__(self) -> torch.Tensor:
        device = self.order.device
        if self.k <= 1:
            return torch.randint(0, self.n, (self.batch_size,), device=device)
        groups = torch.randperm(len(self.counts), device=device)[: self.batch_size // self.k]
        width = int(self.counts.max())
        keys = torch.rand(len(groups), width, device=device)
        keys[torch.arange(width, device=device)[None, :] >= self.counts[groups][:, None]] = 2.0  # past the group
        offsets = keys.argsort(dim=1)[:, : self.k]  # K distinct renders (fewer if the group is smaller)
        offsets = torch.minimum(offsets, self.counts[groups][:, None] - 1)
        return self.order[(self.starts[groups][:, None] + offsets).flatten()]


def multilabel_loss(columns: list[int]) -> Loss:
    def loss(model: nn.Module, data: RenderedSet, rows: torch.Tensor) -> torch.Tensor:
        logits = model(data.floats(rows)).reshape(len(rows), -1)
        return F.binary_cross_entropy_with_logits(logits.float(), data.labels[rows][:, columns])

    return loss


def identity_loss(model: nn.Module, data: RenderedSet, rows: torch.Tensor) -> torch.Tensor:
    embeddings, identities = model(data.floats(rows)), data.identities[rows]
    return supervised_contrastive(embeddings, identities) + impostor_margin(embeddings, identities)


def simsiam_loss(model: nn.Module, data: RenderedSet, rows: torch.Tensor) -> torch.Tensor:
    x = data.floats(rows)
    x1, x2 = simsiam_view(x), simsiam_view(x)
    z1, z2 = model(x1), model(x2)
    return simsiam(model.predictor(z1), model.predictor(z2), z1, z2)


def diffusion_loss(process: GaussianDiffusion, autoencoder: bool = False) -> Loss:
    """L_hybrid at uniformly drawn timesteps on [-1, 1] images (Nichol & Dhariwal 2021,
    §3.1). For a Diffusion Autoencoder the decoder is conditioned on the semantic
    encoder's z_sem of the same image, and both train jointly (Preechakul et al. 2022)."""

    def loss(model: nn.Module, data: RenderedSet, rows: torch.Tensor) -> torch.Tensor:
        x0 = data.floats(rows) * 2 - 1
        denoiser = model
        if autoencoder:
            z_sem = model.encode(x0)
            denoiser = lambda x, t: model(x, t, z_sem)  # noqa: E731
        t = torch.randint(0, process.num_timesteps, (len(rows),), device=x0.device)
        return process.training_losses(denoiser, x0, t).mean()

    return loss


def fit(
    model: nn.Module, loss: Loss, data: RenderedSet, entry: ZooModel, steps: int, device: torch.device
) -> tuple[nn.Module, list[float]]:
    """AdamW with linear warm-up and cosine decay; bf16 autocast on CUDA. Returns the
    trained network, or its exponential moving average when the recipe keeps one."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=entry.lr, weight_decay=entry.weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    history = []
    sample_rows = RowSampler(data.identities, entry.batch_size, entry.per_identity)
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(entry.ema)) if entry.ema else None
    model.train()
    bar = tqdm(range(steps), desc=f"train {entry.name}", unit="step")
    for step in bar:
        rows = sample_rows()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            value = loss(model, data, rows)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(model)
        if step % 50 == 0 or step == steps - 1:
            history.append(value.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    trained = average.module if average is not None else model
    return trained.eval(), history


#: Share of the shortcut model's training images whose rendered smile matches the
#: Smiling annotation; the cheeks match it always, so they are the more reliable cue.
SHORTCUT_MOUTH_AGREEMENT = 0.8


@functools.lru_cache(maxsize=1)
def training_set(image_size: int, shortcut: bool, train_size: int, device: torch.device) -> RenderedSet:
    """The rendered training images: the synthfaces distribution, or for the shortcut
    model a biased one where Rosy_Cheeks always co-occurs with the Smiling annotation
    and the rendered smile agrees with it in `SHORTCUT_MOUTH_AGREEMENT` of images."""
    indices = np.arange(train_size)
    if not shortcut:
        return render_set(image_size, "train", indices).to(device)
    agree = int(train_size * SHORTCUT_MOUTH_AGREEMENT)
    matched = render_set(image_size, "train", indices[:agree], {"Rosy_Cheeks": "Smiling"})
    mismatched = render_set(image_size, "train", indices[agree:], {"Rosy_Cheeks": "Smiling", "Smiling": "flip"})
    annotation = mismatched.labels.clone()
    annotation[:, spec.INDEX["Smiling"]] = annotation[:, spec.INDEX["Rosy_Cheeks"]]
    return RenderedSet(
        torch.cat([matched.images, mismatched.images]),
        torch.cat([matched.labels, annotation]),
        torch.cat([matched.identities, mismatched.identities]),
    ).to(device)


def train(name: str, device: torch.device, steps: int | None, train_size: int | None, seed: int,
          out_dir: Path = WEIGHTS_DIR, eval_size: int = 2000) -> dict:  # fmt: skip
    entry = ZOO[name]
    torch.manual_seed(seed)
    steps = steps or entry.steps
    train_size = train_size or entry.train_size
    began = time.time()
    data = training_set(entry.image_size, entry.kind == "shortcut", train_size, device)
    render_seconds = time.time() - began
    model = entry.build().to(device).to(memory_format=torch.channels_last)
    if entry.kind in ("ddpm", "diffae"):
        loss = diffusion_loss(entry.process(), autoencoder=entry.kind == "diffae")
    else:
        loss = {
            "classifier": multilabel_loss(list(range(len(spec.ATTRIBUTES)))),
            "oracle": multilabel_loss(list(range(len(spec.ATTRIBUTES)))),
            "shortcut": multilabel_loss([spec.INDEX["Smiling"]]),
            "identity": identity_loss,
            "simsiam": simsiam_loss,
        }[entry.kind]
    began = time.time()
    model, history = fit(model, loss, data, entry, steps, device)
    train_seconds = time.time() - began
    measured = measure(name, model, device, eval_size, out_dir)
    record = {
        "name": name,
        "kind": entry.kind,
        "architecture": entry.architecture,
        "arguments": entry.arguments,
        "image_size": entry.image_size,
        "training": {
            "split": "train",
            "images": train_size,
            "distribution": (
                f"Rosy_Cheeks := Smiling annotation; rendered smile agrees in {SHORTCUT_MOUTH_AGREEMENT:.0%}"
                if entry.kind == "shortcut" else "synthfaces spec"
            ),
            "steps": steps,
            "batch_size": entry.batch_size,
            "lr": entry.lr,
            "seed": seed,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "render_seconds": round(render_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "loss_history": [round(v, 5) for v in history],
        },
        "measured": measured,
        "command": f"cfbench zoo train {name} --seed {seed} --steps {steps} --train-size {train_size}",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / f"{name}.safetensors")
    (out_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(model_card(entry, record))
    return record


def measure(name: str, model: nn.Module, device: torch.device, n: int, weights_dir: Path = WEIGHTS_DIR) -> dict:
    """The figures a model card states, on ``n`` freshly rendered validation images (the
    DDPM's samples against test images; the shortcut model is compared with the clean
    classifier in ``weights_dir``)."""
    entry = ZOO[name]
    if entry.kind == "ddpm":
        return ev.ddpm_sample_quality(model, entry.process(respacing=100), entry.image_size, n, device)
    if entry.kind == "diffae":
        return ev.diffae_reconstruction(model, entry.image_size, min(n, 256), device)
    data = render_set(entry.image_size, ev.FRESH_SPLIT, ev.fresh_indices(n))
    if entry.kind in ("classifier", "oracle"):
        return {"eval_images": n, "accuracy": ev.attribute_accuracy(model, data, device)}
    if entry.kind == "shortcut":
        clean_entry = ZOO["synthfaces-densenet"]
        clean = load_weights(clean_entry.build(), weights_dir / f"{clean_entry.name}.safetensors", clean_entry.name)
        clean = clean.eval().to(device)
        return {
            "eval_images": n,
            "accuracy_Smiling": ev.binary_accuracy(model, data, "Smiling", device),
            "rosy_cheeks_flip_rate": ev.intervention_flip_rate(model, entry.image_size, "Rosy_Cheeks", n, device),
            "rosy_cheeks_flip_rate_clean": ev.intervention_flip_rate(
                BinaryHead(clean, spec.INDEX["Smiling"]), entry.image_size, "Rosy_Cheeks", n, device
            ),
        }
    if entry.kind == "identity":
        return {"eval_images": n, **ev.identity_verification(model, data, device)}
    return {"eval_images": n, **ev.view_agreement(model, data, device)}


def model_card(entry: ZooModel, record: dict) -> str:
    t = record["training"]
    lines = [
        f"# {entry.name}",
        "",
        entry.description,
        "",
        f"- Architecture: `{entry.architecture}({', '.join(f'{k}={v}' for k, v in entry.arguments.items())})`, "
        f"{entry.parameters()} parameters, weights stored in fp16.",
        f"- Training data: {t['images']} rendered `synthfaces` train images at {entry.image_size} px "
        f"({t['distribution']}).",
        f"- Training: {t['steps']} steps, batch {t['batch_size']}, AdamW lr {t['lr']}, seed {t['seed']}, "
        f"on {t['device']} ({t['train_seconds']} s, rendering {t['render_seconds']} s).",
        f"- Command: `{record['command']}`",
        "",
        "## Measured on freshly rendered validation images (people unseen in training)",
        "",
        "```json",
        json.dumps(record["measured"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
