"""The registry of diffusion backbones, timm's ``create_model`` idea: one record per
backbone (architecture, where its weights come from, the process it was trained with,
value range and resolution), and `create_backbone(name)`.

The process comes from the record: a method chooses how to *sample* (the respacing),
never what the weights were trained with (T, schedule, variance, parameterisation).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.sampling import Denoiser
from cfbench.diffusion.spaces import PixelSpace
from cfbench.errors import CfbenchError
from cfbench.registry import Registry
from cfbench.weights import state_digest
from cfbench.zoo import ZOO

BACKBONES = Registry("backbone", "cfbench.backbones")


@dataclass(frozen=True)
class BackboneRecord:
    """A diffusion backbone.

    ``kind``: ``ddpm`` (``model(x_t, t) -> ε[, v]``) or ``diffae`` (``model(x_t, t, z_sem)
    -> ε``, with ``encode``). ``weights``: ``published:NAME`` (`cfbench.weights`, read by
    ``architecture``, a ``module:attr`` configuration), ``zoo:NAME`` (`cfbench.zoo`) or
    ``file`` (a user's own checkpoint in the published layout of ``architecture``, whose
    path `create_backbone` is given).
    ``process``: the `GaussianDiffusion.from_config` arguments of training
    (``num_timesteps``, ``schedule``, ``variance``), ε-parameterised.
    """

    name: str
    kind: str
    weights: str
    resolution: int
    process: dict[str, Any]
    architecture: str = ""
    value_range: tuple[float, float] = (-1.0, 1.0)
    source: str = ""
    #: sha256 of the weight file as published, where it is known
    sha256: str | None = None
    parameterisation: str = "eps"

    def make_process(self, respacing: str | int | None = None) -> GaussianDiffusion:
        """The training process, respaced for sampling (``"200"``, ``"ddim50"``, …)."""
        try:
            return GaussianDiffusion.from_config(**self.process, respacing=respacing)
        except ValueError as e:
            raise CfbenchError(f"backbone {self.name}: {e}.") from None


@dataclass
class Backbone:
    """A loaded backbone: its network (eval mode), the respaced process, its image space
    and the digest of the weights it holds."""

    record: BackboneRecord
    model: nn.Module
    process: GaussianDiffusion
    digest: str = field(default="")

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def space(self) -> PixelSpace:
        return PixelSpace(self.record.resolution, self.record.value_range)

    def denoiser(self, n: int, condition: Tensor | None = None) -> Denoiser:
        """The network as the denoising loop calls it for a batch of ``n`` samples; a DiffAE
        is conditioned on ``condition`` (z_sem of the rows it is called on, in order)."""
        if self.record.kind == "diffae":
            if condition is None:
                raise ValueError(f"{self.name}: a DiffAE denoiser needs its z_sem (condition=)")
            return Denoiser(lambda x, t: self.model(x, t, condition[: x.shape[0]]), self.process, n)
        return Denoiser(self.model, self.process, n)


for _record in (
    # DiME §3.2 / ACE §4: the CelebA 128 px DDPM of both (DiME `main.py` flags: 500 linear steps, learn_sigma)
    BackboneRecord("ddpm-celeba128", "ddpm", "published:ddpm-celeba128", 128,
                   {"num_timesteps": 500, "schedule": "linear", "variance": "learned_range"},
                   "cfbench.diffusion.unet:CELEBA_128", source="DiME / ACE (guillaumejs2403/DiME `main.py` flags)"),
    # ACE `scripts/celebahq-attack.sh`: the same process, 256 px, num_head_channels 64
    BackboneRecord("ddpm-celebahq256", "ddpm", "published:ddpm-celebahq256", 256,
                   {"num_timesteps": 500, "schedule": "linear", "variance": "learned_range"},
                   "cfbench.diffusion.unet:CELEBAHQ_256", source="ACE (guillaumejs2403/ACE `scripts/celebahq-attack.sh`)"),
    # DiffAE (phizaz/diffae `templates.py`): T = 1000 linear, ε, DDIM sampling; GCD's CelebA and FFHQ models
    BackboneRecord("diffae-celeba128", "diffae", "published:diffae-celeba128", 128,
                   {"num_timesteps": 1000, "schedule": "linear", "variance": "fixed_large"},
                   "cfbench.diffusion.diffae:CELEBA_128", source="GCD (sobieskibj/gcd, celeba128_autoenc)"),
    BackboneRecord("diffae-ffhq256", "diffae", "published:diffae-ffhq256", 256,
                   {"num_timesteps": 1000, "schedule": "linear", "variance": "fixed_large"},
                   "cfbench.diffusion.diffae:FFHQ_256", source="DiffAE (phizaz/diffae, ffhq256_autoenc)"),
):  # fmt: skip
    BACKBONES.register(_record.name, description=_record.source)(_record)
for _entry in ZOO.values():  # the zoo's diffusion models, with the process `cfbench zoo train` trained them with
    if _entry.kind in ("ddpm", "diffae"):
        BACKBONES.register(_entry.name, description="cfbench zoo")(BackboneRecord(
            _entry.name, _entry.kind, f"zoo:{_entry.name}", _entry.image_size, dict(_entry.diffusion),
            source="cfbench zoo"))


def _load(record: BackboneRecord, path: Path | None) -> nn.Module:
    kind, _, name = record.weights.partition(":")
    if kind == "zoo":
        from cfbench.zoo.weights import load_weights

        entry = ZOO[name]
        return load_weights(entry.build(), path, name).eval() if path else entry.load()
    from cfbench.weights import locate

    module, _, attribute = record.architecture.partition(":")
    config = getattr(importlib.import_module(module), attribute)
    if kind == "file" and path is None:
        raise CfbenchError(f"backbone {record.name} is read from a file of yours: give its path (weights_path).")
    found = path if kind == "file" else locate(name, path)
    if record.kind == "diffae":
        from cfbench.diffusion.diffae import load_diffae_checkpoint

        return load_diffae_checkpoint(found, config)
    from cfbench.diffusion.unet import load_guided_diffusion

    if config.learn_sigma != (record.process["variance"] == "learned_range"):
        raise CfbenchError(f"backbone {record.name}: learn_sigma and the record's variance disagree.")
    return load_guided_diffusion(found, config, record.name)


def create_backbone(name: str, respacing: str | int | None = None, path: Path | str | None = None) -> Backbone:
    """The backbone ``name`` with its weights (from the cache / zoo, or ``path``) and its
    training process respaced by ``respacing``."""
    record = BACKBONES.get(name)
    process = record.make_process(respacing)
    model = _load(record, Path(path).expanduser() if path else None)
    return Backbone(record, model, process, state_digest(model))
