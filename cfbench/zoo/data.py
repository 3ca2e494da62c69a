"""Rendering training and evaluation sets of `synthfaces` in parallel processes."""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from cfbench.datasets.synthfaces import SynthFaces
from cfbench.datasets.synthfaces.spec import INDEX


@dataclass
class RenderedSet:
    """uint8 images (N, 3, H, W), float labels (N, A), identity ids (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    identities: torch.Tensor

    def to(self, device: torch.device) -> "RenderedSet":
        return RenderedSet(self.images.to(device), self.labels.to(device), self.identities.to(device))

    def floats(self, rows: torch.Tensor) -> torch.Tensor:
        return self.images[rows].float().div_(255)


def _render_chunk(args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one chunk; an override value is 0/1, "flip", or the name of another
    attribute whose value is copied (``{"Rosy_Cheeks": "Smiling"}``)."""
    image_size, split_name, indices, overrides = args
    split = SynthFaces(image_size=image_size).split(split_name)
    scenes = split.scenes(indices)
    if overrides:
        scenes = [s.with_attributes({k: s.attribute(v) if v in INDEX else v for k, v in overrides.items()}) for s in scenes]
    images = (split.render_scenes(scenes) * 255).round_().to(torch.uint8).numpy()
    labels = np.asarray([s.attributes for s in scenes], dtype=np.float32)
    return images, labels, split.identity_ids(indices)


def render_set(
    image_size: int,
    split_name: str,
    indices: np.ndarray,
    overrides: Mapping[str, object] | None = None,
    workers: int | None = None,
    chunk: int = 512,
) -> RenderedSet:
    """Render ``indices`` of a split (with attribute ``overrides``) on all cores."""
    jobs = [(image_size, split_name, indices[i : i + chunk], overrides) for i in range(0, len(indices), chunk)]
    workers = workers or mp.cpu_count()
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(job) for job in jobs]
    images, labels, identities = (np.concatenate(p) for p in zip(*parts))
    return RenderedSet(torch.from_numpy(images), torch.from_numpy(labels).float(), torch.from_numpy(identities).long())
