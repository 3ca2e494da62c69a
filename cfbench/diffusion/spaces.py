"""Image spaces: where a backbone works, and the way there and back from the [0, 1]
images at the dataset's resolution that the classifier and the harness use.

Every map is differentiable, so a classifier's gradient flows back through it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


def resize(x: Tensor, size: int | tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize (antialiased when shrinking); the identity at the same size."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


@dataclass(frozen=True)
class PixelSpace:
    """A backbone's pixels: ``resolution`` px, values in ``value_range`` ((−1, 1) for the
    guided-diffusion and DiffAE models)."""

    resolution: int
    value_range: tuple[float, float] = (-1.0, 1.0)

    def encode(self, images: Tensor) -> Tensor:
        """[0, 1] images at any size -> this space (antialiased bilinear resize)."""
        low, high = self.value_range
        return resize(images, self.resolution) * (high - low) + low

    def decode(self, x: Tensor, size: tuple[int, int], clamp: bool = True) -> Tensor:
        """This space -> [0, 1] at ``size`` (bilinear, upsampling without antialiasing);
        ``clamp=False`` keeps values outside [0, 1] (and their gradient)."""
        low, high = self.value_range
        x = (resize(x, size, antialias=False) - low) / (high - low)
        return x.clamp(0, 1) if clamp else x


@dataclass(frozen=True)
class LatentSpace:
    """A latent space on top of a pixel space: ``encoder`` and ``decoder`` map between the
    pixel space and latents, which are multiplied by ``scale`` (Stable Diffusion's
    0.18215; 1 for a VQ first stage)."""

    pixels: PixelSpace
    encoder: Callable[[Tensor], Tensor]
    decoder: Callable[[Tensor], Tensor]
    scale: float = 1.0

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(self.pixels.encode(images)) * self.scale

    def decode(self, z: Tensor, size: tuple[int, int], clamp: bool = True) -> Tensor:
        return self.pixels.decode(self.decoder(z / self.scale), size, clamp)
