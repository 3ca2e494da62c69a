"""Kernel Inception Distance (Bińkowski et al., ICLR 2018 §3): the unbiased squared MMD
between originals and successful counterfactuals under the cubic polynomial kernel
k(x, y) = (xᵀy / D + 1)³ on the ``features`` role, the realism figure that stays
meaningful at the small n where FID's bias dominates (PROTOCOL.md, "Realism at small n").

* **Value**: torch-fidelity's ``kid_features_to_metric``: the mean over
  ``SUBSETS`` = 100 random subset pairs of size m = min(1000, n_originals, n_counterfactuals),
  drawn with ``rng_seed`` 0.
* **CI**: value ± 1.96 delete-a-group jackknife standard errors over the counterfactuals
  (``JACKKNIFE_GROUPS`` seeded groups, as FID), each replicate the unbiased MMD² of the
  full sets (one kernel matrix, rows masked), so the interval is the sampling spread of
  the counterfactual set, not the subset draw. KID may be slightly negative (unbiased).
"""
from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, MetricResult
from cfbench.metrics.fid import FEW_COUNTERFACTUALS, JACKKNIFE_GROUPS, FeatureSetMetric, jackknife_se

SUBSETS = 100
MAX_SUBSET = 1000


def kid(features_1: torch.Tensor, features_2: torch.Tensor, seed: int = 0) -> float:
    """torch-fidelity's KID between two feature sets (N, D); NaN below 2 rows in either."""
    m = min(MAX_SUBSET, len(features_1), len(features_2))
    if m < 2:
        return float("nan")
    return float(kid_features_to_metric(features_1.double().cpu(), features_2.double().cpu(), kid_subsets=SUBSETS,
                                        kid_subset_size=m, kid_degree=3, kid_gamma=None, kid_coef0=1,
                                        rng_seed=seed, verbose=False)[KEY_METRIC_KID_MEAN])  # fmt: skip


def _mean_off_diagonal(k: np.ndarray) -> float:
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD² from the kernel matrices of sets of any sizes (≥ 2 each)."""
    return _mean_off_diagonal(kxx) + _mean_off_diagonal(kyy) - 2.0 * float(kxy.mean())


def jackknife_ci(originals: np.ndarray, counterfactuals: np.ndarray, estimate: float,
                 groups: int = JACKKNIFE_GROUPS) -> tuple[float, float] | None:  # fmt: skip
    """Estimate ± 1.96 delete-a-group jackknife standard errors of the full-set MMD²."""
    groups = min(groups, len(counterfactuals))
    if groups < 2 or len(counterfactuals) - len(counterfactuals) // groups < 2:
        return None
    d = originals.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731 - the cubic polynomial kernel
    kxx, kyy, kxy = kernel(originals, originals), kernel(counterfactuals, counterfactuals), kernel(originals, counterfactuals)
    se = jackknife_se(len(counterfactuals), groups, lambda keep: mmd2_unbiased(kxx, kyy[np.ix_(keep, keep)], kxy[:, keep]))
    return (estimate - 1.96 * se, estimate + 1.96 * se)


@METRICS.register("kid")
class KID(FeatureSetMetric):
    """KID: unbiased polynomial-kernel MMD² between all originals and the successful counterfactuals"""

    name = "kid"
    paper = "Bińkowski et al., ICLR 2018 §3 (cfbench: realism at small n)"

    def measure(self, data: EvalData, originals: torch.Tensor, counterfactuals: torch.Tensor) -> MetricResult:
        value = kid(originals, counterfactuals)
        if np.isnan(value):
            return MetricResult(value, None, len(counterfactuals), reason=FEW_COUNTERFACTUALS.format(2))
        ci = jackknife_ci(originals.double().numpy(), counterfactuals.double().numpy(), value)
        return MetricResult(value, ci, len(counterfactuals))
