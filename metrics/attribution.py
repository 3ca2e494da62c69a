"""Conciseness of attribution maps (GCD supp. D.4, Table 9, computed as the Quantus
package does): *sparseness*, the Gini index of |a| (Chalasani et al., ICML 2020; higher:
fewer features carry the attribution), and *complexity*, the entropy of |a|/Σ|a|
(Bhatt et al., IJCAI 2020; lower: more concise). Each is given for the method's own maps
(BB-LIG for GCD; read from the run table, which the harness fills from the maps the method
returns) and for the absolute-difference maps |x − x_cf| summed over channels (AD), the
baseline of Table 9."""
from __future__ import annotations

import pandas as pd
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, Metric, MetricResult, SampleMetric, mean_result


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of |a| per map, (N, ...) -> (N,) (Quantus ``Sparseness``: |a| + 1e-7,
    sorted, Σ(2i − n − 1)a_i / (n Σa_i))."""
    a = (maps.abs().flatten(1).double() + 1e-7).sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    return ((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))


def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Entropy of |a|/Σ|a| per map, (N, ...) -> (N,) (Quantus ``Complexity``); NaN for a
    map that is zero everywhere."""
    a = maps.abs().flatten(1).double()
    p = a / a.sum(dim=1, keepdim=True)
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(dim=1).where(a.sum(dim=1) > 0, torch.nan)


def absolute_difference(originals: torch.Tensor, counterfactuals: torch.Tensor) -> torch.Tensor:
    """AD maps, |x − x_cf| summed over channels, (N, 1, H, W)."""
    return (originals - counterfactuals).abs().sum(dim=1, keepdim=True)


class _OwnMaps(Metric):
    """A mean over the run table's column ``name`` (the method's attribution maps)."""

    def compute(self, data: EvalData) -> MetricResult:
        column = data.table.get(self.name)
        if column is None or column.isna().all():
            return MetricResult(float("nan"), None, 0, reason="the method returns no attribution maps")
        return mean_result(column.dropna().to_numpy(dtype=float))


@METRICS.register("attribution_sparseness")
class AttributionSparseness(_OwnMaps):
    """Gini index of the method's attribution maps (BB-LIG)"""

    name = "attribution_sparseness"
    paper = "GCD supp. D.4, Table 9 (Quantus Sparseness)"
    higher_is_better = True


@METRICS.register("attribution_complexity")
class AttributionComplexity(_OwnMaps):
    """Entropy of the method's attribution maps (BB-LIG)"""

    name = "attribution_complexity"
    paper = "GCD supp. D.4, Table 9 (Quantus Complexity)"
    higher_is_better = False


@METRICS.register("ad_sparseness")
class ADSparseness(SampleMetric):
    """Gini index of the absolute-difference maps |x - x_cf|"""

    name = "ad_sparseness"
    paper = "GCD supp. D.4, Table 9 (AD, Quantus Sparseness)"
    higher_is_better = True

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        return sparseness(absolute_difference(originals, counterfactuals))


@METRICS.register("ad_complexity")
class ADComplexity(SampleMetric):
    """Entropy of the absolute-difference maps |x - x_cf|

    Unchanged images (an all-zero map) are left out."""

    name = "ad_complexity"
    paper = "GCD supp. D.4, Table 9 (AD, Quantus Complexity)"
    higher_is_better = False

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        return complexity(absolute_difference(originals, counterfactuals))

    def per_sample(self, data: EvalData, rows: list[int]):
        values = super().per_sample(data, rows)
        return values[~pd.isna(values)]
