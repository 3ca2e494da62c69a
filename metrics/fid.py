"""Fréchet distances between originals and counterfactuals: FID and ACE's split FID.

Features: the dataset's ``features`` role (the FID Inception-v3, 2048-d pool3, on real
data; the synthfaces features as a stand-in), computed once per run. Fréchet distance
(LDCE App. E eq. 20) between the Gaussians fitted to two feature sets, with
torch-fidelity's ``fid_features_to_statistics`` / ``fid_statistics_to_metric``.

* **FID**: every original against the successful counterfactuals, as DiME's and ACE's
  ``compute-fid`` scripts (real = Correct + Incorrect originals, fake = CCF images).
  CI: a delete-a-group jackknife over the counterfactual set — ``JACKKNIFE_GROUPS``
  seeded groups, each left out once, value ± 1.96 standard errors (≥ 0). Not the bootstrap:
  resampling with replacement duplicates features, which shrinks the fitted covariance
  and biases every resampled FID upwards (on Gaussian features the 95% percentile
  interval of 200 resamples did not even contain the estimate, and its spread was 2-3×
  the true sampling s.d.; the jackknife s.e. matched it). The jackknife replicates use
  the exact low-rank identity tr√(Σ₁Σ₂) = ‖X₁X₂ᵀ‖_* (Σᵢ = XᵢᵀXᵢ): no D×D
  eigendecomposition (80× faster at N = 500, D = 2048), and equal to torch-fidelity's
  value within 1e-7 relative (the noise of torch-fidelity's eigenvalues of the
  non-symmetric product when N < D; 1e-15 when N > D).
* **sFID** (ACE §4): the sample ids split in half at random; FID(originals of half A,
  successful counterfactuals of half B) and FID(originals of B, successful
  counterfactuals of A); ``SPLITS`` = 10 splits (ACE's text: "iterating this process ten
  times and taking the mean"), seeded 0..9, over the ids in sorted order (ACE's script
  shuffles unseeded and makes one split per call); odd N leaves one sample out. Value:
  the mean of the 2·SPLITS distances; CI: their 2.5 and 97.5 percentiles (the spread
  over splits, not a sampling interval). The 2·SPLITS distances use the low-rank
  identity as well (20 D×D eigendecompositions would take minutes at D = 2048 on CPU).

* **FID⁺** (DiME §4.5, Table 2): FID on the successful counterfactuals with "the same
  number of samples for all methods": ``FID_PLUS_SUBSETS`` seeded random subsets of
  m = ⌈``FID_PLUS_FRACTION``·N⌉ successful counterfactuals (N: the run's samples, equal
  for every method on a leaderboard; 0.2 because DiME's weakest variant flipped 19.7%),
  each against all originals. Value: the mean; CI: the 2.5 and 97.5 percentiles over
  subsets. A run with fewer than m successful counterfactuals gets NaN.

n is the number of successful counterfactuals. A set with fewer than two feature
vectors gives NaN.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, Metric, MetricResult

SPLITS = 10
FID_PLUS_FRACTION = 0.2
FID_PLUS_SUBSETS = 10
JACKKNIFE_GROUPS = 20
JACKKNIFE_SEED = 0
FEW_COUNTERFACTUALS = "needs at least {} successful counterfactuals"


def frechet_distance(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """FID between two feature sets (N, D), torch-fidelity's computation; NaN for < 2 rows."""
    if len(features_1) < 2 or len(features_2) < 2:
        return float("nan")
    stats = [fid_features_to_statistics(f.double().cpu()) for f in (features_1, features_2)]
    return float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])


def _centred_factor(features: np.ndarray) -> np.ndarray:
    """X with XᵀX = the sample covariance (ddof 1), at most D rows."""
    x = (features - features.mean(axis=0)) / np.sqrt(len(features) - 1)
    return np.linalg.qr(x, mode="r") if len(x) > x.shape[1] else x


def frechet_distance_lowrank(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """The same distance through tr√(Σ₁Σ₂) = nuclear norm of X₁X₂ᵀ (exact, fast for N < D)."""
    x1, x2 = _centred_factor(features_1), _centred_factor(features_2)
    diff = features_1.mean(axis=0) - features_2.mean(axis=0)
    trace_sqrt = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum()
    return float(diff @ diff + (x1**2).sum() + (x2**2).sum() - 2 * trace_sqrt)


def jackknife_se(n: int, groups: int, replicate: Callable[[np.ndarray], float]) -> float:
    """Delete-a-group jackknife standard error: ``n`` items assigned to ``groups`` seeded
    groups (`JACKKNIFE_SEED`), ``replicate(keep)`` the statistic without one group."""
    member = np.random.default_rng(JACKKNIFE_SEED).permutation(n) % groups
    replicates = np.array([replicate(member != g) for g in range(groups)])
    return float(np.sqrt((groups - 1) / groups * ((replicates - replicates.mean()) ** 2).sum()))


def jackknife_ci(
    originals: np.ndarray, counterfactuals: np.ndarray, estimate: float, groups: int = JACKKNIFE_GROUPS
) -> tuple[float, float] | None:
    """Estimate ± 1.96 delete-a-group jackknife standard errors over the counterfactuals
    (lower end clipped at 0); None when there are too few counterfactuals."""
    groups = min(groups, len(counterfactuals))
    if groups < 2 or len(counterfactuals) - len(counterfactuals) // groups < 3:
        return None
    se = jackknife_se(len(counterfactuals), groups, lambda keep: frechet_distance_lowrank(originals, counterfactuals[keep]))
    return (max(0.0, estimate - 1.96 * se), estimate + 1.96 * se)  # a distance is never negative


class FeatureSetMetric(Metric):
    """Base of the metrics on the ``features`` role: `measure` gets the features of every
    original and of the successful counterfactuals (FID's sets, DiME/ACE), computed
    once per run; the result records the network."""

    higher_is_better = False
    needs = frozenset({"features"})

    def measure(self, data: EvalData, originals: torch.Tensor, counterfactuals: torch.Tensor) -> MetricResult:
        raise NotImplementedError

    def compute(self, data: EvalData) -> MetricResult:
        network = data.network("features")
        originals, counterfactuals = data.embed("features")
        result = self.measure(data, originals, counterfactuals[data.rows("successful")])
        result.network = network.label
        return result


@METRICS.register("fid")
class FID(FeatureSetMetric):
    """FID between all originals and the successful counterfactuals (features network)"""

    name = "fid"
    paper = "DiME §4.1; LDCE App. E eq. 20"

    def measure(self, data: EvalData, originals: torch.Tensor, counterfactuals: torch.Tensor) -> MetricResult:
        value = frechet_distance(originals, counterfactuals)
        if np.isnan(value):
            return MetricResult(value, None, len(counterfactuals), reason=FEW_COUNTERFACTUALS.format(2))
        ci = jackknife_ci(originals.numpy(), counterfactuals.numpy(), value)
        return MetricResult(value, ci, len(counterfactuals))


@METRICS.register("sfid")
class SplitFID(FeatureSetMetric):
    """Split FID: originals of one random half vs successful counterfactuals of the other, 10 splits"""

    name = "sfid"
    paper = "ACE §4; LDCE App. E"

    def measure(self, data: EvalData, originals: torch.Tensor, counterfactuals: torch.Tensor) -> MetricResult:
        counterfactuals = data.embed("features")[1]  # indexed by sample here, success checked per half
        success = data.table["success"].to_numpy(dtype=bool)
        by_id = np.argsort(data.table["id"].astype(str).to_numpy(), kind="stable")
        half = len(by_id) // 2
        distances = []
        for seed in range(SPLITS):
            order = by_id[np.random.default_rng(seed).permutation(len(by_id))]
            a, b = order[:half], order[half : 2 * half]
            for real, fake in ((a, b), (b, a)):
                fakes = counterfactuals[fake[success[fake]]]
                enough = len(real) >= 2 and len(fakes) >= 2
                distances.append(frechet_distance_lowrank(originals[real].numpy(), fakes.numpy()) if enough else np.nan)
        values = np.array(distances)
        n = int(success.sum())
        if values.size == 0 or np.isnan(values).any():
            reason = "a half of the samples has fewer than 2 successful counterfactuals"
            return MetricResult(float("nan"), None, n, reason=reason)
        low, high = np.quantile(values, [0.025, 0.975])
        return MetricResult(float(values.mean()), (float(low), float(high)), n)


@METRICS.register("fid_plus")
class FIDPlus(FeatureSetMetric):
    """FID+: FID of equal-size random subsets (20% of the samples) of the successful counterfactuals, 10 subsets"""

    name = "fid_plus"
    paper = "DiME §4.5, Table 2"

    def measure(self, data: EvalData, originals: torch.Tensor, counterfactuals: torch.Tensor) -> MetricResult:
        m = int(np.ceil(FID_PLUS_FRACTION * len(data.table)))
        if m < 2 or len(counterfactuals) < m:
            return MetricResult(float("nan"), None, len(counterfactuals), reason=FEW_COUNTERFACTUALS.format(max(m, 2)))
        values = np.array([
            frechet_distance_lowrank(originals.numpy(), counterfactuals[np.random.default_rng(seed).permutation(
                len(counterfactuals))[:m]].numpy())
            for seed in range(FID_PLUS_SUBSETS)
        ])  # fmt: skip
        low, high = np.quantile(values, [0.025, 0.975])
        return MetricResult(float(values.mean()), (float(low), float(high)), m)
