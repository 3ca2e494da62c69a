"""Per-sample randomness: every sample draws from its own generator, seeded by the run's
seed and the sample's id, so that a counterfactual does not depend on the batch it was
made in, nor on its position there.

A method receives a `SampleRNG` for its batch and asks it for noise of a per-sample
shape for some rows of the batch; each row's values come from that row's generator
alone, in the order that row asks for them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor


def sample_seed(seed: int, sample_id: str) -> int:
    """A 63-bit seed for ``(seed, sample id)``: the first 8 bytes of their SHA-256."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class SampleRNG:
    """One CPU ``torch.Generator`` per sample of a batch.

    ``rows`` in every call are positions in this batch (default: all of them, in order);
    values are drawn on the CPU in float32 and then moved, so they are the same on every
    device.
    """

    def __init__(self, seed: int, ids: Sequence[str]):
        self.ids = list(ids)
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, i)) for i in self.ids]

    def __len__(self) -> int:
        return len(self.generators)

    def _draw(self, kind: str, shape: Sequence[int], rows: Tensor | Sequence[int] | None, device: torch.device | str,
              dtype: torch.dtype) -> Tensor:
        rows = range(len(self)) if rows is None else torch.as_tensor(rows).tolist()
        draw = torch.randn if kind == "normal" else torch.rand
        values = [draw(tuple(shape), generator=self.generators[r]) for r in rows]
        out = torch.stack(values) if values else torch.empty(0, *shape)
        return out.to(device=device, dtype=dtype)

    def randn(self, shape: Sequence[int], rows: Tensor | Sequence[int] | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """N(0, I) noise of ``shape`` for each row: (len(rows), *shape)."""
        return self._draw("normal", shape, rows, device, dtype)

    def rand(self, shape: Sequence[int], rows: Tensor | Sequence[int] | None = None,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """U[0, 1) values of ``shape`` for each row: (len(rows), *shape)."""
        return self._draw("uniform", shape, rows, device, dtype)
