"""The FID Inception-v3: torch-fidelity's ``FeatureExtractorInceptionV3`` (the
TensorFlow 2015-12-05 graph, ported), its 2048-d pool features.

The weights are the file torch-fidelity itself downloads,
``weights-inception-2015-12-05-6726825d.pth`` (``URL_INCEPTION_V3`` in
``torch_fidelity/feature_extractor_inceptionv3.py``), read here from the cfbench
weights cache or a given path and never downloaded. It is a plain state dict, read
with ``weights_only`` and loaded strictly (torch-fidelity's own loader unpickles
without ``weights_only``, so it is not used).

Input: images in [0, 1] are quantised as the saved PNGs hold them, ``round(x · 255)``
as uint8 (torch-fidelity's input type); torch-fidelity then resizes to 299 with its
TensorFlow-1-compatible bilinear interpolation and maps to [-1, 1]. DiME/ACE ran
pytorch-fid instead (same TF weights, PyTorch bilinear resize), so FIDs agree with
theirs closely but not bit for bit.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from cfbench.checkpoints import load_strict
from cfbench.oracles import EvalNetwork
from cfbench.oracles.published import published_state


class _Unloaded(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception with random weights: construction reads an empty state
    dict from memory instead of downloading, so the weights can be loaded afterwards."""

    def __init__(self) -> None:
        empty = io.BytesIO()
        torch.save({}, empty)
        empty.seek(0)
        super().__init__("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)

    def load_state_dict(self, state_dict, *args, **kwargs):  # type: ignore[override]
        if not state_dict:  # the empty placeholder read during construction
            return None
        return super().load_state_dict(state_dict, *args, **kwargs)


def build_inception() -> FeatureExtractorInceptionV3:
    """The FID Inception-v3 architecture, weights not loaded."""
    return _Unloaded()


class FidInceptionFeatures(nn.Module):
    """Images in [0, 1] -> the 2048-d pool features (B, 2048)."""

    def __init__(self, inception: FeatureExtractorInceptionV3):
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantised = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        return self.inception(quantised)[0]


def inception_v3_fid(path: Path | None = None) -> EvalNetwork:
    """torch-fidelity's FID Inception from ``weights-inception-2015-12-05-6726825d.pth``."""
    found, state = published_state("inception-v3-fid", path, "Inception-v3 weights file")
    inception = load_strict(build_inception(), state, found, "torch-fidelity's FID Inception-v3")
    return EvalNetwork(
        "inception-v3-fid", "features", FidInceptionFeatures(inception).eval(),
        note="torch-fidelity FeatureExtractorInceptionV3, 2048-d pool3; input round(x*255) as uint8",
    )  # fmt: skip
