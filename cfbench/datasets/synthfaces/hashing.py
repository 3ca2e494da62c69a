"""Counter-based random numbers: (stream, key, index, column) → uniform in [0, 1).

Every random choice of the synthfaces world is a pure function of integers, so any
sample can be regenerated from its split and index alone, in any order, in batches,
on any machine, without constructing one generator per sample. The mixer is
SplitMix64's finaliser applied to a running 64-bit state.
"""
from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def uniforms(stream: int, key: int, index, columns: int) -> np.ndarray:
    """Uniforms of shape (len(index), columns) in [0, 1), float64.

    ``stream`` separates kinds of randomness (attributes, identity, nuisance),
    ``key`` separates splits, ``index`` is an integer or an array of integers.
    """
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64)).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _mix(np.array([stream], dtype=np.uint64) * _GOLDEN + np.uint64(key))
        state = _mix(base ^ (idx * _GOLDEN + np.uint64(0x632BE59BD9B4E019)))
        cols = np.arange(1, columns + 1, dtype=np.uint64) * _GOLDEN
        h = _mix(state[:, None] + cols[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
