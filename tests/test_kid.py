"""KID: torch-fidelity's value, the unbiased full-set MMD² behind its jackknife CI, and
its behaviour where FID's small-n bias misleads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cfbench.metrics.fid import frechet_distance
from cfbench.metrics.kid import jackknife_ci, kid, mmd2_unbiased


def _kernel(a, b):
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def test_unbiased_mmd_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.0, size=(9, 5))
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    pairs = lambda k: np.mean([k[i, j] for i in range(len(k)) for j in range(len(k)) if i != j])  # noqa: E731
    assert mmd2_unbiased(kxx, kyy, kxy) == pytest.approx(pairs(kxx) + pairs(kyy) - 2 * kxy.mean(), rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_where_small_n_fid_is_not():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 256, generator=g), torch.randn(64, 256, generator=g)
    shifted = torch.randn(64, 256, generator=g) + 0.5
    same, different = kid(a, b), kid(a, shifted)
    assert abs(same) < 0.02 < different  # unbiased: no n-dependent floor
    assert frechet_distance(a, b) > 100  # FID of two samples of one Gaussian at n = 64, D = 256: all bias
    low, high = jackknife_ci(a.double().numpy(), shifted.double().numpy(), different)
    assert low < different < high and low > 0
    assert np.isnan(kid(a[:1], b))
