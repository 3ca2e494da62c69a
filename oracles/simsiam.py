"""The published SimSiam ResNet-50 that ACE's S³ compares counterfactuals with.

Facts (facebookresearch/simsiam ``simsiam/builder.py``, ``main_simsiam.py``; ACE
``eval_utils/simsiam.py``, ``compute_SimSiamSimilarity.py``):

- the encoder is torchvision's ``resnet50(num_classes=2048, zero_init_residual=True)``
  whose ``fc`` is replaced by the 3-layer projector 2048 → 2048 → 2048 (the output
  Linear keeps its bias, followed by a BN without affine parameters); the predictor is
  2048 → 512 → 2048 (``--dim 2048 --pred-dim 512``);
- ``checkpoint_0099.pth.tar`` holds ``{'epoch', 'arch', 'state_dict', 'optimizer'}``
  with the DistributedDataParallel keys ``module.encoder.…`` and ``module.predictor.…``;
- ACE uses the batch-size-256 model, compares the encoder (= projector) outputs z by
  cosine, feeds images at their own size (no resize) normalised by the ImageNet
  mean/std, with BN in eval mode.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from cfbench.checkpoints import load_strict
from cfbench.oracles import EvalNetwork
from cfbench.oracles.published import published_state
from cfbench.zoo.networks import simsiam_predictor, simsiam_projector

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SimSiamResNet50(nn.Module):
    """SimSiam with a ResNet-50 backbone, laid out as the published code builds it, so its
    state dict has the checkpoint's keys (less ``module.``). ``forward`` takes images in
    [0, 1] and returns the projector output z (B, 2048)."""

    def __init__(self, dim: int = 2048, pred_dim: int = 512):
        super().__init__()
        self.encoder = resnet50(num_classes=dim, zero_init_residual=True)
        width = self.encoder.fc.in_features
        self.encoder.fc = simsiam_projector(width, width, dim, last_bias=True)
        self.predictor = simsiam_predictor(dim, pred_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder((x - self.mean) / self.std)


def simsiam_resnet50(path: Path | None = None) -> EvalNetwork:
    """ACE's S³ network from ``checkpoint_0099.pth.tar`` (or ``path``)."""
    found, state = published_state("simsiam-resnet50", path, "SimSiam checkpoint", "state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = load_strict(SimSiamResNet50(), state, found, "SimSiam ResNet-50")
    return EvalNetwork(
        "simsiam-resnet50", "simsiam", model.eval(),
        note="facebookresearch/simsiam ResNet-50 (100 ep, batch 256), projector output z; ImageNet mean/std, no resize",
    )  # fmt: skip
