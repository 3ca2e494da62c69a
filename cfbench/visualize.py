"""Image grids of a run: originals / [pre-explanations /] counterfactuals / |difference| / [mask] /
[|attribution|]."""
from __future__ import annotations

import torch
from torchvision.utils import make_grid


def comparison_grid(
    originals: torch.Tensor, counterfactuals: torch.Tensor, masks: torch.Tensor | None = None,
    pre_explanations: torch.Tensor | None = None, attributions: torch.Tensor | None = None,
) -> torch.Tensor:
    """One uint8 image (3, H', W'): a column per sample, a row per kind.

    The difference row is the channel mean of |cf - original|, scaled so each
    image's largest change is white; so is each attribution map's largest |value|.
    """
    diff = (counterfactuals - originals).abs().mean(dim=1, keepdim=True)
    diff = diff / diff.flatten(1).amax(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
    rows = [originals, *([] if pre_explanations is None else [pre_explanations]), counterfactuals,
            diff.expand_as(originals)]
    if masks is not None:
        rows.append(masks.expand_as(originals))
    if attributions is not None:
        magnitude = attributions.abs().sum(dim=1, keepdim=True)
        magnitude = magnitude / magnitude.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        rows.append(magnitude.expand_as(originals))
    grid = make_grid(torch.cat(rows), nrow=originals.shape[0], padding=2, pad_value=1.0)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8)
