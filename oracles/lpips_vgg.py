"""LPIPS-VGG, the perceptual distance of DiME's and ACE's σL (``compute_LPIPS.py``:
``lpips.LPIPS(net='vgg')`` called with ``normalize=False`` on [-1, 1] images).

The lpips package ships its calibrated linear layers (``lpips/weights/v0.1/vgg.pth``)
but takes the VGG16 trunk from torchvision's ImageNet weights, which it would download.
Here the trunk is built untrained (``pnet_rand=True``) and filled from the torchvision
file ``vgg16-397923af.pth`` in the cfbench weights cache or a given path: lpips splits
``vgg16().features`` into five slices (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
that keep the layers' indices as module names, so ``features.N.*`` becomes
``sliceK.N.*`` of the slice holding layer N; the file's ``classifier.*`` is not used.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from cfbench.checkpoints import load_strict
from cfbench.oracles import EvalNetwork
from cfbench.oracles.published import published_state


def build_lpips_vgg() -> nn.Module:
    """``lpips.LPIPS(net='vgg')`` with its shipped linear layers and an untrained trunk."""
    import lpips

    with warnings.catch_warnings():  # torchvision's notice about the deprecated `pretrained` flag
        warnings.simplefilter("ignore")
        return lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()


def trunk_state(model: nn.Module, vgg16_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision VGG16 keys -> the keys of ``model.net`` (the lpips trunk)."""
    slice_of = {index: name for name, part in model.net.named_children() for index in part._modules}
    state = {}
    for key, value in vgg16_state.items():
        part, _, rest = key.partition(".")
        index, _, parameter = rest.partition(".")
        if part == "classifier":
            continue
        if part == "features" and index in slice_of:
            key = f"{slice_of[index]}.{index}.{parameter}"
        state[key] = value
    return state


class LpipsDistance(nn.Module):
    """``d(x, y) -> (B,)`` for images in [0, 1]: LPIPS on (2x - 1, 2y - 1), ``normalize=False``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.lpips = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x * 2 - 1, y * 2 - 1, normalize=False).flatten()


def lpips_vgg(path: Path | None = None) -> EvalNetwork:
    """LPIPS v0.1 VGG with the ImageNet VGG16 trunk from ``vgg16-397923af.pth``."""
    found, state = published_state("vgg16-imagenet", path, "VGG16 weights file")
    model = build_lpips_vgg()
    load_strict(model.net, trunk_state(model, state), found, "the LPIPS VGG16 trunk (torchvision vgg16 features)")
    return EvalNetwork(
        "lpips-vgg", "perceptual", LpipsDistance(model).eval(),
        note="lpips 0.1 LPIPS(net='vgg') on [-1, 1] inputs (normalize=False), as DiME/ACE compute σL",
    )  # fmt: skip
