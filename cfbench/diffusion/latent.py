"""Latent diffusion (Rombach et al., CVPR 2022): a first stage that maps images to
latents and back, an ε-network on the latents conditioned through cross-attention
(diffusers' `UNet2DConditionModel`), and a conditioner that turns what a method asks
for (a class, an attribute's value, a prompt) into the network's context.

`LatentBackbone` is the one interface every latent backbone offers the methods (LDCE):
conditional and unconditional ε, the respaced process, encode/decode with a
differentiable decode of x̂_0. The synthfaces latent model's parts are defined here:
`KLAutoencoder` (diffusers' `AutoencoderKL` with its latent scale) and
`AttributeLatentUNet` (attribute tokens as the context; an attribute may be "unknown",
which trains the unconditional model with the conditional one, for classifier-free
guidance, Ho & Salimans 2022).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, VQModel
from torch import Tensor, nn

from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.spaces import PixelSpace

#: the state of an attribute the condition leaves open (its values are 0 and 1)
UNKNOWN = 2


class AttributeEmbedder(nn.Module):
    """The context of an attribute-conditional UNet: one learned token per attribute for
    each of its states 0, 1 and `UNKNOWN`; ``states`` (B, A) -> (B, A, dim)."""

    def __init__(self, attributes: int, dim: int):
        super().__init__()
        self.attributes = attributes
        self.table = nn.Embedding(3 * attributes, dim)

    def forward(self, states: Tensor) -> Tensor:
        offsets = torch.arange(self.attributes, device=states.device) * 3
        return self.table(states.long() + offsets)


class AttributeLatentUNet(nn.Module):
    """``model(z_t, t, states) -> ε``: diffusers' `UNet2DConditionModel` (``unet`` keyword
    arguments) attending to the attribute tokens of `AttributeEmbedder`."""

    def __init__(self, attributes: int, context_dim: int, unet: dict[str, Any]):
        super().__init__()
        self.embedder = AttributeEmbedder(attributes, context_dim)
        self.unet = UNet2DConditionModel(cross_attention_dim=context_dim, **unet)

    def forward(self, z: Tensor, t: Tensor, states: Tensor) -> Tensor:
        return self.unet(z, t, encoder_hidden_states=self.embedder(states)).sample


class KLAutoencoder(nn.Module):
    """diffusers' `AutoencoderKL` (``vae`` keyword arguments) on [-1, 1] images, with the
    ``scale_factor`` its latents are multiplied by for the diffusion model (Rombach et
    al. 2022, §G: one over the standard deviation of training latents; Stable
    Diffusion's 0.18215). `encode` returns the posterior mean, or a draw with ``noise``."""

    def __init__(self, vae: dict[str, Any]):
        super().__init__()
        self.vae = AutoencoderKL(**vae)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def posterior(self, x: Tensor):
        return self.vae.encode(x).latent_dist

    def encode(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        posterior = self.posterior(x)
        z = posterior.mean if noise is None else posterior.mean + posterior.std * noise
        return z * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scale_factor).sample


class PublishedFirstStage(nn.Module):
    """A published first stage (diffusers' `AutoencoderKL` or `VQModel`) as `LatentBackbone`
    uses it: `encode` gives the scaled posterior mean (KL) or the latent before quantisation
    (VQ, LatentDiffusion's ``get_first_stage_encoding``); `decode` quantises a VQ latent
    first (straight-through gradient), as the LDM code's ``decode_first_stage`` does."""

    def __init__(self, module: AutoencoderKL | VQModel, scale_factor: float):
        super().__init__()
        self.module, self.scale_factor = module, scale_factor

    def encode(self, x: Tensor) -> Tensor:
        if isinstance(self.module, VQModel):
            return self.module.encode(x).latents * self.scale_factor
        return self.module.encode(x).latent_dist.mean * self.scale_factor

    def decode(self, z: Tensor) -> Tensor:
        return self.module.decode(z / self.scale_factor).sample


@dataclass
class LatentBackbone:
    """A loaded latent diffusion backbone.

    ``eps(z_t, i, context)``: the network's ε at respaced index i; ``context(targets,
    attribute)``: the condition that asks for each target value of ``attribute`` (an
    attribute state, a class, a prompt's embedding) and ``null_context(n)`` the
    unconditional one; ``encode``/``decode`` map [-1, 1] images at ``space`` resolution to
    scaled latents and back, differentiably.
    """

    name: str
    network: Callable[[Tensor, Tensor, Any], Tensor]
    first_stage: nn.Module
    process: GaussianDiffusion
    space: PixelSpace
    make_context: Callable[[Tensor, str], Any]
    make_null_context: Callable[[int], Any]
    modules: dict[str, nn.Module]

    def eps(self, z: Tensor, i: int | Tensor, context: Any) -> Tensor:
        index = torch.full((z.shape[0],), int(i), dtype=torch.long, device=z.device) if not torch.is_tensor(i) else i
        return self.network(z, self.process.model_timesteps(index), context)

    def context(self, targets: Tensor, attribute: str) -> Any:
        return self.make_context(targets, attribute)

    def null_context(self, n: int) -> Any:
        return self.make_null_context(n)

    def encode(self, x: Tensor) -> Tensor:
        return self.first_stage.encode(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.first_stage.decode(z)
