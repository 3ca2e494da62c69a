"""Flip ratio, LDCE App. E eq. 12: the share of counterfactuals the classifier assigns
to the target class, decided on the saved (quantized) image, in percent."""
from __future__ import annotations

import pandas as pd
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import SampleMetric


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
