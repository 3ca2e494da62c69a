"""Loss networks: the networks a method optimises against inside its objective (DiME's
L_perc, GCD's LPIPS), kept apart from the evaluation networks (`cfbench.oracles`).

A method must not optimise a network that also scores it. Each record names the
evaluation networks whose weights it shares (``shares``); a run whose metrics use one of
them is refused, unless the record says the overlap is to be flagged instead
(``on_overlap="flag"``: the papers themselves share the network, or a stand-in still
waits for its own), in which case the run goes ahead and its results carry the flag.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cfbench.errors import CfbenchError
from cfbench.registry import Registry

LOSS_NETWORKS = Registry("loss network", "cfbench.loss_networks")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LossNetwork:
    """``factory`` (``module:attr``) builds the network from keyword settings; ``shares``
    are the evaluation networks (`cfbench.oracles.NETWORKS` names) with the same weights."""

    name: str
    factory: str
    description: str
    shares: tuple[str, ...] = ()
    on_overlap: str = "refuse"
    why: str = ""

    def create(self, **settings: Any) -> nn.Module:
        module, _, attribute = self.factory.partition(":")
        return getattr(importlib.import_module(module), attribute)(**settings)


def register(record: LossNetwork) -> LossNetwork:
    return LOSS_NETWORKS.register(record.name, description=record.description)(record)


def overlaps(name: str, evaluation: dict[str, list[str]]) -> list[str]:
    """The metrics (of ``evaluation``: metric -> its evaluation networks) with a network that
    shares the weights of loss network ``name``; raises when the record refuses the overlap."""
    record: LossNetwork = LOSS_NETWORKS.get(name)
    shared = sorted(metric for metric, networks in evaluation.items() if set(networks) & set(record.shares))
    if shared and record.on_overlap != "flag":
        networks = ", ".join(sorted({n for m in shared for n in evaluation[m] if n in record.shares}))
        raise CfbenchError(
            f"loss network {name} shares its weights with the evaluation network {networks} of "
            f"{', '.join(shared)}: a method must not optimise what scores it; choose another loss network "
            f"(--set) or evaluation network (--network ROLE=NAME)."
        )
    return shared


def flag_text(name: str, metrics: list[str]) -> str:
    record: LossNetwork = LOSS_NETWORKS.get(name)
    return (f"loss network {name} shares weights with the evaluation network(s) {', '.join(record.shares)} "
            f"of {', '.join(metrics)} ({record.why})")  # fmt: skip


class FeatureDistance(nn.Module):
    """Squared feature distance Σ_batch mean((F(x) − F(y))²), F = ``trunk`` on
    ``(clamp(x, −1, 1) + 1)/2`` normalised by ``mean``/``std`` (images in [−1, 1]): DiME's
    L_perc without its weight λ_p (guillaumejs2403/DiME ``core/sample_utils.py``)."""

    def __init__(self, trunk: nn.Module, mean: tuple[float, ...] = (0.0,) * 3, std: tuple[float, ...] = (1.0,) * 3):
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(((x.clamp(-1, 1) + 1) / 2 - self.mean) / self.std).flatten(1)

    def forward(self, x: Tensor, target_features: Tensor) -> Tensor:
        return (self.features(x) - target_features).pow(2).mean(dim=1).sum()


def vgg19_features(layer: int = 18, path: Path | str | None = None) -> FeatureDistance:
    """DiME's L_perc network: torchvision's ImageNet VGG19 ``features[:layer]`` (DiME: 18,
    relu3_4; ``--l_perc_layer``) from ``vgg19-dcbb9e9d.pth`` (weights cache or ``path``);
    every ``features.*`` key of the file is loaded strictly, its ``classifier.*`` keys are
    not used."""
    from torchvision.models.vgg import cfgs, make_layers

    from cfbench.checkpoints import load_strict
    from cfbench.oracles.published import published_state

    found, state = published_state("vgg19-imagenet", path, "VGG19 weights file")
    features = make_layers(cfgs["E"])
    names = {k: f"features.{k}" for k in features.state_dict()}
    kept = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    load_strict(features, kept, found, "torchvision VGG19 features", names)
    return FeatureDistance(features[:layer], IMAGENET_MEAN, IMAGENET_STD).eval()


def synthfaces_vgg_features(layer: int = 20, path: Path | str | None = None) -> FeatureDistance:
    """The synthfaces loss network: the first ``layer`` modules of the zoo's narrow VGG
    (``synthfaces-vgg``; 20 ends its third stage at 1/4 resolution, as VGG19's relu3_4)
    after its own input layer ((x − 0.5)/0.5 at 64 px)."""
    from cfbench.zoo import ZOO

    if path:
        raise CfbenchError("synthfaces-vgg is read from the zoo; it takes no weights path.")
    encoder = ZOO["synthfaces-vgg"].load()
    if not 1 <= layer <= len(encoder.features):
        raise CfbenchError(f"synthfaces-vgg has {len(encoder.features)} feature modules; layer={layer} is not one.")
    return FeatureDistance(nn.Sequential(encoder.input, *encoder.features[:layer])).eval()


class StageLPIPS(nn.Module):
    """LPIPS with unit weights (Zhang et al., CVPR 2018, eq. 1 with w_l = 1, the
    ``lpips=False`` baseline of the lpips package) on a network's stages (`stages`): each
    spatial position's channel vector unit-normalised, the squared difference summed over
    channels, averaged over space and summed over stages. ``forward(x, y) -> (B,)`` for
    images in [0, 1]."""

    def stages(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        n, distance = x.shape[0], x.new_zeros(x.shape[0])
        for tap in self.stages(torch.cat([x, y])):
            tap = tap / (tap.norm(dim=1, keepdim=True) + 1e-10)
            distance = distance + (tap[:n] - tap[n:]).pow(2).sum(1).mean((1, 2))
        return distance


class VGGStageLPIPS(StageLPIPS):
    """`StageLPIPS` on a VGG-style ``features`` stack: the activation before every max-pool
    and at the end."""

    def __init__(self, input_layer: nn.Module, features: nn.Sequential):
        super().__init__()
        self.input = input_layer
        self.features = features

    def stages(self, x: Tensor) -> list[Tensor]:
        taps, h = [], self.input(x)
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                taps.append(h)
            h = layer(h)
        return [*taps, h]


def synthfaces_vgg_lpips(path: Path | str | None = None) -> VGGStageLPIPS:
    """Unit-weight LPIPS on the stages of the zoo's narrow VGG (``synthfaces-vgg``): GCD's
    LPIPS on synthfaces, apart from the oracle whose stages the evaluation's LPIPS uses."""
    from cfbench.zoo import ZOO

    if path:
        raise CfbenchError("synthfaces-vgg is read from the zoo; it takes no weights path.")
    encoder = ZOO["synthfaces-vgg"].load()
    return VGGStageLPIPS(encoder.input, encoder.features).eval()


def lpips_vgg_distance(path: Path | str | None = None) -> nn.Module:
    """``lpips.LPIPS(net='vgg')`` on [0, 1] images (rescaled to [-1, 1]): GCD's LPIPS
    (GCD `gcd/src/losses`, ``lpips.LPIPS(net='vgg')``)."""
    from cfbench.oracles.lpips_vgg import lpips_vgg

    return lpips_vgg(Path(path) if path else None).module


register(LossNetwork(
    "vgg19-imagenet", "cfbench.losses:vgg19_features",
    "torchvision ImageNet VGG19 features[:layer], DiME's L_perc (relu3_4 at layer 18)",
))
register(LossNetwork(
    "synthfaces-vgg", "cfbench.losses:synthfaces_vgg_features",
    "the convolution stages of the synthfaces zoo's narrow VGG (stand-in for VGG19; no metric uses it)",
))
register(LossNetwork(
    "lpips-vgg", "cfbench.losses:lpips_vgg_distance",
    "LPIPS v0.1 with the ImageNet VGG16 trunk, GCD's LPIPS", shares=("lpips-vgg",), on_overlap="flag",
    why="GCD's counterfactual loss and DiME/ACE's σL both use lpips.LPIPS(net='vgg')",
))
register(LossNetwork(
    "synthfaces-vgg-lpips", "cfbench.losses:synthfaces_vgg_lpips",
    "unit-weight LPIPS on the stages of the synthfaces zoo's narrow VGG (GCD's LPIPS on synthfaces; no metric uses it)",
))
