"""The real-image datasets of the papers: ``celeba`` (DiME, ACE, GCD at 128 px) and
``celebahq`` (ACE, LDCE, GCD at 256 px), read from the folders as published.

Where the files are: the dataset's folder is ``--data-root`` / the ``root`` argument, else
``$CFBENCH_DATA/celeba`` (``$CFBENCH_DATA/celebahq`` or ``$CFBENCH_DATA/CelebAMask-HQ``),
else ``$CFBENCH_DATA`` itself where it holds the layout; ``CFBENCH_DATA`` defaults to
``$CFBENCH_HOME/data`` (``~/.cache/cfbench/data``).

``celeba`` (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, or Kaggle's CSV copy)::

    img_align_celeba/000001.jpg …            the aligned & cropped images (178×218)
    list_attr_celeba.txt  or  .csv           txt: count line, 40 names, "000001.jpg -1  1 …";
                                             csv: image_id,5_o_Clock_Shadow,…  (-1/1)
    list_eval_partition.txt  or  .csv        txt: "000001.jpg 0"; csv: image_id,partition

``celebahq`` (CelebAMask-HQ, https://github.com/switchablenorms/CelebAMask-HQ)::

    CelebA-HQ-img/0.jpg …                    1024×1024
    CelebAMask-HQ-attribute-anno.txt         count line, 40 names, "0.jpg  1 -1 …"
    CelebA-HQ-to-CelebA-mapping.txt          idx orig_idx orig_file
    list_eval_partition.txt  or  .csv        CelebA's partition file, copied in (as ACE reads it)

Facts (guillaumejs2403/DiME ``core/image_datasets.py``, ``utils/create-mini-val.py``,
``utils/minival.csv``; guillaumejs2403/ACE ``guided_diffusion/image_datasets.py``
``get_dataset`` and ``CelebAHQDataset``, ``compute_CD.py`` ``get_correlations``):

- Partitions 0/1/2 = train/val/test of ``list_eval_partition``; labels -1 → 0.
- Preprocessing: ``Resize(size)`` (the short side, PIL bilinear) then ``CenterCrop(size)``,
  ``ToTensor`` ([0, 1]); 128 px for CelebA, 256 px for CelebA-HQ.
- Evaluation split: CelebA's whole **val** partition (19,867 images; ACE, DiME's
  ``--dataset CelebA``), in the annotation file's order. DiME's **mini-val** (``CelebAMV``,
  ``utils/minival.csv``) is split ``minival`` (dataset ``celeba-minival``): ``random.seed(5)``,
  ``random.choices(range(len(val)), k=1000)``, sorted; drawn with replacement, so 1,000 rows
  of 966 images (32 twice, one three times). The k-th repeat of an image gets the id
  ``<image>_<k>`` (``162779``, ``162779_2``), so every row is a sample of its own.
- CelebA-HQ: the **test** partition of CelebA's ``list_eval_partition`` through
  ``CelebA-HQ-to-CelebA-mapping.txt`` (HQ ``idx`` → CelebA ``orig_file``), in the
  annotation's order; ACE merges the two files by position, which is the same for the
  published files (row k of both is HQ image k); here they are joined by ``idx``.
- CD's reference correlations (``Split.labels`` of ``train``) are the train partition's
  labels, as ``compute_CD.py`` (DiME: CelebA; ACE: CelebAMask-HQ through the mapping).

Sample ids are the image file stems (``162771``, ``0``).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cfbench.datasets.base import Dataset, Sample, Split
from cfbench.errors import CfbenchError
from cfbench.oracles.celeba_oracle import CELEBA_ATTRIBUTES

PARTITIONS = {"train": 0, "val": 1, "test": 2}
CELEBA_URL = ("https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images img_align_celeba.zip, "
              "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt; or the CSV copy on Kaggle, "
              "jessicali9530/celeba-dataset)")  # fmt: skip
CELEBAHQ_URL = ("https://github.com/switchablenorms/CelebAMask-HQ (CelebAMask-HQ.zip), with CelebA's "
                "list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html copied in")  # fmt: skip
#: DiME ``utils/create-mini-val.py``
MINIVAL_SEED, MINIVAL_SIZE = 5, 1000
STEEX_ATTRIBUTES = ("Male", "Smiling", "Young")  # the CelebA-HQ classifier's outputs


def data_home() -> Path:
    """``$CFBENCH_DATA``, else ``$CFBENCH_HOME/data`` (``~/.cache/cfbench/data``)."""
    from cfbench.weights import home

    value = os.environ.get("CFBENCH_DATA", "").strip()
    return Path(value).expanduser() if value else home() / "data"


def minival_rows(n_val: int) -> list[int]:
    """DiME's mini-val: positions in the val partition (of ``n_val`` rows), with repeats, sorted."""
    rng = random.Random(MINIVAL_SEED)  # the same draws as random.seed(5); random.choices(…)
    return sorted(rng.choices(list(range(n_val)), k=MINIVAL_SIZE))


def repeat_ids(stems: Sequence[str]) -> list[str]:
    """``stem`` for an image's first row, ``stem_2``, ``stem_3`` … for its repeats."""
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


# -- reading the annotation files ---------------------------------------------------------------
def _fail(dataset: str, path: Path, why: str) -> CfbenchError:
    return CfbenchError(f"dataset {dataset}: {path} {why}")


def _binary(values: np.ndarray, dataset: str, path: Path) -> np.ndarray:
    bad = ~np.isin(values, (-1, 0, 1))
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise _fail(dataset, path, f"has a label other than -1/1 in data row {row + 1}.")
    return (values == 1).astype(np.uint8)


def _check_names(names: Sequence[str], dataset: str, path: Path) -> None:
    names = tuple(names)
    if names != CELEBA_ATTRIBUTES:
        wrong = next((i for i, (a, b) in enumerate(zip(names, CELEBA_ATTRIBUTES)) if a != b), min(len(names), 40))
        found = names[wrong] if wrong < len(names) else "nothing"
        raise _fail(dataset, path, f"does not name CelebA's 40 attributes in their order: column {wrong + 1} is "
                                   f"{found!r}, expected {CELEBA_ATTRIBUTES[wrong] if wrong < 40 else 'no more'!r}.")


def read_attribute_file(path: Path, dataset: str) -> tuple[list[str], np.ndarray]:
    """Image file names and (N, 40) 0/1 labels of ``list_attr_celeba.txt``/``.csv`` or
    ``CelebAMask-HQ-attribute-anno.txt`` (count line, names line, one row per image)."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype={"image_id": str})
            if "image_id" not in frame.columns:
                raise _fail(dataset, path, "has no image_id column (Kaggle's list_attr_celeba.csv has one).")
            names = [c for c in frame.columns if c != "image_id"]
            files = frame["image_id"].astype(str).tolist()
            values = frame[names].to_numpy()
        else:
            with path.open() as f:
                count, header = f.readline().strip(), f.readline().split()
            frame = pd.read_csv(path, sep=r"\s+", skiprows=2, header=None, dtype={0: str})
            names = header
            if frame.shape[1] != len(header) + 1:
                raise _fail(dataset, path, f"has {frame.shape[1] - 1} labels per row for {len(header)} names.")
            files = frame[0].astype(str).tolist()
            values = frame.iloc[:, 1:].to_numpy()
            if count.isdigit() and int(count) != len(files):
                raise _fail(dataset, path, f"holds {len(files)} rows where its first line announces {count} "
                                           "(an incomplete download?).")  # fmt: skip
    except CfbenchError:
        raise
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        why = " ".join(str(e).split())[:200]
        raise _fail(dataset, path, f"cannot be read as an attribute table ({why}).") from None
    _check_names(names, dataset, path)
    if not np.issubdtype(values.dtype, np.number):
        raise _fail(dataset, path, "has labels that are not numbers.")
    return files, _binary(values.astype(np.int64), dataset, path)


def read_partition_file(path: Path, dataset: str) -> dict[str, int]:
    """CelebA's ``list_eval_partition``: image file name -> 0 (train), 1 (val), 2 (test)."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype={"image_id": str})
            if not {"image_id", "partition"} <= set(frame.columns):
                raise _fail(dataset, path, "needs the columns image_id and partition.")
            files, parts = frame["image_id"].astype(str).tolist(), frame["partition"].to_numpy()
        else:
            frame = pd.read_csv(path, sep=r"\s+", header=None, dtype={0: str})
            if frame.shape[1] != 2:
                raise _fail(dataset, path, "needs two columns per line: image and partition (0, 1 or 2).")
            files, parts = frame[0].astype(str).tolist(), frame[1].to_numpy()
    except CfbenchError:
        raise
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise _fail(dataset, path, f"cannot be read as a partition table ({' '.join(str(e).split())[:200]}).") from None
    if not np.issubdtype(parts.dtype, np.integer) or not np.isin(parts, (0, 1, 2)).all():
        raise _fail(dataset, path, "has a partition other than 0, 1 or 2.")
    return dict(zip(files, parts.astype(int).tolist()))


def read_mapping_file(path: Path, dataset: str) -> dict[int, str]:
    """``CelebA-HQ-to-CelebA-mapping.txt``: HQ index -> CelebA image file name."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(dataset, path, f"cannot be read ({e}).") from None
    if not rows or rows[0][:1] != ["idx"] or "orig_file" not in rows[0]:
        raise _fail(dataset, path, "does not start with the header 'idx orig_idx orig_file'.")
    column = rows[0].index("orig_file")
    try:
        return {int(row[0]): row[column] for row in rows[1:]}
    except (ValueError, IndexError):
        raise _fail(dataset, path, "has a row that is not 'idx orig_idx orig_file'.") from None


@dataclass(frozen=True)
class Table:
    """A dataset's annotation: image files (annotation order), (N, 40) labels, partitions."""

    files: tuple[str, ...]
    labels: np.ndarray
    partition: np.ndarray


_TABLES: dict[tuple, Table] = {}


def _stamp(paths: Sequence[Path]) -> tuple:
    return tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


# -- the splits ---------------------------------------------------------------------------------
def load_face(path: Path, size: int, dataset: str) -> torch.Tensor:
    """DiME/ACE's preprocessing: ``Resize(size)`` (short side, bilinear), ``CenterCrop(size)``,
    ``ToTensor``: (3, size, size) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError:
        raise CfbenchError(f"dataset {dataset}: image {path} does not exist.") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise CfbenchError(f"dataset {dataset}: cannot read image {path} ({' '.join(str(e).split())}).") from None
    image = TF.center_crop(TF.resize(image, size, interpolation=InterpolationMode.BILINEAR), size)
    return TF.to_tensor(image)


class FaceSplit(Split):
    """Rows of a `Table`: images read from ``folder`` on demand, labels from the table."""

    def __init__(self, dataset: str, split: str, folder: Path, files: Sequence[str], ids: Sequence[str],
                 labels: np.ndarray, image_size: int, published: str):  # fmt: skip
        self.dataset, self.name, self.folder = dataset, split, folder
        self.files, self.ids, self.image_size, self.published = list(files), list(ids), image_size, published
        self._labels = torch.from_numpy(labels.astype(np.float32))
        self._found: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def check_images(self) -> None:
        """Every image of the split is in its folder (a ``.png`` of the same stem also does,
        as in CelebA's img_align_celeba_png release); else one line saying how many lack."""
        if self._found is not None:
            return
        try:
            present = set(os.listdir(self.folder))
        except OSError:
            present = set()
        found, missing = {}, []
        for name in dict.fromkeys(self.files):
            png = f"{Path(name).stem}.png"
            if name in present or png in present:
                found[name] = name if name in present else png
            else:
                missing.append(name)
        if missing:
            raise CfbenchError(
                f"dataset {self.dataset}: {len(missing)} of the {len(found) + len(missing)} images of its {self.name} "
                f"split are missing from {self.folder} (e.g. {missing[0]}); it is published at {self.published}."
            )
        self._found = found

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for the {self.name} split of {self.dataset} ({len(self)})")
        index %= len(self)
        self.check_images()
        assert self._found is not None
        image = load_face(self.folder / self._found[self.files[index]], self.image_size, self.dataset)
        return Sample(self.ids[index], image, self._labels[index].clone())

    def labels(self, indices: Sequence[int]) -> torch.Tensor:
        """Labels without reading images (CD's train correlations)."""
        return self._labels[torch.as_tensor(list(indices), dtype=torch.long)].clone()

    def __repr__(self) -> str:
        return f"FaceSplit({self.dataset!r}, {self.name!r}, n={len(self)}, folder={str(self.folder)!r})"


class _Faces(Dataset):
    """What `CelebA` and `CelebAHQ` share: finding the folder, reading and caching the
    annotation, building the splits."""

    attributes = CELEBA_ATTRIBUTES
    queries = {"smile": "Smiling", "age": "Young"}
    protocol = "cfbench-v3"
    #: the dataset name the methods' ``dataset_configs`` and the evaluation networks' ``DEFAULTS``
    #: know this dataset by (``celeba-minival`` is ``celeba`` there)
    family: str = ""
    #: subfolders of ``$CFBENCH_DATA`` looked in, before ``$CFBENCH_DATA`` itself
    folders: tuple[str, ...] = ()
    images: str = ""
    #: the files the folder needs: each item is the alternatives (the first is named in messages)
    needs: tuple[tuple[str, ...], ...] = ()
    published: str = ""
    title: str = ""

    def __init__(self, root: str | Path | None = None, eval_split: str | None = None):
        self._root = Path(root).expanduser() if root is not None else None
        if eval_split is not None:
            if eval_split not in self.splits:
                raise CfbenchError(f"Unknown split {eval_split!r} of dataset {self.name!r}; use one of: "
                                   f"{', '.join(self.splits)}.")  # fmt: skip
            self.eval_split = eval_split
        self._splits: dict[str, FaceSplit] = {}

    # -- where the files are
    def missing(self, root: Path) -> list[str]:
        """What ``root`` lacks of the layout (folders with a trailing ``/``)."""
        out = []
        for options in (((self.images + "/"),), *self.needs):
            if not any((root / o.rstrip("/")).is_dir() if o.endswith("/") else (root / o).is_file() for o in options):
                out.append(options[0] + (f" (or {', '.join(options[1:])})" if len(options) > 1 else ""))
        return out

    def candidates(self) -> list[Path]:
        if self._root is not None:
            return [self._root]
        base = data_home()
        return [base / folder for folder in self.folders] + [base]

    @property
    def root(self) -> Path:
        """The dataset's folder; a missing or incomplete one is one `CfbenchError` line."""
        candidates = self.candidates()
        for candidate in candidates:
            if candidate.is_dir() and not self.missing(candidate):
                return candidate
        # report on the candidate that looks meant (a folder holding part of the layout), else all of them
        partial = [c for c in candidates if c.is_dir() and len(self.missing(c)) < 1 + len(self.needs)]
        how = "" if self._root is not None else (
            f" (set CFBENCH_DATA to its folder, or to the folder that holds {self.folders[0]}/)")
        if partial:
            state = f"is incomplete at {partial[0]}: missing {', '.join(self.missing(partial[0]))}"
        else:
            state = (f"was not found in {', '.join(map(str, candidates))} (it needs "
                     f"{', '.join(self.missing(Path('/nonexistent')))})")  # fmt: skip
        raise CfbenchError(f"dataset {self.name}: {self.title} {state}; it is published at {self.published}{how}.")

    def _file(self, root: Path, options: tuple[str, ...]) -> Path:
        return next(root / o for o in options if (root / o).is_file())

    def table(self) -> Table:
        root = self.root
        paths = [self._file(root, options) for options in self.needs]
        key = (type(self).__name__, *_stamp(paths))
        if key not in _TABLES:
            while len(_TABLES) >= 4:  # a few annotations (celeba, celebahq) are plenty
                _TABLES.pop(next(iter(_TABLES)))
            _TABLES[key] = self.read_table(root, *paths)
        return _TABLES[key]

    def read_table(self, root: Path, *paths: Path) -> Table:
        raise NotImplementedError

    # -- the splits
    def rows(self, table: Table, name: str) -> np.ndarray:
        if name not in PARTITIONS:
            known = ", ".join(self.splits)
            raise CfbenchError(f"Unknown split {name!r} of dataset {self.name!r}; use one of: {known}.")
        return np.flatnonzero(table.partition == PARTITIONS[name])

    def split(self, name: str) -> FaceSplit:
        if name not in self._splits:
            table = self.table()
            rows = self.rows(table, name)
            files = [table.files[i] for i in rows]
            ids = repeat_ids([Path(f).stem for f in files])
            self._splits[name] = FaceSplit(self.name, name, self.root / self.images, files, ids,
                                           table.labels[rows], self.image_size, self.published)  # fmt: skip
        split = self._splits[name]
        if name == self.eval_split:  # the images a run reads are all there before it starts
            split.check_images()
        return split


class CelebA(_Faces):
    """CelebA (aligned & cropped), 128 px, the full val partition (DiME, ACE)."""

    name = "celeba"
    family = "celeba"
    classifiers = {attribute: "celeba-densenet121" for attribute in CELEBA_ATTRIBUTES}
    image_size = 128
    eval_split = "val"
    splits = ("train", "val", "test", "minival")
    folders = ("celeba", "CelebA")
    images = "img_align_celeba"
    needs = (("list_attr_celeba.txt", "list_attr_celeba.csv"), ("list_eval_partition.txt", "list_eval_partition.csv"))
    published = CELEBA_URL
    title = "CelebA"

    def read_table(self, root: Path, *paths: Path) -> Table:
        attributes, partitions = paths
        files, labels = read_attribute_file(attributes, self.name)
        partition = read_partition_file(partitions, self.name)
        lacking = [f for f in files if f not in partition]
        if lacking:
            raise _fail(self.name, partitions, f"has no partition for {len(lacking)} of the {len(files)} images of "
                                               f"{attributes.name} (e.g. {lacking[0]}).")  # fmt: skip
        return Table(tuple(files), labels, np.array([partition[f] for f in files], dtype=np.int8))

    def rows(self, table: Table, name: str) -> np.ndarray:
        if name == "minival":
            val = super().rows(table, "val")
            return val[minival_rows(len(val))] if len(val) else val
        return super().rows(table, name)


class CelebAMiniVal(CelebA):
    """CelebA evaluated on DiME's mini-val (1,000 rows drawn with replacement from val)."""

    name = "celeba-minival"
    eval_split = "minival"


class CelebAHQ(_Faces):
    """CelebAMask-HQ, 256 px, CelebA's test partition through the HQ-to-CelebA mapping (ACE)."""

    name = "celebahq"
    family = "celebahq"
    classifiers = {attribute: "celebahq-densenet" for attribute in STEEX_ATTRIBUTES}
    image_size = 256
    eval_split = "test"
    splits = ("train", "val", "test")
    folders = ("celebahq", "CelebAMask-HQ", "CelebA-HQ")
    images = "CelebA-HQ-img"
    needs = (("CelebAMask-HQ-attribute-anno.txt",), ("CelebA-HQ-to-CelebA-mapping.txt",),
             ("list_eval_partition.txt", "list_eval_partition.csv"))  # fmt: skip
    published = CELEBAHQ_URL
    title = "CelebAMask-HQ"

    def read_table(self, root: Path, *paths: Path) -> Table:
        attributes, mapping_path, partitions = paths
        files, labels = read_attribute_file(attributes, self.name)
        mapping = read_mapping_file(mapping_path, self.name)
        partition = read_partition_file(partitions, self.name)
        parts = []
        for f in files:
            stem = Path(f).stem
            if not stem.isdigit() or int(stem) not in mapping:
                raise _fail(self.name, mapping_path, f"does not map {f} of {attributes.name} to a CelebA image.")
            original = mapping[int(stem)]
            if original not in partition:
                raise _fail(self.name, partitions, f"has no partition for {original} (CelebA-HQ {f}); give "
                                                   "CelebA's own list_eval_partition file.")  # fmt: skip
            parts.append(partition[original])
        return Table(tuple(files), labels, np.array(parts, dtype=np.int8))


__all__ = [
    "CELEBAHQ_URL", "CELEBA_URL", "CelebA", "CelebAHQ", "CelebAMiniVal", "FaceSplit", "data_home", "load_face",
    "minival_rows", "read_attribute_file", "read_mapping_file", "read_partition_file", "repeat_ids",
]  # fmt: skip
