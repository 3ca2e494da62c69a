"""Networks called on batches of one fixed size.

A network's arithmetic per image depends on the size of the batch it runs in (other
kernels, other summation orders). A method whose decisions can turn on the last bit (the
sign of a gradient, a threshold on a logit) calls its networks through `fixed_chunks`,
so that a counterfactual does not depend on the batch it was made in.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from cfbench.handles import ClassifierHandle


def pad_rows(x: Tensor, size: int, fill: Tensor | None = None) -> Tensor:
    """``x`` padded along its first dimension to a multiple of ``size``: with zeros, or
    ``fill`` (one row) repeated."""
    pad = -x.shape[0] % size
    if not pad:
        return x
    rows = x.new_zeros(pad, *x.shape[1:]) if fill is None else fill.to(x.device, x.dtype).expand(pad, *x.shape[1:])
    return torch.cat([x, rows])


def fixed_chunks(fn: Callable[..., Tensor], size: int, *tensors: Tensor,
                 fills: tuple[Tensor | None, ...] | None = None) -> Tensor:
    """``fn(*chunk)`` on consecutive chunks of exactly ``size`` rows of ``tensors`` (the last
    one padded, with zeros or the row of ``fills`` given for that tensor), the outputs
    concatenated and cut back to the input's length."""
    n = tensors[0].shape[0]
    fills = fills or (None,) * len(tensors)
    padded = [pad_rows(t, size, f) for t, f in zip(tensors, fills)]
    return torch.cat([fn(*(p[i : i + size] for p in padded)) for i in range(0, padded[0].shape[0], size)])[:n]


def fixed_chunk_logits(classifier: ClassifierHandle, x: Tensor, rows: Tensor, size: int) -> Tensor:
    """The handle's logits of ``x`` on chunks of exactly ``size`` images; ``rows`` gives each
    image's sample in the batch explained (the padding rows, −1, are evaluated, not counted)."""
    return fixed_chunks(lambda chunk, at: classifier.logits(chunk, samples=at), size, x, rows,
                        fills=(None, torch.tensor([-1])))
