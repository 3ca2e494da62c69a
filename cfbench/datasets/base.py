"""The dataset contract every `--dataset` plugin follows.

A dataset is a set of binary attributes over images. Images are float tensors in
[0, 1] with shape (C, H, W); methods and classifiers apply their own normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Sample:
    """One image of a split with every attribute label (0/1), in `Dataset.attributes` order."""

    id: str
    image: torch.Tensor
    labels: torch.Tensor


class Split:
    """A fixed, indexable sequence of samples; index order is the evaluation order."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def batch(self, indices: Sequence[int]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Ids, images (N, C, H, W) and labels (N, A) of several samples."""
        samples = [self[i] for i in indices]
        return (
            [s.id for s in samples],
            torch.stack([s.image for s in samples]),
            torch.stack([s.labels for s in samples]),
        )

    def labels(self, indices: Sequence[int]) -> torch.Tensor:
        """Labels (N, A) of several samples (the reference correlations of CD, DiME eq. 10,
        read them from the train split). This default loads the samples; datasets whose
        labels sit in a table override it to skip the images."""
        return self.batch(indices)[2]


class Dataset:
    """Base class of dataset plugins.

    Subclasses set the class attributes and implement `split`.
    `queries` maps the short names users type after `--attr` (``smile``) to attribute
    names (``Smiling``); every attribute is also accepted by its own name.
    `classifiers` maps an attribute name to the registry name of its default
    classifier to explain. `protocol` is the metric set runs use unless `--protocol`
    says otherwise: the full suite needs the evaluation networks of `cfbench.oracles`,
    so a dataset without them names a smaller one.
    """

    name: str = ""
    attributes: tuple[str, ...] = ()
    queries: dict[str, str] = {}
    classifiers: dict[str, str] = {}
    image_size: int = 0
    eval_split: str = "test"
    splits: tuple[str, ...] = ("train", "val", "test")
    protocol: str = "cfbench-v3"

    def split(self, name: str) -> Split:
        raise NotImplementedError

    def correlation_matrix(self) -> tuple[tuple[str, ...], np.ndarray] | None:
        """The exact Pearson correlation matrix of the attribute labels, ``(names,
        matrix)``, where the dataset is generated from a known model (metric ``cd_spec``);
        None for datasets of real images."""
        return None
