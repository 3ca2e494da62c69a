"""Counterfactual transition COUT (Khorram & Fuxin, CVPR 2022), as ACE §4 evaluates it
(``compute_COUT.py``, ``eval_utils/cout_metrics.py``) and LDCE App. E eqs. 13-14 write it.

Per sample, with x the original and x' the counterfactual, both in [0, 1]:

1. mask m = Σ_c |x' − x| per pixel; pixels ranked by decreasing m (ties by pixel
   index: a stable sort, so the order is deterministic);
2. insertion: x⁽ᵏ⁾ takes x' on the top-ranked pixels and x elsewhere, in steps of
   ``H·W // STEPS`` pixels (ACE: 50 steps; a last partial step completes the image when
   50 does not divide H·W, as ACE's ``range(0, H·W, step)`` does), from x⁽⁰⁾ = x to x';
3. the classifier's probability of the target class, p_k = σ(±logit(x⁽ᵏ⁾)) (+ for
   target 1), and of the original (predicted) class, 1 − p_k;
4. AUPC of each curve by the trapezoid rule over the inserted fraction of pixels, and
   COUT = AUPC(target) − AUPC(original) = 2·AUPC(target) − 1 ∈ [−1, 1].

Deviation: ACE's code gives the final, partial step the width of a full step (its
x-axis ends at 1.018 for 128×128, so scores can leave [−1, 1] by up to 1.8%); here the
widths are the true pixel fractions, which is LDCE eq. 14's normalisation to [0, 1].

Subset as ACE: the correctly classified originals ("CC"), every counterfactual of
them, successful or not. The classifier is the one explained (``EvalData.classifier``,
[0, 1] images to one logit); the target is the table's ``target`` (1 − prediction).
Two identical images score 1 − 2·σ(|logit(x)|), not 0: the curves are flat at the
classifier's confidence.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cfbench.errors import CfbenchError
from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, SampleMetric

#: ACE / c3lt ``cout_num_steps``.
STEPS = 50


def insertion_counts(pixels: int, steps: int = STEPS) -> list[int]:
    """Pixels inserted at each point of the curve: 0, step, 2·step, …, pixels."""
    step = max(1, pixels // steps)
    return list(range(0, pixels, step)) + [pixels]


@torch.no_grad()
def cout_scores(
    classifier: torch.nn.Module, originals: torch.Tensor, counterfactuals: torch.Tensor, targets: torch.Tensor,
    tie_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """COUT of each (original, counterfactual) pair towards ``targets`` (0/1), (B,) float64.
    Equal mask values are inserted by pixel index, or in ``tie_order`` (a permutation of
    the H·W pixel indices) where given (`benchmarks/cout_ties.py` measures the effect)."""
    b, _, h, w = originals.shape
    mask = (counterfactuals - originals).abs().sum(dim=1).reshape(b, h * w)
    if tie_order is None:
        order = torch.sort(mask, dim=1, descending=True, stable=True).indices
    else:
        tie_order = tie_order.to(mask.device)
        order = tie_order[torch.sort(mask[:, tie_order], dim=1, descending=True, stable=True).indices]
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    sign = targets.to(originals.device).double().mul(2).sub(1)
    counts = insertion_counts(h * w)
    curve = []
    for inserted in counts:
        take = (ranks < inserted).reshape(b, 1, h, w).to(originals.dtype)
        mixed = counterfactuals * take + originals * (1 - take)
        curve.append(torch.sigmoid(sign * classifier(mixed).reshape(b).double()))
    curve_t = torch.stack(curve)  # (points, B): probability of the target class
    x = torch.tensor(counts, dtype=torch.float64, device=curve_t.device) / (h * w)
    aupc_target = torch.trapezoid(curve_t, x, dim=0)
    return (2 * aupc_target - 1).cpu()


@METRICS.register("cout")
class COUT(SampleMetric):
    """Counterfactual transition: AUPC(target) - AUPC(original class) under pixel insertion, in [-1, 1]"""

    name = "cout"
    paper = "ACE §4 (Khorram & Fuxin 2022); LDCE App. E eqs. 13-14"
    higher_is_better = True
    needs = frozenset({"classifier"})
    subset = "correct"

    def prepare(self, data: EvalData) -> None:
        if data.classifier is None:
            raise CfbenchError("COUT needs the classifier under explanation (EvalData.classifier).")
        self.classifier = data.classifier

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        targets = torch.tensor(rows["target"].to_numpy(dtype=np.int64))
        return cout_scores(self.classifier, originals, counterfactuals, targets)
