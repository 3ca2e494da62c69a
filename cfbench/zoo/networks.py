"""Architectures of the `synthfaces` model zoo.

Every network takes images in [0, 1], (N, 3, H, W), normalises them itself
((x - 0.5) / 0.5, as the DiME/ACE CelebA classifiers expect [-1, 1]) and resizes
them bilinearly to the resolution it was trained at (64 px, the world's own), so it
also serves images of another size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet, ResNet
from torchvision.models.resnet import BasicBlock

from cfbench.diffusion.diffae import DiffAE, DiffAEConfig
from cfbench.diffusion.latent import AttributeLatentUNet, KLAutoencoder
from cfbench.diffusion.unet import UNet, UNetConfig


class _Input(nn.Module):
    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return (x - 0.5) / 0.5


class DenseNetBC(nn.Module):
    """DenseNet-BC (Huang et al. 2017) with growth rate 12 and the block layout of
    DenseNet-121 (6, 12, 24, 16): the papers' classifier family at 1.0M instead of
    7.0M parameters, so that it trains and runs on a laptop CPU. A linear head of
    ``out_dim`` outputs (one logit per attribute, or an embedding) on the 384-d
    pooled features; ``out_dim=0`` returns the features."""

    def __init__(self, out_dim: int, resolution: int = 64):
        super().__init__()
        self.input = _Input(resolution)
        self.net = DenseNet(growth_rate=12, block_config=(6, 12, 24, 16), num_init_features=24, num_classes=max(out_dim, 1))
        self.feature_dim = self.net.classifier.in_features
        if not out_dim:
            self.net.classifier = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input(x))


class ResNetEncoder(nn.Module):
    """ResNet-10 (He et al. 2016; BasicBlock, one block per stage) giving 512-d
    pooled features, with a linear head of ``out_dim`` (0 for features only)."""

    def __init__(self, out_dim: int = 0, resolution: int = 64):
        super().__init__()
        self.input = _Input(resolution)
        trunk = ResNet(BasicBlock, [1, 1, 1, 1])
        trunk.fc = nn.Identity()
        self.trunk = trunk
        self.head = nn.Linear(512, out_dim) if out_dim else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VGGEncoder(nn.Module):
    """A narrow VGG (Simonyan & Zisserman 2015: 3×3 conv stages, max-pool between them;
    ``widths`` per stage, two convs a stage, each conv-BN-ReLU as torchvision's vgg*_bn)
    with a linear head of ``out_dim`` on its pooled features: the synthfaces loss
    network's architecture, in the family of the VGG19 that DiME's L_perc uses."""

    def __init__(self, out_dim: int, widths: tuple[int, ...] = (16, 32, 64, 128), resolution: int = 64):
        super().__init__()
        self.input = _Input(resolution)
        layers, channels = [], 3
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.input(x)).mean(dim=(2, 3)))


def simsiam_projector(width: int, hidden: int, dim: int, last_bias: bool = False) -> nn.Sequential:
    """SimSiam's 3-layer projector (Chen & He, CVPR 2021): two Linear-BN-ReLU
    layers and a Linear followed by a BN without affine parameters. ``last_bias``: the
    published code keeps the last Linear's (unused, frozen) bias."""
    return nn.Sequential(
        nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, dim, bias=last_bias), nn.BatchNorm1d(dim, affine=False),
    )  # fmt: skip


def simsiam_predictor(dim: int, pred_dim: int) -> nn.Sequential:
    """SimSiam's 2-layer bottleneck predictor h: Linear-BN-ReLU, then Linear."""
    return nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
                         nn.Linear(pred_dim, dim))  # fmt: skip


class SimSiam(nn.Module):
    """SimSiam (Chen & He, CVPR 2021, §3 and Fig. 1): encoder f = backbone + 3-layer
    projector, predictor h = 2-layer bottleneck MLP. The backbone is `DenseNetBC`
    and the dimensions are scaled down from the paper's 2048/512 to 512/128 for the
    embedded world."""

    def __init__(self, resolution: int = 64, dim: int = 512, pred_dim: int = 128):
        super().__init__()
        self.backbone = DenseNetBC(0, resolution)
        self.projector = simsiam_projector(self.backbone.feature_dim, dim, dim)
        self.predictor = simsiam_predictor(dim, pred_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projector output z, the embedding S³ compares (ACE §4.1)."""
        return self.projector(self.backbone(x))


class BinaryHead(nn.Module):
    """One attribute's logit from a multi-attribute network: the classifier to explain."""

    def __init__(self, model: nn.Module, index: int):
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.index]


def _tuples(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def GuidedUNet(**config) -> UNet:
    """The guided-diffusion UNet (`cfbench.diffusion.unet`) at a zoo configuration; unlike
    the networks above it works on [-1, 1] images at its own resolution."""
    return UNet(UNetConfig(**_tuples(config)))


def DiffAENet(**config) -> DiffAE:
    """The Diffusion Autoencoder (`cfbench.diffusion.diffae`) at a zoo configuration, on [-1, 1] images."""
    return DiffAE(DiffAEConfig(**_tuples(config)))


def LatentAutoencoder(**config) -> KLAutoencoder:
    """The latent model's first stage (`cfbench.diffusion.latent.KLAutoencoder`): diffusers'
    `AutoencoderKL` at a zoo configuration, on [-1, 1] images, down-sampling by 2 per block
    after the first."""
    config = _tuples(config)
    blocks = len(config["block_out_channels"])
    return KLAutoencoder({"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * blocks,
                          "up_block_types": ("UpDecoderBlock2D",) * blocks, **config})


def LatentUNet(**config) -> AttributeLatentUNet:
    """The latent model's attribute-conditional ε-network
    (`cfbench.diffusion.latent.AttributeLatentUNet`): diffusers' `UNet2DConditionModel`
    with cross-attention to one token per synthfaces attribute in every block but the first."""
    config = _tuples(config)
    attributes, context_dim = config.pop("attributes"), config.pop("context_dim")
    blocks = len(config["block_out_channels"])
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (blocks - 1)
    up = ("CrossAttnUpBlock2D",) * (blocks - 1) + ("UpBlock2D",)
    return AttributeLatentUNet(attributes, context_dim, {"down_block_types": down, "up_block_types": up, **config})
