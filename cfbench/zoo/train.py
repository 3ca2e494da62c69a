"""`cfbench zoo train <name>`: train one zoo model on rendered `synthfaces` data,
measure it on a fresh sample, and write weights, record and model card."""
from __future__ import annotations

import functools
import hashlib
import json
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import make_grid
from tqdm import tqdm

from cfbench.datasets.synthfaces import spec
from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.latent import UNKNOWN
from cfbench.environment import device_name
from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_bytes, atomic_write_text
from cfbench.losses import synthfaces_vgg_lpips
from cfbench.record import png_bytes, quantize
from cfbench.weights import home
from cfbench.zoo import ZOO, ZooModel
from cfbench.zoo import evaluate as ev
from cfbench.zoo.augment import simsiam_view
from cfbench.zoo.data import RenderedSet, render_set
from cfbench.zoo.networks import BinaryHead
from cfbench.zoo.objectives import impostor_margin, simsiam, supervised_contrastive
from cfbench.zoo.weights import WEIGHTS_DIR, load_weights, read_card, save_weights, stored_format

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


#: KL weight of the autoencoder (the latent diffusion autoencoders' ``kl_weight``; KL
#: summed over latent values, the reconstruction terms over pixel values)
KL_WEIGHT = 1e-6
#: weight of the unit-weight LPIPS (summed over five stages, it is about ten times the
#: learned LPIPS that the latent diffusion autoencoders weigh by 1)
PERCEPTUAL_WEIGHT = 0.1


def autoencoder_loss(perceptual: nn.Module) -> Loss:
    """Reconstruction L1 + PERCEPTUAL_WEIGHT·LPIPS (``perceptual``, a loss network) + KL_WEIGHT·KL of a draw
    from the posterior (Rombach et al. 2022, §3.1 and App. G, without the adversarial term)."""

    def loss(model: nn.Module, data: RenderedSet, rows: torch.Tensor) -> torch.Tensor:
        x = data.floats(rows)
        posterior = model.posterior(x * 2 - 1)
        reconstructed = (model.vae.decode(posterior.sample()).sample + 1) / 2
        l1 = (reconstructed - x).abs().mean()
        kl = posterior.kl().mean() / x[0].numel()
        return l1 + PERCEPTUAL_WEIGHT * perceptual(reconstructed.float(), x).mean() + KL_WEIGHT * kl

    return loss


def condition_dropout(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Attribute states for training a conditional latent model: each image keeps the values
    of k random attributes, k uniform in 0 … A, the others `UNKNOWN`; k = 0 trains the
    unconditional model (classifier-free guidance, Ho & Salimans 2022, Alg. 1)."""
    n, a = labels.shape
    keep = torch.randint(0, a + 1, (n, 1), generator=generator).to(labels.device)
    rank = torch.rand(n, a, generator=generator).to(labels.device).argsort(1).argsort(1)
    return torch.where(rank < keep, labels.long(), torch.full_like(labels, UNKNOWN, dtype=torch.long))


def latent_diffusion_loss(process: GaussianDiffusion, first_stage: nn.Module) -> Loss:
    """L_simple on the first stage's (posterior-mean, scaled) latents of the images, the
    network conditioned on `condition_dropout` states (Rombach et al. 2022, eq. 2). Each
    image's latent is computed once and kept."""
    cache: dict[int, torch.Tensor] = {}

    def latents(data: RenderedSet) -> torch.Tensor:
        if id(data) not in cache:
            device = data.images.device
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                cache[id(data)] = torch.cat([first_stage.encode(data.floats(torch.arange(i, min(i + 256, len(data.images)),
                                                                                           device=device)) * 2 - 1).float()
                                             for i in tqdm(range(0, len(data.images), 256), desc="encode latents")])
        return cache[id(data)]

    def loss(model: nn.Module, data: RenderedSet, rows: torch.Tensor) -> torch.Tensor:
        z0, states = latents(data)[rows], condition_dropout(data.labels[rows])
        t = torch.randint(0, process.num_timesteps, (len(rows),), device=z0.device)
        return process.training_losses(lambda z, s: model(z, s, states), z0, t).mean()

    return loss


def latent_scale(model: nn.Module, data: RenderedSet, n: int = 2048) -> float:
    """One over the standard deviation of the posterior-mean latents of ``n`` training
    images (Rombach et al. 2022, App. G: the latents' rescaling)."""
    with torch.no_grad():
        rows = torch.arange(min(n, len(data.images)), device=data.images.device)
        z = torch.cat([model.posterior(data.floats(part) * 2 - 1).mean.float() for part in rows.split(256)])
    return float(1 / z.std())


#: warm-up of the constant-rate recipes, fixed so that it does not move when a run is
#: resumed to a larger step count
CONSTANT_WARMUP = 200


def learning_rate_factor(entry: ZooModel, steps: int) -> Callable[[int], float]:
    """Linear warm-up, then the recipe's schedule: cosine decay over ``steps`` after a
    warm-up of 5% of them, or constant after `CONSTANT_WARMUP` steps."""
    if entry.lr_schedule == "constant":
        return lambda s: min(1.0, (s + 1) / CONSTANT_WARMUP)
    warmup = max(1, steps // 20)
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def checkpoint_path(name: str) -> Path:
    """The training state of an unfinished or resumable run, outside the work tree."""
    return home() / "zoo-checkpoints" / f"{name}.pt"


class TrainingState:
    """Everything `fit` needs to go on where it stopped: network, EMA, optimiser,
    schedule, step, loss history, seconds spent and the sampler's random state. Saved
    atomically every ``every`` steps, so an interrupted run loses at most that many."""

    def __init__(self, path: Path, entry: ZooModel, steps: int, train_size: int, seed: int, init: str | None = None,
                 every: int = 200):  # fmt: skip
        self.path, self.entry, self.steps, self.every = path, entry, steps, every
        self.identity = {"name": entry.name, "arguments": _jsonable(entry.arguments), "train_size": train_size,
                         "seed": seed, "batch_size": entry.batch_size, "lr": entry.lr, "init": init}  # fmt: skip

    def save(self, step: int, parts: dict[str, Any], history: list[float], seconds: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"identity": self.identity, "steps": self.steps, "step": step, "history": history,
                 "seconds": seconds, "rng": torch.get_rng_state(),
                 **{key: part.state_dict() for key, part in parts.items()}}  # fmt: skip
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def load(self, parts: dict[str, Any]) -> tuple[int, list[float], float]:
        """Restore ``parts`` in place, wherever they live; returns (step, history, seconds).
        The state is read onto the CPU: the random state must be a CPU tensor, and each
        part moves its own tensors to its device."""
        if not self.path.exists():
            raise CfbenchError(f"no training state of {self.entry.name!r} to resume at {self.path}.")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one message
            raise CfbenchError(f"{self.path} is not a readable training state ({e}).") from None
        if state.get("identity") != self.identity:
            raise CfbenchError(f"{self.path} was saved by a different recipe or run ({state.get('identity')}); "
                               "remove it or train without --resume.")  # fmt: skip
        if self.entry.lr_schedule != "constant" and state["steps"] != self.steps:
            raise CfbenchError(f"{self.entry.name!r} decays its learning rate over {state['steps']} steps; resume "
                               f"it with --steps {state['steps']}.")  # fmt: skip
        for key, part in parts.items():
            part.load_state_dict(state[key])
        torch.set_rng_state(state["rng"])
        return state["step"], state["history"], state["seconds"]


def ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """Exponential moving average whose decay ramps up as min(decay, (1 + n)/(10 + n))
    after n updates (the ``num_updates`` rule of TensorFlow's ExponentialMovingAverage),
    so that the average of a short run is not dominated by the initial weights."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        n = float(updates)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    return update


def _jsonable(arguments: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items()}


def fit(
    model: nn.Module, loss: Loss, data: RenderedSet, entry: ZooModel, steps: int, device: torch.device,
    state: TrainingState, resume: bool = False,
) -> tuple[nn.Module, list[float], float]:  # fmt: skip
    """AdamW with linear warm-up and the recipe's schedule; bf16 autocast on CUDA (and
    on CPU where the recipe asks). Returns the trained network, or its exponential
    moving average when the recipe keeps one, the loss history and the seconds spent
    (over all resumed runs)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=entry.lr, weight_decay=entry.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(entry, steps))
    sample_rows = RowSampler(data.identities, entry.batch_size, entry.per_identity)
    average = AveragedModel(model, multi_avg_fn=ema_with_warmup(entry.ema)) if entry.ema else None
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule, **({"average": average} if average else {})}
    start, history, spent = state.load(parts) if resume else (0, [], 0.0)
    autocast = device.type == "cuda" or entry.cpu_bf16
    model.train()
    began = time.time()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {entry.name}", unit="step")
    for step in bar:
        rows = sample_rows()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            value = loss(model, data, rows)
        logged, saved = step % 50 == 0 or step == steps - 1, (step + 1) % state.every == 0 or step == steps - 1
        if (logged or saved) and not torch.isfinite(value):  # checked when read: a check waits for the GPU
            raise CfbenchError(f"training {entry.name!r} diverged at step {step} (loss {value.item()}); the last "
                               f"good state is kept at {state.path}.")  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(model)
        if logged:
            history.append(value.item())
            bar.set_postfix(loss=f"{history[-1]:.4f}")
        if saved:
            state.save(step + 1, parts, history, spent + time.time() - began)
    trained = average.module if average is not None else model
    return trained.eval(), history, spent + time.time() - began


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


def first_stage(entry: ZooModel, weights_dir: Path, device: torch.device) -> nn.Module:
    """The autoencoder a latent diffusion model works on, from ``weights_dir`` (where the
    model itself is written)."""
    stage = ZOO[entry.first_stage]
    return load_weights(stage.build(), weights_dir / f"{stage.name}.safetensors", stage.name).eval().to(device)


def recipe_loss(entry: ZooModel, device: torch.device, weights_dir: Path = WEIGHTS_DIR) -> Loss:
    """The objective a zoo recipe trains with (a latent model's first stage is read from
    ``weights_dir``)."""
    if entry.kind in ("ddpm", "diffae"):
        return diffusion_loss(entry.process(), autoencoder=entry.kind == "diffae")
    if entry.kind == "autoencoder":
        return autoencoder_loss(synthfaces_vgg_lpips().to(device))
    if entry.kind == "ldm":
        return latent_diffusion_loss(entry.process(), first_stage(entry, weights_dir, device))
    return {
        "classifier": multilabel_loss(list(range(len(spec.ATTRIBUTES)))),
        "oracle": multilabel_loss(list(range(len(spec.ATTRIBUTES)))),
        "perceptual": multilabel_loss(list(range(len(spec.ATTRIBUTES)))),
        "shortcut": multilabel_loss([spec.INDEX["Smiling"]]),
        "identity": identity_loss,
        "simsiam": simsiam_loss,
    }[entry.kind]


def initial_weights(name: str, init: str) -> Path:
    """The weights a warm start begins from: ``shipped`` (the package's) or a file."""
    return WEIGHTS_DIR / f"{name}.safetensors" if init == "shipped" else Path(init)


def train(name: str, device: torch.device, steps: int | None, train_size: int | None, seed: int,
          out_dir: Path = WEIGHTS_DIR, eval_size: int = 2000, resume: bool = False,
          init: str | None = None) -> dict:  # fmt: skip
    """Train (or, with ``resume``, go on training from the saved state) and measure one
    zoo model; writes its weights, record and card to ``out_dir``. ``init`` warm-starts
    from ``shipped`` weights or a safetensors file (the EMA starts from them too), so that
    time on another machine continues a training instead of restarting it."""
    entry = ZOO[name]
    torch.manual_seed(seed)
    steps = steps or entry.steps
    train_size = train_size or entry.train_size
    began = time.time()
    data = training_set(entry.image_size, entry.kind == "shortcut", train_size, device)
    render_seconds = time.time() - began
    model = entry.build()
    init_digest, previous = None, None
    if init:
        path = initial_weights(name, init)
        load_weights(model, path, name)
        init_digest = hashlib.sha256(path.read_bytes()).hexdigest()
        card = path.with_suffix(".json")
        if card.exists():  # the training the warm start continues, for the new card
            old = json.loads(card.read_text())
            previous = {k: v for k, v in old["training"].items() if k != "loss_history"} | {"command": old["command"]}
    model = model.to(device).to(memory_format=torch.channels_last)
    loss = recipe_loss(entry, device, out_dir)
    state = TrainingState(checkpoint_path(name), entry, steps, train_size, seed, init_digest)
    model, history, train_seconds = fit(model, loss, data, entry, steps, device, state, resume)
    if entry.kind == "autoencoder":
        model.scale_factor.fill_(latent_scale(model, data))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / f"{name}.safetensors", entry.storage)
    stored = load_weights(entry.build(), out_dir / f"{name}.safetensors", name).eval().to(device)
    measured, picture = measure(name, stored, device, eval_size, out_dir)  # what ships is what is measured
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
            "init": {"weights": init, "sha256": init_digest, "previous": previous} if init else None,
            "device": device_name(device),
            "render_seconds": round(render_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "loss_history": [round(v, 5) for v in history],
        },
        "storage": {"format": entry.storage,
                    "relative_output_error": storage_error(entry, model, stored, device, out_dir)},
        "measured": measured,
        "command": f"cfbench zoo train {name} --seed {seed} --steps {steps} --train-size {train_size}"
                   + (f" --init {init}" if init else ""),
    }
    if (out_dir / f"{name}.json").exists() and "throughput" in (previous := read_card(name, out_dir)):
        record["throughput"] = previous["throughput"]  # an architecture's speed does not change with training
    write_card(entry, record, picture, out_dir)
    return record


def storage_error(entry: ZooModel, trained: nn.Module, stored: nn.Module, device: torch.device,
                  weights_dir: Path = WEIGHTS_DIR) -> float | None:
    """‖stored(x) − trained(x)‖ / ‖trained(x)‖ on 64 fresh images (a diffusion model's ε on
    them noised to step T/4): what storing the weights costs (None for the DiffAE, whose
    card measures its reconstructions with the stored weights)."""
    if entry.kind == "diffae":
        return None
    x = render_set(entry.image_size, ev.FRESH_SPLIT, ev.fresh_indices(64)).floats(slice(None)).to(device)
    with torch.no_grad():
        if entry.kind in ("ddpm", "ldm"):
            process = entry.process()
            t = torch.full((len(x),), process.num_timesteps // 4, device=device)
            x0 = x * 2 - 1 if entry.kind == "ddpm" else first_stage(entry, weights_dir, device).encode(x * 2 - 1)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(device)
            x_t = process.q_sample(x0, t, noise)
            if entry.kind == "ddpm":
                a, b = trained(x_t, t), stored(x_t, t)
            else:
                states = render_set(entry.image_size, ev.FRESH_SPLIT, ev.fresh_indices(64)).labels.long().to(device)
                a, b = trained(x_t, t, states), stored(x_t, t, states)
        elif entry.kind == "autoencoder":
            a, b = trained.decode(trained.encode(x * 2 - 1)), stored.decode(stored.encode(x * 2 - 1))
        else:
            a, b = trained(x), stored(x)
    return round(float((b - a).norm() / a.norm()), 5)


def remeasure(name: str, device: torch.device, eval_size: int, out_dir: Path = WEIGHTS_DIR) -> dict:
    """Measure the saved weights of a trained zoo model again (e.g. on more images than
    training measured on, or on a changed world) and rewrite its record, card and picture;
    weights stored in another format than the recipe's are stored again first."""
    entry = ZOO[name]
    record = read_card(name, out_dir)
    path = out_dir / f"{name}.safetensors"
    model = load_weights(entry.build(), path, name).eval().to(device)
    if stored_format(path) != entry.storage:
        save_weights(model, path, entry.storage)
        stored = load_weights(entry.build(), path, name).eval().to(device)
        record["storage"] = {"format": entry.storage,
                             "relative_output_error": storage_error(entry, model, stored, device, out_dir)}
        model = stored
    record["measured"], picture = measure(name, model, device, eval_size, out_dir)
    record["measure_command"] = f"cfbench zoo measure {name} --eval-size {eval_size}"
    write_card(entry, record, picture, out_dir)
    return record


def record_throughput(name: str, throughput: dict, out_dir: Path = WEIGHTS_DIR) -> None:
    """Store the figures of ``benchmarks/bench_diffusion.py --card`` (a command, the
    machine, and rows of device, dtype, batch, evaluations/s, images/s) in a zoo
    model's record and card; the previous figures for the same mode are replaced."""
    entry = ZOO[name]
    record = read_card(name, out_dir)
    record.setdefault("throughput", {})[throughput["mode"]] = throughput
    write_card(entry, record, None, out_dir)


def write_card(entry: ZooModel, record: dict, picture: torch.Tensor | None, out_dir: Path) -> None:
    """``<name>.json`` (the record), ``<name>.md`` (the card) and, for the generative
    models, ``<name>.png`` (the picture the card shows; kept when ``picture`` is None)."""
    if picture is not None:
        atomic_write_bytes(out_dir / f"{entry.name}.png", png_bytes(picture))
    atomic_write_text(out_dir / f"{entry.name}.json", json.dumps(record, indent=2) + "\n")
    shown = (out_dir / f"{entry.name}.png").exists()
    atomic_write_text(out_dir / f"{entry.name}.md", model_card(entry, record, shown))


def measure(name: str, model: nn.Module, device: torch.device, n: int,
            weights_dir: Path = WEIGHTS_DIR) -> tuple[dict, torch.Tensor | None]:  # fmt: skip
    """The figures a model card states, on ``n`` freshly rendered validation images (the
    DDPM's samples against test images; the shortcut model is compared with the clean
    classifier in ``weights_dir``), and for the generative models a picture: 32 samples,
    or 16 images above their reconstructions."""
    entry = ZOO[name]
    if entry.kind == "ddpm":
        process = entry.process(respacing=entry.evaluation["respacing"])
        figures, samples = ev.ddpm_sample_quality(model, process, entry.image_size, n, device)
        return figures, grid(samples[:32])
    if entry.kind == "diffae":
        figures, x, reconstructed = ev.diffae_reconstruction(model, entry.image_size, min(n, 256), device,
                                                             **entry.evaluation)
        return figures, grid(torch.cat([x[:16], reconstructed[:16]]), rows=2)
    if entry.kind == "autoencoder":
        figures, x, reconstructed = ev.autoencoder_reconstruction(model, entry.image_size, n, device)
        return figures, grid(torch.cat([x[:16], reconstructed[:16]]), rows=2)
    if entry.kind == "ldm":
        process = entry.process(respacing=f"ddim{entry.evaluation['ddim_steps']}")
        figures, shown = ev.ldm_quality(model, first_stage(entry, weights_dir, device), process, entry.image_size,
                                        min(n, 512), device, **entry.evaluation)
        return figures, grid(shown, rows=4)
    return measure_network(name, model, device, n, weights_dir), None


def grid(images: torch.Tensor, rows: int = 4) -> torch.Tensor:
    """uint8 (3, H', W') grid of images in [0, 1], ``rows`` rows."""
    return quantize(make_grid(images, nrow=max(1, len(images) // rows), padding=2, pad_value=1.0)[None])[0]


def measure_network(name: str, model: nn.Module, device: torch.device, n: int, weights_dir: Path) -> dict:
    """The figures of a classifier, shortcut, oracle, perceptual, identity or SimSiam model."""
    entry = ZOO[name]
    data = render_set(entry.image_size, ev.FRESH_SPLIT, ev.fresh_indices(n))
    if entry.kind in ("classifier", "oracle", "perceptual"):
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


#: what the figures of the generative models' cards are (`cfbench.zoo.evaluate`)
MEASURED_MEANING = {
    "ddpm": "Ancestral samples (the process respaced to `sampling_steps`) against as many test images: FID in "
            "the features of the synthfaces FID network (the oracle's pooled 512-d features), its floor (as many "
            "fresh real images against the same test images), and the oracle's attribute frequencies (%) on the "
            "samples and on the data, with their largest gap in points; the mean colour (R, G, B on [0, 1]) of "
            "the samples and of the data.",
    "diffae": "Each image is encoded to z_sem, DDIM-inverted to x_T in `encode_steps` and rendered back in "
              "`render_steps`: the synthfaces-lpips stand-in distance (LPIPS-style, on the oracle's stages), "
              "the L2 norm of the difference on [0, 1] pixels (64×64×3 values), and the % of (image, attribute) "
              "pairs whose oracle decision the reconstruction keeps.",
    "autoencoder": "Each image is encoded (posterior mean) and decoded: the synthfaces-lpips stand-in distance, the "
                   "L2 norm of the difference on [0, 1] pixels and the % of (image, attribute) pairs whose oracle "
                   "decision the reconstruction keeps; the latents' scale factor (one over their standard deviation "
                   "on 2,048 training images).",
    "ldm": "DDIM samples (η = 0, `ddim_steps`): unconditional ones against as many test images (FID in the synthfaces "
           "features, its floor, oracle attribute frequencies); conditional ones with classifier-free guidance "
           "`cfg_scale` asking for Smiling or Young = 0 (half) or 1 (half), every other attribute unknown: the % on "
           "which the oracle agrees with what was asked; and the null edit at LDCE's `strength` (encode, noise, "
           "denoise unconditionally, decode): the % of oracle decisions, and of synthfaces-densenet Smiling / Young "
           "decisions, it keeps.",
}  # fmt: skip


def _storage_text(record: dict) -> str:
    storage = record.get("storage", {"format": "fp16"})
    error = storage.get("relative_output_error")
    return storage["format"] + (f" (relative output error against the trained fp32 weights {error})" if error else "")


def lineage(training: dict) -> list[dict]:
    """The trainings a warm start continued, most recent first."""
    previous = (training.get("init") or {}).get("previous")
    return [previous, *lineage(previous)] if previous else []


def model_card(entry: ZooModel, record: dict, picture: bool = False) -> str:
    t = record["training"]
    lines = [
        f"# {entry.name}",
        "",
        entry.description,
        "",
        f"- Architecture: `{entry.architecture}({', '.join(f'{k}={v}' for k, v in entry.arguments.items())})`, "
        f"{entry.parameters()} parameters, weights stored in {_storage_text(record)}.",
        f"- Training data: {t['images']} rendered `synthfaces` train images at {entry.image_size} px "
        f"({t['distribution']}).",
        f"- Training: {t['steps']} steps, batch {t['batch_size']}, AdamW lr {t['lr']}, seed {t['seed']}, "
        f"on {t['device']} ({t['train_seconds']} s"
        + (f", rendering {t['render_seconds']} s)" if t.get("render_seconds") is not None else ")")
        + (f", warm-started from the {t['init']['weights']} weights (sha256 {t['init']['sha256'][:12]}…)"
           if t.get("init") else "") + ".",
        *([f"- Before that: `{p['command']}` on {p['device']} ({p['train_seconds']} s)" for p in lineage(t)]),
        f"- Command: `{record['command']}`"
        + (f"; measured again with `{record['measure_command']}`" if "measure_command" in record else ""),
        "",
        "## Measured on freshly rendered validation images (people unseen in training)",
        "",
        *([MEASURED_MEANING[entry.kind], ""] if entry.kind in MEASURED_MEANING else []),
        "```json",
        json.dumps(record["measured"], indent=2),
        "```",
        "",
    ]
    if picture:
        shows = {"ddpm": "32 samples",
                 "ldm": "16 unconditional samples (top two rows), 8 fresh images and their null edits (bottom rows)",
                 }.get(entry.kind, "16 fresh images (top) and their reconstructions (bottom)")
        lines += [f"![{shows}]({entry.name}.png)", "", f"{shows[0].upper()}{shows[1:]}.", ""]
    for mode, figures in sorted(record.get("throughput", {}).items()):
        lines += [f"## Throughput ({mode})", "", f"`{figures['command']}` on {figures['machine']}:", "",
                  f"| device | dtype | batch | {'steps' if mode.startswith('training') else 'evaluations'}/s | images/s |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['device']} | {r['dtype']} | {r['batch']} | {r['evals_per_s']} | {r['images_per_s']} |"
                  for r in figures["rows"]]  # fmt: skip
        lines.append("")
    return "\n".join(lines)
