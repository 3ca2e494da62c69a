"""`--dataset imagefolder:PATH`: your own images, labelled in a CSV.

Layout of PATH::

    PATH/labels.csv        image,Smiling,Young[,split]     (a header row, then one row per image)
    PATH/<image>           any format Pillow reads, at the path the ``image`` column gives
    PATH/dataset.json      optional: {"resolution": 128}   (or dataset.yaml / dataset.yml)

- ``image``: the image's path relative to PATH (``a/b.png``); the sample id is that path
  without its suffix, ``/`` written as ``__``.
- every other column (except ``split``) is a binary attribute, 0/1 (CelebA's -1/1 is read
  as 0/1); ``--attr`` names a column.
- ``split`` (optional): ``train``/``val``/``test``; the evaluation split is the ``test`` rows,
  or every row when there is no ``split`` column.

Images are converted to RGB, centre-cropped to a square, resized (bicubic) to the
resolution, and given in [0, 1]. The resolution is ``dataset.json``'s, else the one the
classifier declares (`cfbench.classifiers`), else 128. There are no evaluation networks for
your images, so the default protocol is ``cfbench-v1`` (fr, fr_null, l1, l2); for the
others pass ``--network ROLE=NAME`` for each role they need.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Sequence

import torch

from cfbench.datasets.base import Dataset, Sample, Split
from cfbench.errors import CfbenchError

LABELS = "labels.csv"
CONFIGS = ("dataset.json", "dataset.yaml", "dataset.yml")
DEFAULT_RESOLUTION = 128
VALUES = {"1": 1.0, "0": 0.0, "-1": 0.0, "1.0": 1.0, "0.0": 0.0, "-1.0": 0.0, "true": 1.0, "false": 0.0}


def read_mapping(path: Path, what: str) -> dict:
    """A small JSON or YAML file (``.json``/``.yaml``/``.yml``) holding a mapping; YAML needs
    PyYAML (JSON never does)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise CfbenchError(f"{what} {path}: cannot read it ({e.strerror}).") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise CfbenchError(f"{what} {path}: not valid JSON ({e}).") from None
    else:
        try:
            import yaml
        except ImportError:
            raise CfbenchError(f"{what} {path}: reading YAML needs PyYAML (pip install pyyaml); "
                               "or write the same keys as JSON.") from None  # fmt: skip
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise CfbenchError(f"{what} {path}: not valid YAML ({' '.join(str(e).split())}).") from None
    if not isinstance(data, dict):
        raise CfbenchError(f"{what} {path}: expected a mapping of keys to values.")
    return data


def positive_int(value: object, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise CfbenchError(f"{what}: {value!r} is not a positive integer.")
    return number


def sample_id(relative: str) -> str:
    """A file-name-safe id for the image at ``relative`` (``a/b.png`` -> ``a__b``)."""
    stem = str(PurePosixPath(relative.replace("\\", "/")).with_suffix(""))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__")).strip("._") or "image"


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """``path`` as RGB, centre-cropped to a square and resized: (3, R, R) in [0, 1]."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.fit(image.convert("RGB"), (resolution, resolution), Image.BICUBIC)
    except FileNotFoundError:
        raise CfbenchError(f"imagefolder: image {path} does not exist.") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise CfbenchError(f"imagefolder: cannot read image {path} ({' '.join(str(e).split())}).") from None
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


class ImageFolderSplit(Split):
    def __init__(self, root: Path, rows: list[tuple[str, str, torch.Tensor]], resolution: int, width: int):
        self.root, self.rows, self.resolution, self.width = root, rows, resolution, width

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.rows):
            raise IndexError(index)
        identifier, relative, labels = self.rows[index]
        return Sample(identifier, load_image(self.root / relative, self.resolution), labels)

    def labels(self, indices: Sequence[int]) -> torch.Tensor:
        picked = [self.rows[i][2] for i in indices]
        return torch.stack(picked) if picked else torch.zeros(0, self.width)


class ImageFolder(Dataset):
    """Your images: a folder with labels.csv (--dataset imagefolder:PATH)"""

    protocol = "cfbench-v1"  # no evaluation networks for your images: fr, fr_null, l1, l2
    eval_split = "test"

    def __init__(self, path: str | Path | None = None, default_resolution: int | None = None):
        if path is None or not str(path).strip():
            raise CfbenchError("--dataset imagefolder needs a folder: --dataset imagefolder:PATH "
                               f"(PATH/{LABELS} with an `image` column and one 0/1 column per attribute).")  # fmt: skip
        self.root = Path(str(path).strip()).expanduser()
        if not self.root.is_dir():
            raise CfbenchError(f"imagefolder: folder {self.root} does not exist.")
        labels_path = self.root / LABELS
        if not labels_path.is_file():
            raise CfbenchError(f"imagefolder: {labels_path} does not exist; write it with a header "
                               "`image,<attribute>,…` and one row per image (0/1 labels).")  # fmt: skip
        config = next((self.root / name for name in CONFIGS if (self.root / name).is_file()), None)
        settings = read_mapping(config, "imagefolder config") if config is not None else {}
        unknown = sorted(set(settings) - {"resolution"})
        if unknown:
            raise CfbenchError(f"imagefolder config {config}: unknown key {unknown[0]!r}; known: resolution.")
        if "resolution" in settings:
            self.image_size = positive_int(settings["resolution"], f"imagefolder config {config}: resolution")
        else:
            self.image_size = default_resolution or DEFAULT_RESOLUTION
        self.name = f"imagefolder-{re.sub(r'[^A-Za-z0-9.-]+', '-', self.root.resolve().name).strip('-.') or 'root'}"
        #: how run records name the dataset (a file-name-safe name) and what identifies its data
        self.record_name = self.name
        self.queries, self.classifiers = {}, {}
        self._read_labels(labels_path)
        self.record_source = {
            "path": str(self.root.resolve()),
            "labels_sha256": hashlib.sha256(labels_path.read_bytes()).hexdigest(),
            "resolution": self.image_size,
        }

    def _read_labels(self, labels_path: Path) -> None:
        try:
            with labels_path.open(newline="", encoding="utf-8-sig") as handle:
                table = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise CfbenchError(f"imagefolder: cannot read {labels_path} ({e}).") from None
        header = [column.strip() for column in table[0]] if table else []
        if "image" not in header:
            raise CfbenchError(f"imagefolder: {labels_path} has no `image` column (header: {','.join(header)}).")
        self.attributes = tuple(c for c in header if c not in ("image", "split"))
        if not self.attributes or len(set(header)) != len(header):
            raise CfbenchError(f"imagefolder: {labels_path} needs distinct attribute columns besides `image`.")
        split_col = header.index("split") if "split" in header else None
        rows: dict[str, list[tuple[str, str, torch.Tensor]]] = {}
        seen: dict[str, int] = {}
        for line, row in enumerate(table[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise CfbenchError(f"imagefolder: {labels_path} line {line} has {len(row)} fields, "
                                   f"the header {len(header)}.")  # fmt: skip
            cells = dict(zip(header, (cell.strip() for cell in row)))
            relative = cells["image"]
            if not (self.root / relative).is_file():
                raise CfbenchError(f"imagefolder: image {self.root / relative} ({labels_path.name} line {line}) "
                                   "does not exist.")  # fmt: skip
            identifier = sample_id(relative)
            if identifier in seen:
                raise CfbenchError(f"imagefolder: {labels_path} lines {seen[identifier]} and {line} name the same "
                                   f"image id {identifier!r}.")  # fmt: skip
            seen[identifier] = line
            labels = []
            for attribute in self.attributes:
                value = VALUES.get(cells[attribute].lower())
                if value is None:
                    raise CfbenchError(f"imagefolder: {labels_path} line {line}, column {attribute}: "
                                       f"{cells[attribute]!r} is not a 0/1 label.")  # fmt: skip
                labels.append(value)
            split = cells["split"].lower() if split_col is not None else "test"
            rows.setdefault(split, []).append((identifier, relative, torch.tensor(labels)))
        self._every = [row for split_rows in rows.values() for row in split_rows]
        self._every.sort(key=lambda row: seen[row[0]])  # file order
        self._by_split = rows if split_col is not None else None
        if not self._every:
            raise CfbenchError(f"imagefolder: {labels_path} lists no images.")
        if self._by_split is not None and not self._by_split.get(self.eval_split):
            raise CfbenchError(f"imagefolder: {labels_path} has a split column but no `{self.eval_split}` rows "
                               "(the evaluation split); mark some rows test, or drop the column to use every "
                               "row.")  # fmt: skip
        self.splits = tuple(sorted(self._by_split)) if self._by_split is not None else ("train", "val", "test")

    def split(self, name: str) -> Split:
        """The rows of split ``name`` in file order; without a ``split`` column every split
        is every row."""
        if self._by_split is None:
            rows = self._every
        else:
            rows = self._by_split.get(name, [])
        return ImageFolderSplit(self.root, rows, self.image_size, len(self.attributes))
