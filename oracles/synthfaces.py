"""The synthfaces stand-ins for the papers' evaluation networks, read from the zoo
(`cfbench.zoo`): trained here on synthfaces, so every one is ``stand_in=True`` and the
metric tables label their numbers as such.

``path`` (the factories' argument) reads the zoo weights from another
``.safetensors`` file instead of ``cfbench/zoo/weights/``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cfbench.datasets.synthfaces.spec import ATTRIBUTES
from cfbench.losses import StageLPIPS
from cfbench.oracles import EvalNetwork
from cfbench.zoo import ZOO
from cfbench.zoo.networks import ResNetEncoder
from cfbench.zoo.weights import load_weights


def _zoo(name: str, path: Path | None) -> nn.Module:
    """Zoo model ``name`` in eval mode, from ``path`` if given."""
    entry = ZOO[name]
    return load_weights(entry.build(), Path(path), name).eval() if path else entry.load()


class PooledFeatures(nn.Module):
    """The 512-d pooled features of a `ResNetEncoder` (its head left out)."""

    def __init__(self, encoder: ResNetEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(x)


class StagePerceptualDistance(StageLPIPS):
    """`StageLPIPS` on a `ResNetEncoder`'s stages: the stem activation and the outputs of
    the four residual stages."""

    def __init__(self, encoder: ResNetEncoder):
        super().__init__()
        self.encoder = encoder

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        trunk = self.encoder.trunk
        h = trunk.relu(trunk.bn1(trunk.conv1(self.encoder.input(x))))
        taps = [h]
        h = trunk.maxpool(h)
        for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
            h = layer(h)
            taps.append(h)
        return taps


def oracle(path: Path | None = None) -> EvalNetwork:
    return EvalNetwork(
        "synthfaces-oracle", "oracle", _zoo("synthfaces-oracle", path), stand_in=True, attributes=ATTRIBUTES,
        note="ResNet-10 attribute oracle trained on synthfaces; stands in for the VGGFace2-based CelebA oracle",
    )  # fmt: skip


def identity(path: Path | None = None) -> EvalNetwork:
    return EvalNetwork(
        "synthfaces-identity", "identity", _zoo("synthfaces-identity", path), stand_in=True,
        note="DenseNet-BC identity encoder trained on synthfaces; stands in for VGGFace2 ResNet-50",
    )  # fmt: skip


def simsiam(path: Path | None = None) -> EvalNetwork:
    return EvalNetwork(
        "synthfaces-simsiam", "simsiam", _zoo("synthfaces-simsiam", path), stand_in=True,
        note="SimSiam (DenseNet-BC backbone) trained on synthfaces, projector output; stands in for SimSiam ResNet-50",
    )  # fmt: skip


def features(path: Path | None = None) -> EvalNetwork:
    return EvalNetwork(
        "synthfaces-features", "features", PooledFeatures(_zoo("synthfaces-oracle", path)).eval(), stand_in=True,
        note="512-d pooled features of the synthfaces oracle; stands in for the FID Inception-v3",
    )  # fmt: skip


def lpips(path: Path | None = None) -> EvalNetwork:
    return EvalNetwork(
        "synthfaces-lpips", "perceptual", StagePerceptualDistance(_zoo("synthfaces-oracle", path)).eval(),
        stand_in=True,
        note="unit-weight LPIPS on the synthfaces oracle's ResNet stages; stands in for LPIPS-VGG",
    )  # fmt: skip
