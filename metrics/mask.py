"""Mask area: the share of pixels a masked method (ACE's refinement, Algorithm 2) let
itself edit, in percent, over every counterfactual; read from the run table's
``mask_area``, which the harness fills from the masks the method returns."""
from __future__ import annotations

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, Metric, MetricResult, mean_result


@METRICS.register("mask_area")
class MaskArea(Metric):
    """Mean % of pixels inside the method's edit mask"""

    name = "mask_area"
    paper = "ACE §3.2 (the refinement mask)"
    higher_is_better = False

    def compute(self, data: EvalData) -> MetricResult:
        if "mask_area" not in data.table or data.table["mask_area"].isna().all():
            return MetricResult(float("nan"), None, 0, reason="the method returns no masks")
        return mean_result(data.table["mask_area"].dropna().to_numpy(dtype=float), scale=100.0)
