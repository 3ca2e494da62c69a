"""The `synthfaces` dataset plugin: procedural splits rendered on demand by index.

split name + index → (identity id, attribute uniforms, nuisance uniforms) → pixels.
Every step is a pure function of integers (see ``hashing.py``), so two dataset
objects, two processes or two machines give identical samples, in any order.

Identities: within a split, block ``j`` of ``images_per_identity × IDENTITY_BLOCK``
consecutive indices holds ``IDENTITY_BLOCK`` people, each seen ``images_per_identity``
times (indices ``i``, ``i + 64``, ``i + 128`` … share a person), so consecutive
indices show different people and every prefix of a split is itself a valid split.
Identity ids of different splits live in disjoint ranges (``split_number × 10**9 + …``),
so no person appears in two splits.

Persistent traits: the uniforms that decide ``PERSISTENT`` attributes (Male, Pale_Skin,
Black_Hair, Blond_Hair, Bald) are drawn per *person*, the others per *image*. Each
image's attribute vector still follows the CPTs of ``spec.py`` exactly (ancestral
sampling with uniform variates), but a person keeps sex, skin and hair colour across
their images (baldness too, unless a hat or age changes the label).
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from cfbench.datasets.base import Dataset, Sample, Split
from cfbench.datasets.synthfaces.hashing import uniforms
from cfbench.datasets.synthfaces.render import region_masks as _region_masks
from cfbench.datasets.synthfaces.render import render_scenes
from cfbench.datasets.synthfaces.scene import IDENTITY_UNIFORMS, NUISANCE_UNIFORMS, Identity, Nuisance, SceneParams
from cfbench.datasets.synthfaces.spec import ATTRIBUTES, INDEX, attributes_from_uniforms, correlation_matrix
from cfbench.errors import CfbenchError

SPLIT_NUMBERS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 200_000, "val": 10_000, "test": 10_000}
IDENTITY_RANGE = 10**9  # identity ids of split k are k * IDENTITY_RANGE + [0, IDENTITY_RANGE)
IDENTITY_BLOCK = 64
IMAGES_PER_IDENTITY = 8
READ_AHEAD = 32  # images rendered together when __getitem__ sees indices read in order
_STREAM_ATTRIBUTES, _STREAM_IDENTITY, _STREAM_NUISANCE, _STREAM_PERSON = 11, 12, 13, 14
PERSISTENT = ("Male", "Pale_Skin", "Black_Hair", "Blond_Hair", "Bald")
_PERSISTENT_COLS = [INDEX[a] for a in PERSISTENT]


def _as_indices(indices: Iterable[int] | np.ndarray | torch.Tensor | int) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    return np.atleast_1d(np.asarray(indices, dtype=np.int64))


class SynthFacesSplit(Split):
    """One split of the synthfaces world. Index order is the evaluation order."""

    def __init__(
        self,
        name: str,
        size: int,
        image_size: int = 128,
        seed: int = 0,
        images_per_identity: int = IMAGES_PER_IDENTITY,
        supersample: int = 2,
    ):
        if name not in SPLIT_NUMBERS:
            raise CfbenchError(f"Unknown synthfaces split {name!r}; use one of: {', '.join(SPLIT_NUMBERS)}.")
        if size < 0 or size > IDENTITY_RANGE:
            raise CfbenchError(f"synthfaces split size must be in [0, {IDENTITY_RANGE}], got {size}.")
        self.name, self.size, self.image_size = name, int(size), int(image_size)
        self.seed, self.images_per_identity, self.supersample = int(seed), int(images_per_identity), int(supersample)
        self._key = SPLIT_NUMBERS[name] + 16 * self.seed
        self._width = max(6, len(str(max(self.size - 1, 0))))
        self._last, self._ahead = -2, None  # read-ahead state of __getitem__

    # ----------------------------------------------------------------- indexing
    def __len__(self) -> int:
        return self.size

    def _check(self, indices) -> np.ndarray:
        idx = _as_indices(indices)
        idx = np.where(idx < 0, idx + self.size, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            bad = idx[(idx < 0) | (idx >= self.size)][0]
            raise IndexError(f"index {bad} out of range for synthfaces split {self.name!r} of size {self.size}")
        return idx

    def sample_id(self, index: int) -> str:
        return f"{self.name}-{int(self._check(index)[0]):0{self._width}d}"

    def index_of(self, sample_id: str) -> int:
        """The index behind an id such as ``test-000123``."""
        m = re.fullmatch(rf"{re.escape(self.name)}-(\d+)", sample_id)
        if not m:
            raise CfbenchError(
                f"{sample_id!r} is not an id of synthfaces split {self.name!r}; expected e.g. {self.name}-000123."
            )
        return int(self._check(int(m.group(1)))[0])

    # ----------------------------------------------------------------- latent variables, no rendering
    def identity_ids(self, indices) -> np.ndarray:
        """Global identity id of each index (int64); disjoint between splits."""
        idx = self._check(indices)
        k, blk = self.images_per_identity, IDENTITY_BLOCK
        local = (idx // (k * blk)) * blk + idx % blk
        return SPLIT_NUMBERS[self.name] * IDENTITY_RANGE + local

    def attribute_array(self, indices=None, overrides: Mapping[str, int] | None = None) -> np.ndarray:
        """(N, 14) uint8 labels in ATTRIBUTES order, without rendering (all indices if None).

        Row ``i`` follows the CPTs of ``spec.py`` exactly; rows of one person share the
        draws of the ``PERSISTENT`` attributes (see the module docstring).
        ``overrides`` is a do() in the generative model (descendants re-drawn), e.g.
        ``{"Smiling": 1}`` also makes an open mouth likelier; the image-level
        intervention that changes one attribute only is :meth:`intervene`.
        """
        idx = np.arange(self.size) if indices is None else self._check(indices)
        out = np.empty((len(idx), len(ATTRIBUTES)), dtype=np.uint8)
        for start in range(0, len(idx), 1 << 20):  # bounded memory for huge label requests
            chunk = idx[start : start + (1 << 20)]
            u = uniforms(_STREAM_ATTRIBUTES, self._key, chunk, len(ATTRIBUTES))
            per_person = uniforms(_STREAM_PERSON, self.seed, self.identity_ids(chunk), len(ATTRIBUTES))
            u[:, _PERSISTENT_COLS] = per_person[:, _PERSISTENT_COLS]
            out[start : start + len(chunk)] = attributes_from_uniforms(u, overrides)
        return out

    def labels(self, indices=None) -> torch.Tensor:
        """(N, 14) float32 labels without rendering (all indices of the split if None)."""
        return torch.from_numpy(self.attribute_array(indices).astype(np.float32))

    def scene(self, index: int) -> SceneParams:
        """The identity, attributes and nuisance that determine image ``index`` (editable)."""
        return self.scenes([index])[0]

    def scenes(self, indices) -> list[SceneParams]:
        """:meth:`scene` for several indices (vectorised)."""
        idx = self._check(indices)
        ids = self.identity_ids(idx)
        uid = uniforms(_STREAM_IDENTITY, self.seed, ids, IDENTITY_UNIFORMS)
        unu = uniforms(_STREAM_NUISANCE, self._key, idx, NUISANCE_UNIFORMS)
        att = self.attribute_array(idx)
        return [
            SceneParams(Identity.from_uniforms(uid[j]), tuple(int(v) for v in att[j]), Nuisance.from_uniforms(unu[j]))
            for j in range(len(idx))
        ]

    # ----------------------------------------------------------------- rendering
    def render_scene(self, scene: SceneParams) -> torch.Tensor:
        """Render a (possibly edited) scene at this split's image size: (3, H, W) float32 in [0, 1]."""
        return self.render_scenes([scene])[0]

    def render_scenes(self, scenes: Sequence[SceneParams]) -> torch.Tensor:
        """Render several scenes into one (N, 3, H, W) float32 tensor."""
        images = torch.empty(len(scenes), 3, self.image_size, self.image_size)
        render_scenes(scenes, self.image_size, self.supersample, out=images.numpy())
        return images

    def _sample(self, index: int, scene: SceneParams) -> Sample:
        labels = torch.tensor(scene.attributes, dtype=torch.float32)
        return Sample(self.sample_id(index), self.render_scene(scene), labels)

    def __getitem__(self, index: int) -> Sample:
        """One sample. Reading indices in order (``for s in split``, an evaluation loop)
        renders READ_AHEAD images at a time, which is several times faster per image;
        random access renders just the one asked for. The pixels are the same either way."""
        index = int(self._check(index)[0])
        ahead = self._ahead
        if ahead is None or not ahead[0] <= index < ahead[0] + len(ahead[1]):
            ahead = None
            if index == self._last + 1 and index + 1 < self.size:
                stop = min(index + READ_AHEAD, self.size)
                _, images, labels = self.batch(range(index, stop))
                ahead = self._ahead = (index, images, labels)
        self._last = index
        if ahead is None:
            return self._sample(index, self.scene(index))
        j = index - ahead[0]
        return Sample(self.sample_id(index), ahead[1][j].clone(), ahead[2][j].clone())

    def batch(self, indices: Sequence[int]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        idx = self._check(indices)
        scenes = self.scenes(idx)
        labels = torch.tensor([sc.attributes for sc in scenes], dtype=torch.float32).reshape(len(idx), len(ATTRIBUTES))
        return [self.sample_id(i) for i in idx], self.render_scenes(scenes), labels

    def region_masks(self, index: int) -> dict[str, np.ndarray]:
        """Boolean (H, W) masks of the ``cheeks``, ``mouth``, ``eyes`` and ``face`` of image ``index``."""
        return _region_masks(self.scene(index), self.image_size)

    # ----------------------------------------------------------------- interventions
    def intervene(self, index: int, overrides: Mapping[str, int | str]) -> Sample:
        """Image ``index`` with some attributes set (0/1) or toggled (``"flip"``), nothing else changed.

        Same identity, same nuisance (pose, light, noise), same other attributes: only
        the parts of the drawing the changed attributes own are redrawn. The returned
        labels are the edited attribute vector; the id is the original sample's id.
        """
        index = int(self._check(index)[0])
        return self._sample(index, self.scene(index).with_attributes(overrides))

    def intervene_batch(
        self, indices: Sequence[int], overrides: Mapping[str, int | str]
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """:meth:`intervene` over several indices: ids, images (N, 3, H, W), labels (N, 14)."""
        idx = self._check(indices)
        scenes = [sc.with_attributes(overrides) for sc in self.scenes(idx)]
        labels = torch.tensor([sc.attributes for sc in scenes], dtype=torch.float32).reshape(len(idx), len(ATTRIBUTES))
        return [self.sample_id(i) for i in idx], self.render_scenes(scenes), labels

    def __repr__(self) -> str:
        return f"SynthFacesSplit({self.name!r}, size={self.size}, image_size={self.image_size}, seed={self.seed})"


class SynthFaces(Dataset):
    """The embedded procedural face world, 64 px: the resolution its diffusion backbones
    work at, so no method edits at one resolution to be scored at another (see
    docs/synthfaces.md)."""

    name = "synthfaces"
    attributes = ATTRIBUTES
    queries = {"smile": "Smiling", "age": "Young"}
    classifiers: dict[str, str] = {name: "synthfaces-densenet" for name in ATTRIBUTES}
    image_size = 64
    eval_split = "test"
    splits = ("train", "val", "test")

    def __init__(
        self,
        image_size: int | None = None,
        sizes: Mapping[str, int] | None = None,
        seed: int = 0,
        images_per_identity: int = IMAGES_PER_IDENTITY,
        supersample: int = 2,
    ):
        if image_size is not None:
            if int(image_size) < 8:
                raise CfbenchError(f"synthfaces image_size must be at least 8, got {image_size}.")
            self.image_size = int(image_size)
            if self.image_size != type(self).image_size:
                self.name = f"synthfaces{self.image_size}"
        unknown = set(sizes or {}) - set(self.splits)
        if unknown:
            raise CfbenchError(f"Unknown synthfaces split(s) {sorted(unknown)}; use: {', '.join(self.splits)}.")
        self.sizes = {**DEFAULT_SIZES, **(sizes or {})}
        self.seed, self.images_per_identity, self.supersample = int(seed), int(images_per_identity), int(supersample)
        self._splits: dict[str, SynthFacesSplit] = {}

    def split(self, name: str) -> SynthFacesSplit:
        if name not in self._splits:
            if name not in self.splits:
                raise CfbenchError(
                    f"Unknown split {name!r} of dataset {self.name!r}; use one of: {', '.join(self.splits)}."
                )
            self._splits[name] = SynthFacesSplit(
                name, self.sizes[name], self.image_size, self.seed, self.images_per_identity, self.supersample
            )
        return self._splits[name]

    def correlation_matrix(self) -> tuple[tuple[str, ...], np.ndarray]:
        """Exact label correlations of the generative model (`spec.correlation_matrix`)."""
        return correlation_matrix()


__all__ = ["DEFAULT_SIZES", "IMAGES_PER_IDENTITY", "PERSISTENT", "SynthFaces", "SynthFacesSplit"]
