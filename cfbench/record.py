"""The run record: one directory per run, written per batch so nothing finished is lost.

Layout::

    run.json              identity (what defines the run), resolved config, the digest of every
                          network it loaded, loss networks and flags, environment
    samples.csv           one row per finished sample
    originals/<id>.png    the inputs as the metrics see them (lossless, rounded to 8 bit)
    counterfactuals/<id>.png
    null/<id>.png         the method's null edit (`Method.null_edit`), where it has one
    masks/<id>.png        where the method returns masks
    pre_explanations/<id>.png   where the method returns them (ACE's x′)
    attributions/<id>.npy, directions/<id>.npy, path_logits/<id>.npy   where the method returns them
    method/               what `Method.fit` learnt (fit.json: its cost, written last)
    grid.png              originals / [pre-explanations /] counterfactuals / |difference| / [mask]
    metrics.json          metric name -> value, 95% CI, n, network
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_bytes, atomic_write_text

IMAGE_DIRS = ("originals", "counterfactuals", "masks", "pre_explanations", "null")


def json_text(value: Any) -> str:
    """The encoding of a run's JSON files: sorted keys, and values JSON cannot hold
    (paths, dtypes) as their ``str``."""
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


def as_stored(value: Any) -> Any:
    """``value`` as a run's JSON file gives it back (tuples become lists, paths strings)."""
    return json.loads(json_text(value))


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 by rounding (not truncation), (N, C, H, W)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def png_bytes(image: torch.Tensor) -> bytes:
    """Lossless PNG of one uint8 image (C, H, W)."""
    array = image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def read_png(path: Path) -> torch.Tensor:
    """A saved PNG as a float tensor in [0, 1], (C, H, W)."""
    array = np.asarray(Image.open(path))
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


class RunRecord:
    """Reads and writes one run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def table_path(self) -> Path:
        return self.path / "samples.csv"

    def read_info(self) -> dict[str, Any] | None:
        if not self.info_path.exists():
            return None
        try:
            info = json.loads(self.info_path.read_text())
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise CfbenchError(f"{self.info_path} is not a cfbench run record; use another --out.")
        return info

    def open(self, identity: dict[str, Any], info: dict[str, Any], weights: dict[str, str] | None = None) -> None:
        """Create the directory, or check that an existing one holds the same run, made
        with the same weights (``weights``: network -> digest)."""
        existing = self.read_info() if self.path.is_dir() else None
        if existing is not None and existing.get("identity") != identity:
            old = existing.get("identity", {})
            keys = sorted(k for k in {*old, *identity} if old.get(k) != identity.get(k))
            raise CfbenchError(
                f"{self.path} holds a run with a different {', '.join(keys)}; "
                "use another --out (or delete that directory) to start a new run."
            )
        old_weights = (existing or {}).get("weights")
        if weights is not None and old_weights is not None and old_weights != weights:
            changed = sorted(k for k in {*old_weights, *weights} if old_weights.get(k) != weights.get(k))
            raise CfbenchError(
                f"{self.path} was made with other weights of {', '.join(changed)}; "
                "use another --out (or delete that directory) to start a new run with these."
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for name in (*IMAGE_DIRS, "attributions", "directions", "path_logits"):
                (self.path / name).mkdir(exist_ok=True)
            extra = {} if weights is None else {"weights": weights}
            self.write_info({**(existing or {}), **info, **extra, "identity": identity})
        except OSError as e:
            raise CfbenchError(f"cannot write the run directory {self.path}: {e.strerror}; choose another --out.") from None

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.info_path, json_text(info))

    def read_table(self) -> pd.DataFrame:
        if not self.table_path.exists():
            return pd.DataFrame()
        return pd.read_csv(self.table_path, dtype={"id": str})

    def append_rows(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Add finished samples; the whole table is replaced atomically."""
        table = pd.concat([self.read_table(), pd.DataFrame(rows)], ignore_index=True)
        table = table.drop_duplicates("index", keep="last").sort_values("index").reset_index(drop=True)
        atomic_write_text(self.table_path, table.to_csv(index=False))
        return table

    def update_rows(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Set columns of finished samples (matched by ``index``); the table is replaced atomically."""
        table = self.read_table().set_index("index")
        update = pd.DataFrame(rows).set_index("index")
        for column in update.columns:  # object columns take any value; the CSV gives the types back
            table[column] = table[column].astype(object) if column in table else pd.Series(None, table.index, object)
            table.loc[update.index, column] = update[column]
        atomic_write_text(self.table_path, table.reset_index().to_csv(index=False))
        return table.reset_index()

    def save_image(self, folder: str, sample_id: str, image: torch.Tensor) -> None:
        atomic_write_bytes(self.path / folder / f"{sample_id}.png", png_bytes(image))

    def save_array(self, folder: str, sample_id: str, array: torch.Tensor) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array.detach().float().cpu().numpy())
        atomic_write_bytes(self.path / folder / f"{sample_id}.npy", buffer.getvalue())

    def load_array(self, folder: str, sample_id: str) -> torch.Tensor:
        return torch.from_numpy(np.load(self.path / folder / f"{sample_id}.npy"))

    def has_array(self, folder: str, sample_id: str) -> bool:
        return (self.path / folder / f"{sample_id}.npy").exists()

    def load_image(self, folder: str, sample_id: str) -> torch.Tensor:
        return read_png(self.path / folder / f"{sample_id}.png")

    def has_image(self, folder: str, sample_id: str) -> bool:
        return (self.path / folder / f"{sample_id}.png").exists()

    def finished_samples(self) -> dict[int, str]:
        """index -> id of the samples that are finished: their row and both images are on disk."""
        table = self.read_table()
        return {
            index: sample_id for index, sample_id in zip(table.get("index", []), table.get("id", []))
            if self.has_image("originals", sample_id) and self.has_image("counterfactuals", sample_id)
        }  # fmt: skip

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.path / "metrics.json", json_text(metrics))

    def read_metrics(self) -> dict[str, Any] | None:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None
