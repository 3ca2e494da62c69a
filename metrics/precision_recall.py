"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) as LDCE App. E
eqs. 21-23 adapt them to counterfactuals.

A feature vector φ lies in the manifold of a set Φ when it is inside the ball of at
least one φ' ∈ Φ whose radius is the distance from φ' to its k-th nearest neighbour in
Φ (itself excluded), eq. 21, with k = ``NEIGHBOURS`` = 3 (Kynkäänniemi et al.'s and
torch-fidelity's default; LDCE states no k).

* **precision** (eq. 22): the fraction of counterfactuals inside the originals' manifold;
* **recall** (eq. 23): the fraction of originals inside the counterfactuals' manifold.

Sets as for FID (DiME/ACE): Φ^F = every original, Φ^CF = the successful
counterfactuals. Features: the dataset's ``features`` role (the FID Inception-v3 pool
features on real data; LDCE used DINOv2, a deviation kept so that FID, sFID and
precision/recall share one feature space; the synthfaces features as a stand-in).
Distances are Euclidean, in float64. Values are fractions in [0, 1], NaN with n = 0
when a set has at most k points. CI: bootstrap over the evaluated points with both
manifolds held fixed (it ignores the radii's own sampling noise).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, MetricResult, mean_result
from cfbench.metrics.fid import FeatureSetMetric

#: k of the k-NN radii (Kynkäänniemi et al. 2019, torch-fidelity ``prc_neighborhood``).
NEIGHBOURS = 3
_CHUNK = 1024


def knn_radii(support: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """Distance from each point of ``support`` to its k-th nearest other point."""
    return torch.cat([torch.cdist(part, support).kthvalue(k + 1, dim=1).values for part in support.split(_CHUNK)])


def inside_manifold(queries: torch.Tensor, support: torch.Tensor, k: int = NEIGHBOURS) -> np.ndarray:
    """Eq. 21 for each query: 1.0 when inside some support point's k-NN ball, else 0.0."""
    radii = knn_radii(support, k)
    inside = [(torch.cdist(part, support) <= radii).any(dim=1) for part in queries.split(_CHUNK)]
    return torch.cat(inside).double().numpy() if inside else np.zeros(0)


class ManifoldCoverage(FeatureSetMetric):
    """Shared by precision and recall: which set is queried against which manifold."""

    queries_are_counterfactuals: ClassVar[bool] = True
    higher_is_better = True

    def measure(self, data: EvalData, originals: torch.Tensor, counterfactuals: torch.Tensor) -> MetricResult:
        queries, support = (
            (counterfactuals, originals) if self.queries_are_counterfactuals else (originals, counterfactuals)
        )
        if len(support) <= NEIGHBOURS or len(queries) == 0:
            reason = f"needs more than {NEIGHBOURS} successful counterfactuals and originals"
            return MetricResult(float("nan"), None, 0, reason=reason)
        return mean_result(inside_manifold(queries, support))


@METRICS.register("precision")
class Precision(ManifoldCoverage):
    """Precision: fraction of successful counterfactuals inside the originals' k-NN feature manifold (k=3)"""

    name = "precision"
    paper = "LDCE App. E eqs. 21-22 (Kynkäänniemi et al. 2019)"
    queries_are_counterfactuals = True


@METRICS.register("recall")
class Recall(ManifoldCoverage):
    """Recall: fraction of originals inside the successful counterfactuals' k-NN feature manifold (k=3)"""

    name = "recall"
    paper = "LDCE App. E eqs. 21, 23 (Kynkäänniemi et al. 2019)"
    queries_are_counterfactuals = False
