"""Image grids of a run: originals / [pre-explanations /] counterfactuals / |difference| / [mask] /
[|attribution|]."""
from __future__ import annotations

import numpy as np
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


def line_plot(xs: list[float], curves: list[list[float]], bold: list[float] | None = None, size: tuple[int, int] = (480, 320),
              y_range: tuple[float, float] = (0.0, 1.0), level: float | None = 0.5) -> torch.Tensor:
    """A plain line plot as a uint8 image (3, H, W): every curve in light grey, ``bold`` (a
    summary curve) in black, a dashed horizontal line at ``level``; the x axis spans ``xs``,
    the y axis ``y_range``."""
    from PIL import Image, ImageDraw

    width, height = size
    margin = 30
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)

    def at(x: float, y: float) -> tuple[float, float]:
        u = (x - xs[0]) / max(xs[-1] - xs[0], 1e-12)
        v = (y - y_range[0]) / (y_range[1] - y_range[0])
        return margin + u * (width - 2 * margin), height - margin - v * (height - 2 * margin)

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    if level is not None:
        y = at(xs[0], level)[1]
        for x0 in range(margin, width - margin, 8):
            draw.line([x0, y, min(x0 + 4, width - margin), y], fill="red")
    for curve in curves:
        draw.line([at(x, y) for x, y in zip(xs, curve)], fill=(170, 170, 170), width=1)
    if bold is not None:
        draw.line([at(x, y) for x, y in zip(xs, bold)], fill="black", width=3)
    draw.text((margin, height - margin + 8), f"{xs[0]:g}", fill="black")
    draw.text((width - margin - 20, height - margin + 8), f"{xs[-1]:g}", fill="black")
    draw.text((4, margin - 6), f"{y_range[1]:g}", fill="black")
    draw.text((4, height - margin - 6), f"{y_range[0]:g}", fill="black")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
