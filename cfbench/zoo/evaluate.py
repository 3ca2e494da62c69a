"""Measured figures of the zoo models on freshly rendered `synthfaces` samples.

The same functions write the model cards and back the tests. Fresh samples come from
the validation split, whose identities neither training (train split) nor the
runs (test split) ever see.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfbench.datasets.synthfaces import spec
from cfbench.diffusion.sampling import Denoiser, denoise
from cfbench.record import quantize
from cfbench.zoo.augment import simsiam_view
from cfbench.zoo.data import RenderedSet, render_set

FRESH_SPLIT = "val"


def fresh_indices(n: int) -> np.ndarray:
    return np.arange(n)


@torch.no_grad()
def predict(model: nn.Module, data: RenderedSet, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outputs = []
    for start in range(0, len(data.images), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data.images)))
        outputs.append(model(data.floats(rows).to(device)).float().cpu())
    return torch.cat(outputs)


def attribute_accuracy(model: nn.Module, data: RenderedSet, device: torch.device) -> dict[str, float]:
    """Per-attribute accuracy (%) of a multi-attribute network."""
    correct = (predict(model, data, device) > 0).float() == data.labels
    return {name: float(correct[:, i].float().mean() * 100) for i, name in enumerate(spec.ATTRIBUTES)}


def binary_accuracy(model: nn.Module, data: RenderedSet, attribute: str, device: torch.device) -> float:
    logits = predict(model, data, device).reshape(-1)
    return float(((logits > 0).float() == data.labels[:, spec.INDEX[attribute]]).float().mean() * 100)


def intervention_flip_rate(
    model: nn.Module, image_size: int, attribute: str, n: int, device: torch.device, workers: int | None = None
) -> float:
    """% of images whose decision changes when only ``attribute`` is toggled (0 vs 1),
    identity and nuisance held fixed."""
    indices = fresh_indices(n)
    off = render_set(image_size, FRESH_SPLIT, indices, {attribute: 0}, workers)
    on = render_set(image_size, FRESH_SPLIT, indices, {attribute: 1}, workers)
    flips = (predict(model, off, device).reshape(-1) > 0) != (predict(model, on, device).reshape(-1) > 0)
    return float(flips.float().mean() * 100)


def identity_verification(
    model: nn.Module, data: RenderedSet, device: torch.device, threshold: float = 0.5
) -> dict[str, float]:
    """% of same-identity pairs (renders with different attributes) above the cosine
    threshold, and % of different-identity pairs above it (FVA's rule, DiME §4.1)."""
    z = F.normalize(predict(model, data, device), dim=1)
    cos = z @ z.T
    same = data.identities[:, None] == data.identities[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    differs = (data.labels[:, None, :] != data.labels[None, :, :]).any(-1)
    genuine = cos[same & upper & differs]
    impostor = cos[~same & upper]
    return {
        "same_identity_pairs": int(genuine.numel()),
        "same_identity_above": float((genuine > threshold).float().mean() * 100),
        "different_identity_pairs": int(impostor.numel()),
        "different_identity_above": float((impostor > threshold).float().mean() * 100),
    }


def view_agreement(model: nn.Module, data: RenderedSet, device: torch.device) -> dict[str, float]:
    """Mean cosine of the SimSiam projector output between two augmented views of the
    same image, and between different images."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)
    views = [RenderedSet((simsiam_view(data.images.float() / 255) * 255).round().byte(), data.labels, data.identities)
             for _ in range(2)]  # fmt: skip
    torch.set_rng_state(generator_state)
    z1, z2 = (F.normalize(predict(model, v, device), dim=1) for v in views)
    same = (z1 * z2).sum(1)
    other = (z1 * z2.roll(1, dims=0)).sum(1)
    return {"same_image_cosine": float(same.mean()), "different_image_cosine": float(other.mean())}


def _synthfaces_network(role: str, device: torch.device) -> nn.Module:
    """The synthfaces evaluation network of ``role`` (`cfbench.oracles`)."""
    from cfbench.oracles import load_network

    return load_network(role, "synthfaces").to(device).module


@torch.no_grad()
def _outputs(network: nn.Module, device: torch.device, *images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``network`` on images in [0, 1] (one batch, or two for a perceptual distance), batched."""
    return torch.cat([network(*(x[i : i + batch_size].to(device) for x in images)).float().cpu()
                      for i in range(0, len(images[0]), batch_size)])  # fmt: skip


def _distribution_figures(generated: torch.Tensor, real: RenderedSet, device: torch.device) -> dict[str, object]:
    """FID with the synthfaces feature network, the oracle's attribute frequencies (%)
    on generated vs real images with the largest gap in points, and the mean colour
    (per RGB channel, on [0, 1]) of each. The FID floor is that of as many fresh real
    images against the same reference: the FID a perfect generator would get from this
    many samples."""
    from cfbench.metrics.fid import frechet_distance

    real_images = real.floats(slice(None))
    fresh_images = render_set(real.images.shape[-1], FRESH_SPLIT, fresh_indices(len(generated))).floats(slice(None))
    features, oracle = _synthfaces_network("features", device), _synthfaces_network("oracle", device)
    real_features = _outputs(features, device, real_images)
    fid = frechet_distance(_outputs(features, device, generated), real_features)
    floor = frechet_distance(_outputs(features, device, fresh_images), real_features)
    generated_freq = (_outputs(oracle, device, generated) > 0).float().mean(0) * 100
    real_freq = (_outputs(oracle, device, real_images) > 0).float().mean(0) * 100
    return {
        "fid_synthfaces_features": fid,
        "fid_floor_fresh_real_images": floor,
        "oracle_frequency_generated": {a: round(float(v), 2) for a, v in zip(spec.ATTRIBUTES, generated_freq)},
        "oracle_frequency_data": {a: round(float(v), 2) for a, v in zip(spec.ATTRIBUTES, real_freq)},
        "max_frequency_gap_points": float((generated_freq - real_freq).abs().max()),
        "mean_rgb_generated": [round(float(v), 3) for v in generated.mean((0, 2, 3))],
        "mean_rgb_data": [round(float(v), 3) for v in real_images.mean((0, 2, 3))],
    }


def oracle_decisions_kept(x: torch.Tensor, edited: torch.Tensor, device: torch.device) -> float:
    """% of (image, attribute) pairs on which the synthfaces oracle decides the same for
    ``edited`` as for ``x`` (images in [0, 1])."""
    oracle = _synthfaces_network("oracle", device)
    return float(((_outputs(oracle, device, x) > 0) == (_outputs(oracle, device, edited) > 0)).float().mean() * 100)


@torch.no_grad()
def ddpm_sample_quality(model: nn.Module, process, image_size: int, n: int, device: torch.device,
                        batch_size: int = 250, seed: int = 0) -> tuple[dict[str, object], torch.Tensor]:  # fmt: skip
    """``n`` ancestral samples (the process as given, e.g. respaced to 100 steps) against
    the first ``n`` test images: FID and attribute frequencies, and the samples in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    samples = []
    for i in range(0, n, batch_size):
        x_T = torch.randn((min(batch_size, n - i), 3, image_size, image_size), generator=generator).to(device)
        samples.append(denoise(Denoiser(model, process, len(x_T)), x_T, noise=generator, progress=True))
    samples = torch.cat(samples)
    generated = quantize((samples + 1) / 2).float() / 255  # as a run saves images
    figures = {"samples": n, "sampling_steps": process.num_timesteps,
               **_distribution_figures(generated, render_set(image_size, "test", np.arange(n)), device)}  # fmt: skip
    return figures, generated


@torch.no_grad()
def diffae_reconstruction(model: nn.Module, image_size: int, n: int, device: torch.device, encode_steps: int = 250,
                          render_steps: int = 100, batch_size: int = 128,
                          ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:  # fmt: skip
    """encode → DDIM-invert → render on ``n`` fresh images: mean LPIPS (the synthfaces
    stand-in), mean L2 on [0, 1] pixels, and the % of attribute-image pairs whose oracle
    decision the reconstruction keeps; with the images and their reconstructions.

    And how much the semantic code decides (what GCD edits): each image rendered from its
    own x_T with the z_sem of the next image (``semantic_swap_*``): over the (image,
    attribute) pairs where the oracle tells the two images apart, the % where the render
    takes the z_sem donor's attribute, over all attributes and for Smiling and Young."""
    data = render_set(image_size, FRESH_SPLIT, fresh_indices(n))
    x = data.floats(slice(None))
    outputs, swapped = [], []
    for i in range(0, n, batch_size):
        x0 = x[i : i + batch_size].to(device) * 2 - 1
        z = model.encode(x0)
        x_T = model.invert(x0, z, encode_steps, progress=True)
        outputs.append(quantize((model.render(z, x_T, render_steps, progress=True) + 1) / 2))
        swapped.append(quantize((model.render(z.roll(-1, 0), x_T, render_steps, progress=True) + 1) / 2))
    reconstructed = torch.cat(outputs).float() / 255  # as a run saves images
    distance = _outputs(_synthfaces_network("perceptual", device), device, x, reconstructed, batch_size=batch_size)
    figures = {
        "images": n, "encode_steps": encode_steps, "render_steps": render_steps,
        "lpips_synthfaces_mean": float(distance.mean()),
        "l2_mean": float((x - reconstructed).flatten(1).norm(dim=1).mean()),
        "oracle_attributes_kept": oracle_decisions_kept(x, reconstructed, device),
        **semantic_swap(x, torch.cat(swapped).float() / 255, batch_size, device),
    }  # fmt: skip
    return figures, x, reconstructed


def semantic_swap(x: torch.Tensor, swapped: torch.Tensor, batch_size: int, device: torch.device) -> dict[str, float]:
    """% of the (image, attribute) pairs that differ between an image and its z_sem donor (the
    next image of its batch of ``batch_size``) on which the oracle gives ``swapped`` the
    donor's decision: over every attribute and for Smiling and Young."""
    oracle = _synthfaces_network("oracle", device)
    base = _outputs(oracle, device, x) > 0
    donor = torch.cat([part.roll(-1, 0) for part in base.split(batch_size)])
    follows = (_outputs(oracle, device, swapped) > 0) == donor
    differ = base != donor
    found = {"semantic_swap_follows_pct": float(follows[differ].float().mean() * 100)}
    for name in ("Smiling", "Young"):
        k = spec.ATTRIBUTES.index(name)
        found[f"semantic_swap_follows_{name.lower()}_pct"] = float(follows[differ[:, k], k].float().mean() * 100)
    return found


def _reconstruction_figures(x: torch.Tensor, reconstructed: torch.Tensor, device: torch.device,
                            batch_size: int = 128) -> dict[str, float]:  # fmt: skip
    """Mean synthfaces LPIPS stand-in and L2 on [0, 1] pixels between images and their
    reconstructions, and the % of attribute-image pairs whose oracle decision they keep."""
    distance = _outputs(_synthfaces_network("perceptual", device), device, x, reconstructed, batch_size=batch_size)
    return {"lpips_synthfaces_mean": float(distance.mean()),
            "l2_mean": float((x - reconstructed).flatten(1).norm(dim=1).mean()),
            "oracle_attributes_kept": oracle_decisions_kept(x, reconstructed, device)}  # fmt: skip


@torch.no_grad()
def autoencoder_reconstruction(model: nn.Module, image_size: int, n: int, device: torch.device,
                               batch_size: int = 128) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """encode (posterior mean) → decode on ``n`` fresh images: `_reconstruction_figures`
    and the latent scale factor; with the images and their reconstructions."""
    x = render_set(image_size, FRESH_SPLIT, fresh_indices(n)).floats(slice(None))
    reconstructed = torch.cat([quantize((model.decode(model.encode(x[i : i + batch_size].to(device) * 2 - 1)) + 1) / 2)
                               for i in range(0, n, batch_size)]).float() / 255  # fmt: skip
    figures = {"images": n, **_reconstruction_figures(x, reconstructed, device),
               "latent_scale_factor": float(model.scale_factor)}  # fmt: skip
    return figures, x, reconstructed


def guided_denoiser(model: nn.Module, process, states: torch.Tensor, scale: float) -> Denoiser:
    """The attribute-conditional latent UNet with classifier-free guidance (Ho & Salimans
    2022, eq. 6): ε_u + scale·(ε_c − ε_u), ε_u with every attribute unknown; scale 0 is
    the unconditional model, 1 the conditional one."""
    from cfbench.diffusion.latent import UNKNOWN

    def network(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rows = states[: len(z)]
        if scale == 0:
            return model(z, t, torch.full_like(rows, UNKNOWN))
        if scale == 1:
            return model(z, t, rows)
        eps_u, eps_c = model(torch.cat([z, z]), torch.cat([t, t]), torch.cat([torch.full_like(rows, UNKNOWN), rows])).chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    return Denoiser(network, process, len(states))


@torch.no_grad()
def ldm_quality(model: nn.Module, first_stage: nn.Module, process, image_size: int, n: int, device: torch.device,
                ddim_steps: int, strength: float, scale: float, batch_size: int = 128,
                seed: int = 0) -> tuple[dict[str, object], torch.Tensor]:  # fmt: skip
    """What the latent model's card states, each on ``n`` images (DDIM, η = 0, ``ddim_steps``):

    * unconditional samples against test images (`_distribution_figures`);
    * conditional samples with classifier-free guidance ``scale``, for Smiling and Young
      each asked to be 0 (n/2) or 1 (n/2), the rest unknown: the % the oracle agrees with;
    * the null edit at LDCE's ``strength`` on fresh images (encode, noise to DDIM index
      ⌊strength·steps⌋, denoise unconditionally, decode): the % of attribute-image pairs
      whose oracle decision it keeps, and of images whose synthfaces-densenet Smiling and
      Young decisions it keeps.
    """
    from cfbench.datasets.synthfaces.spec import ATTRIBUTES, INDEX
    from cfbench.diffusion.latent import UNKNOWN
    from cfbench.zoo import synthfaces_densenet

    generator = torch.Generator().manual_seed(seed)
    latent = (first_stage.vae.config.latent_channels, image_size // 4, image_size // 4)

    def sample(states: torch.Tensor, start: torch.Tensor | None = None, steps: int | None = None) -> torch.Tensor:
        out = []
        for i in range(0, len(states), batch_size):
            rows = states[i : i + batch_size].to(device)
            z = torch.randn((len(rows), *latent), generator=generator).to(device) if start is None else start[i : i + batch_size]
            z = denoise(guided_denoiser(model, process, rows, scale if start is None else 0.0), z, steps,
                        sampler="ddim", progress=True)
            out.append(quantize((first_stage.decode(z) + 1) / 2))
        return torch.cat(out).float() / 255

    unknown = torch.full((n, len(ATTRIBUTES)), UNKNOWN, dtype=torch.long)
    unconditional = sample(unknown)
    figures: dict[str, object] = {"samples": n, "ddim_steps": ddim_steps, "cfg_scale": scale,
                                  **_distribution_figures(unconditional, render_set(image_size, "test", np.arange(n)), device)}
    oracle = _synthfaces_network("oracle", device)
    for name in ("Smiling", "Young"):
        states, asked = unknown.clone(), (torch.arange(n) >= n // 2).long()
        states[:, INDEX[name]] = asked
        decided = _outputs(oracle, device, sample(states))[:, INDEX[name]] > 0
        figures[f"conditional_oracle_agrees_{name.lower()}_pct"] = float((decided.long() == asked).float().mean() * 100)
    x = render_set(image_size, FRESH_SPLIT, fresh_indices(n)).floats(slice(None))
    start = int(strength * ddim_steps)
    z0 = torch.cat([first_stage.encode(x[i : i + batch_size].to(device) * 2 - 1) for i in range(0, n, batch_size)])
    noise = torch.randn(z0.shape, generator=generator).to(device)
    z_t = process.q_sample(z0, torch.full((n,), start, device=device), noise)  # LDCE: noised at index start, run from start − 1
    edited = sample(unknown, z_t, start)
    figures["null_edit"] = {"strength": strength, "oracle_attributes_kept": oracle_decisions_kept(x, edited, device)}
    for name in ("Smiling", "Young"):
        classifier = synthfaces_densenet(name).to(device).eval()
        kept = (_outputs(classifier, device, x) > 0) == (_outputs(classifier, device, edited) > 0)
        figures["null_edit"][f"classifier_kept_{name.lower()}_pct"] = float(kept.float().mean() * 100)
    return figures, torch.cat([unconditional[:16], x[:8], edited[:8]])
