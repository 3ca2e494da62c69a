"""Dataset plugins (`--dataset`) and resolution of `--attr`."""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from cfbench.errors import CfbenchError
from cfbench.registry import Registry

if TYPE_CHECKING:
    from cfbench.datasets.base import Dataset, Sample, Split

DATASETS = Registry("dataset", "cfbench.datasets")
DATASETS.lazy(
    "synthfaces",
    "cfbench.datasets.synthfaces:SynthFaces",
    description="Embedded procedural faces, 64 px, CelebA-named attributes, planted correlations",
    paper="cfbench (embedded world)",
)


DATASETS.lazy(
    "imagefolder",
    "cfbench.datasets.imagefolder:ImageFolder",
    description="Your images: --dataset imagefolder:PATH, PATH/labels.csv (image + one 0/1 column per attribute)",
    paper="cfbench",
)
DATASETS.lazy(
    "celeba",
    "cfbench.datasets.celeba:CelebA",
    description="CelebA aligned faces, 128 px, the val partition (19,867); files in $CFBENCH_DATA/celeba",
    paper="Liu et al., ICCV 2015; as DiME, ACCV 2022 and ACE, CVPR 2023 read it",
)
DATASETS.lazy(
    "celeba-minival",
    "cfbench.datasets.celeba:CelebAMiniVal",
    description="CelebA, 128 px, DiME's mini-val (1,000 val rows drawn with replacement, 966 images)",
    paper="DiME, ACCV 2022 (utils/minival.csv)",
)
DATASETS.lazy(
    "celebahq",
    "cfbench.datasets.celeba:CelebAHQ",
    description="CelebAMask-HQ, 256 px, CelebA's test partition via the mapping; files in $CFBENCH_DATA/celebahq",
    paper="Lee et al., CVPR 2020 (CelebAMask-HQ); as ACE, CVPR 2023 reads it",
)


def get_dataset(name: str, resolution: int | None = None) -> Dataset:
    """The dataset ``name``: a registered one, or ``imagefolder:PATH`` (your images, at
    their ``dataset.json`` resolution, else ``resolution``, the classifier's, else 128)."""
    kind, sep, path = name.partition(":")
    if sep and kind == "imagefolder":
        from cfbench.datasets.imagefolder import ImageFolder

        return ImageFolder(path, default_resolution=resolution)
    return DATASETS.get(name)()


def resolve_attribute(dataset: Dataset, attr: str) -> str:
    """The attribute name behind ``--attr`` (a query alias such as ``smile`` or a name)."""
    if attr in dataset.queries:
        return dataset.queries[attr]
    if attr in dataset.attributes:
        return attr
    choices = [*dataset.queries, *dataset.attributes]
    close = difflib.get_close_matches(attr, choices, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise CfbenchError(f"Unknown attribute {attr!r} for dataset {dataset.name!r}.{hint} Known: {', '.join(choices)}.")


__all__ = ["DATASETS", "Dataset", "Sample", "Split", "get_dataset", "resolve_attribute"]


def __getattr__(name: str):
    """Re-export the dataset contract lazily: `cfbench list` must not import torch."""
    if name in ("Dataset", "Sample", "Split"):
        from cfbench.datasets import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
