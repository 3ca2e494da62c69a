"""Flip ratio, LDCE App. E eq. 12: the share of counterfactuals the classifier assigns
to the target class, decided on the saved (quantized) image, in percent; and the same
for the method's null edit (`Method.null_edit`), ``fr_null``."""
from __future__ import annotations

import pandas as pd
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, Metric, MetricResult, SampleMetric, mean_result


@METRICS.register("fr")
class FlipRatio(SampleMetric):
    """Flip ratio: % of counterfactuals the classifier assigns to the target"""

    name = "fr"
    paper = "LDCE App. E eq. 12"
    higher_is_better = True
    needs = frozenset({"classifier"})
    scale = 100.0

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        return torch.tensor(rows["success"].to_numpy(dtype=float))


@METRICS.register("fr_null")
class NullFlipRatio(Metric):
    """Null-edit flip ratio: % of the method's unguided edits the classifier assigns to the target

    What the method's backbone does unasked (`Method.null_edit`); compare with fr."""

    name = "fr_null"
    paper = "cfbench (the null edit)"
    higher_is_better = False
    needs = frozenset({"classifier"})

    def compute(self, data: EvalData) -> MetricResult:
        if "null_success" not in data.table:
            return MetricResult(float("nan"), None, 0, reason="the method has no null edit (no backbone to run unguided)")
        return mean_result(data.table["null_success"].to_numpy(dtype=float), scale=100.0)
