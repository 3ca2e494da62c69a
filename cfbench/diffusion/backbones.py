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

import torch
from torch import Tensor, nn

from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.latent import LatentBackbone, PublishedFirstStage
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

    ``kind``: ``ddpm`` (``model(x_t, t) -> ε[, v]``), ``diffae`` (``model(x_t, t, z_sem)
    -> ε``, with ``encode``) or ``ldm`` (a latent diffusion model, `create_latent_backbone`,
    conditioned on ``conditioning``: ``attributes``, ``class`` or ``text``). ``weights``: ``published:NAME`` (`cfbench.weights`, read by
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
    conditioning: str = ""

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
#: the latent diffusion process as the LDM code defines it (CompVis/latent-diffusion
#: `ldm/modules/diffusionmodules/util.py`, `ldm/models/diffusion/ddim.py`): "linear" is the
#: scaled linear schedule, DDIM timesteps are offset by one, the last step lands on ᾱ_0
LDM_PROCESS = {"num_timesteps": 1000, "schedule": "scaled_linear", "variance": "fixed_small", "clip_denoised": False,
               "steps_offset": 1, "set_alpha_to_one": False}
for _record in (
    # LDCE-txt (LDCE §4, App. B): miniSD, Stable Diffusion v1 fine-tuned at 256 px (`configs/stable-diffusion/v1-inference.yaml`)
    BackboneRecord("minisd", "ldm", "published:minisd", 256, {**LDM_PROCESS, "beta_start": 0.00085, "beta_end": 0.012},
                   "cfbench.diffusion.ldm:MINI_SD", source="LDCE-txt (justinpinkney/miniSD `miniSD.ckpt`)",
                   conditioning="text"),
    # LDCE-cls (LDCE §4, App. B): the class-conditional ImageNet LDM (`configs/latent-diffusion/cin256-v2.yaml`)
    BackboneRecord("cin256-v2", "ldm", "published:cin256-v2", 256, {**LDM_PROCESS, "beta_start": 0.0015, "beta_end": 0.0195},
                   "cfbench.diffusion.ldm:CIN256_V2", source="LDCE-cls (CompVis/latent-diffusion cin256-v2)",
                   conditioning="class"),
):  # fmt: skip
    BACKBONES.register(_record.name, description=_record.source)(_record)
for _entry in ZOO.values():  # the zoo's diffusion models, with the process `cfbench zoo train` trained them with
    if _entry.kind in ("ddpm", "diffae", "ldm"):
        BACKBONES.register(_entry.name, description="cfbench zoo")(BackboneRecord(
            _entry.name, _entry.kind, f"zoo:{_entry.name}", _entry.image_size, dict(_entry.diffusion),
            source="cfbench zoo", conditioning="attributes" if _entry.kind == "ldm" else ""))


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
    if record.kind == "ldm":
        raise CfbenchError(f"backbone {name} is a latent diffusion model; a pixel-space method cannot use it.")
    process = record.make_process(respacing)
    model = _load(record, Path(path).expanduser() if path else None)
    return Backbone(record, model, process, state_digest(model))


#: LDCE App. D: the prompts of LDCE-txt for each query and target (0, 1)
PROMPTS = {"smile": ("a photo of a non-smiling person", "a photo of a smiling person"),
           "age": ("a photo of a old person", "a photo of a young person")}


def create_latent_backbone(name: str, respacing: str | int | None = None, path: Path | str | None = None,
                           text_encoder: Path | str | None = None) -> LatentBackbone:
    """The latent diffusion backbone ``name``: the zoo's attribute-conditional model, or a
    published checkpoint read from ``path`` or the weights cache (LDCE-txt's CLIP tokenizer
    and config from ``text_encoder`` or the cache's ``clip-vit-large-patch14``), with its
    process respaced by ``respacing``."""
    record = BACKBONES.get(name)
    if record.kind != "ldm":
        raise CfbenchError(f"backbone {name} is not a latent diffusion model (it is a {record.kind}).")
    process = record.make_process(respacing)
    space = PixelSpace(record.resolution, record.value_range)
    if record.weights.startswith("zoo:"):
        from cfbench.datasets.synthfaces import SynthFaces
        from cfbench.datasets.synthfaces.spec import ATTRIBUTES
        from cfbench.diffusion.latent import UNKNOWN
        from cfbench.zoo.weights import load_weights

        entry = ZOO[record.name]
        unet = entry.load() if path is None else load_weights(entry.build(), Path(path), name).eval()
        first_stage = ZOO[entry.first_stage].load()

        def attribute_states(targets: Tensor, query: str) -> Tensor:
            attribute = SynthFaces.queries.get(query, query)
            if attribute not in ATTRIBUTES:
                raise CfbenchError(f"backbone {name} is conditioned on synthfaces attributes; {query!r} is none.")
            states = torch.full((len(targets), len(ATTRIBUTES)), UNKNOWN, dtype=torch.long, device=targets.device)
            states[:, ATTRIBUTES.index(attribute)] = targets.long()
            return states

        return LatentBackbone(name, unet, first_stage, process, space, attribute_states,
                              lambda n: torch.full((n, len(ATTRIBUTES)), UNKNOWN, dtype=torch.long),
                              {f"backbone {name}": unet, f"first stage {entry.first_stage}": first_stage})
    from cfbench.diffusion.ldm import load_ldm_checkpoint
    from cfbench.weights import load_all, locate

    kind, _, published = record.weights.partition(":")
    if kind == "file" and path is None:
        raise CfbenchError(f"backbone {name} is read from a file of yours ({record.source}): give its path (weights_path).")
    found, text_encoder = load_all(
        lambda: Path(path).expanduser() if path else locate(published),
        lambda: locate("clip-vit-large-patch14") if record.conditioning == "text" and text_encoder is None
        else text_encoder,
    )
    module, _, attribute = record.architecture.partition(":")
    parts = load_ldm_checkpoint(found, getattr(importlib.import_module(module), attribute),
                                Path(text_encoder).expanduser() if text_encoder else None)

    def network(z: Tensor, t: Tensor, context: Tensor) -> Tensor:
        return parts.unet(z, t, encoder_hidden_states=context).sample

    if record.conditioning == "text":
        def prompts(targets: Tensor, query: str) -> Tensor:
            if query not in PROMPTS:
                raise CfbenchError(f"LDCE-txt has prompts for {', '.join(PROMPTS)}, not {query!r}.")
            return parts.conditioner([PROMPTS[query][int(v)] for v in targets]).to(targets.device)

        make, null = prompts, lambda n: parts.conditioner([""] * n)
    else:  # the class of each target value is that value; the last class is "no class"
        make, null = (lambda targets, query: parts.conditioner(targets.long()),
                      lambda n: parts.conditioner(torch.full((n,), parts.arch.num_classes - 1, dtype=torch.long)))
    first_stage = PublishedFirstStage(parts.first_stage, parts.scale_factor)
    return LatentBackbone(name, network, first_stage, process, space, make, null,
                          {f"backbone {name}": parts.unet, f"first stage {name}": parts.first_stage,
                           f"conditioner {name}": parts.conditioner})
