"""Per-sample random augmentations on batched GPU/CPU tensors, for SimSiam training
(Chen & He 2021, §4 "Implementation details": random resized crop, flip, colour
jitter, grayscale)."""
from __future__ import annotations

import torch
from torchvision.ops import roi_align


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.4, 1.0)) -> torch.Tensor:
    """Crop a random box of ``scale`` of the area (aspect 3/4..4/3) from each image, resized back."""
    n, _, h, w = x.shape
    area = torch.empty(n, device=x.device).uniform_(*scale)
    log_ratio = torch.empty(n, device=x.device).uniform_(-0.2877, 0.2877)
    ratio = log_ratio.exp()
    bw = (area * ratio).sqrt().clamp(max=1.0) * w
    bh = (area / ratio).sqrt().clamp(max=1.0) * h
    x0 = torch.rand(n, device=x.device) * (w - bw)
    y0 = torch.rand(n, device=x.device) * (h - bh)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=x.dtype), x0, y0, x0 + bw, y0 + bh], dim=1)
    return roi_align(x, boxes.to(x.dtype), output_size=(h, w), sampling_ratio=2, aligned=True)


def colour_jitter(x: torch.Tensor, strength: float = 0.4, p_gray: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - s, 1 + s] per image, then grayscale with p."""
    n = x.shape[0]

    def factor() -> torch.Tensor:
        return torch.empty(n, 1, 1, 1, device=x.device).uniform_(1 - strength, 1 + strength)

    x = x * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
    x = (x - gray) * factor() + gray
    to_gray = torch.rand(n, 1, 1, 1, device=x.device) < p_gray
    return torch.where(to_gray, gray, x).clamp(0, 1)


def flip(x: torch.Tensor) -> torch.Tensor:
    mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(mask, x.flip(-1), x)


def simsiam_view(x: torch.Tensor) -> torch.Tensor:
    return colour_jitter(flip(random_resized_crop(x)))
