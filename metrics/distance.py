"""Lp distances between input and counterfactual, LDCE App. E eqs. 16-17:
L_p = mean_i ||x_i^F - x_i^CF||_p over all C·H·W entries, on [0, 1] pixels.

``l1_plus`` is DiME's ℓ1 (Table 2, "evaluate the ℓ1 metric on successful CE"):
the mean absolute difference per entry, ||x - x'||_1 / (C·H·W), on [0, 1] pixels
(DiME ``main.py``: ``(I_f - cf_f).abs().mean(dim=1)`` on the saved uint8 images, so
values such as 0.043), averaged over the successful counterfactuals."""
from __future__ import annotations

from typing import ClassVar

import pandas as pd
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import SampleMetric


class LpDistance(SampleMetric):
    p: ClassVar[int] = 1
    higher_is_better = False

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        return (originals.double() - counterfactuals.double()).flatten(1).norm(p=self.p, dim=1)


@METRICS.register("l1")
class L1(LpDistance):
    """Mean L1 distance between input and counterfactual, [0,1] pixels"""

    name = "l1"
    paper = "LDCE App. E eqs. 16-17"
    p = 1


@METRICS.register("l2")
class L2(LpDistance):
    """Mean L2 distance between input and counterfactual, [0,1] pixels"""

    name = "l2"
    paper = "LDCE App. E eqs. 16-17"
    p = 2


@METRICS.register("l1_plus")
class L1Successful(SampleMetric):
    """Mean absolute pixel change per entry (L1 / CHW) on [0,1] pixels, successful counterfactuals"""

    name = "l1_plus"
    paper = "DiME Table 2 (l1)"
    higher_is_better = False
    subset = "successful"

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        return (originals.double() - counterfactuals.double()).abs().flatten(1).mean(dim=1)
