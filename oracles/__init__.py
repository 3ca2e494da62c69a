"""Networks the metrics need, imported as ``cfbench.oracles``: attribute oracles
(MNAC, CD), face-identity encoders (FVA, FS), self-supervised encoders (S³), FID
feature extractors (FID, sFID, precision/recall) and perceptual distances (σL).

Every network is an `EvalNetwork` with a *role*; each dataset names the network it
uses for each role (`DEFAULTS`), and ``--network ROLE=NAME`` picks another. Stand-ins
trained on `synthfaces` say so (``stand_in``), and every metric result records the
network that computed it, so stand-in numbers never mix with paper-comparable ones.
Third parties register networks in the entry-point group ``cfbench.oracles``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cfbench.errors import CfbenchError
from cfbench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

#: What a network of each role returns for images in [0, 1], (B, 3, H, W).
ROLES = {
    "oracle": "attribute logits (B, A), columns named by `attributes`",
    "identity": "face embedding (B, D); FVA/FS compare cosine similarities",
    "simsiam": "SimSiam projector output z (B, D)",
    "features": "pooled features (B, D) for Fréchet distances and k-NN precision/recall",
    "perceptual": "perceptual distance d(x, y) -> (B,) (LPIPS)",
}


@dataclass
class EvalNetwork:
    """A loaded evaluation network: ``module`` maps images in [0, 1] to the role's output
    (``perceptual`` modules take two image batches)."""

    name: str
    role: str
    module: nn.Module
    stand_in: bool = False
    attributes: tuple[str, ...] = ()
    note: str = ""
    device: torch.device | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How metric tables name it: ``synthfaces-oracle (stand-in)``."""
        return f"{self.name} (stand-in)" if self.stand_in else self.name

    def to(self, device: torch.device) -> EvalNetwork:
        self.module = self.module.to(device).eval()
        self.device = device
        return self


#: Factories ``(path: Path | None) -> EvalNetwork``; ``path`` overrides where a
#: published file is read from (default: the weights cache, see `cfbench.weights`).
NETWORKS = Registry("evaluation network", "cfbench.oracles")

#: The network each dataset uses for each role.
DEFAULTS: dict[str, dict[str, str]] = {}

# -- synthfaces stand-ins, trained by `cfbench zoo` (oracles/synthfaces.py)
NETWORKS.lazy(
    "synthfaces-oracle", "cfbench.oracles.synthfaces:oracle",
    description="synthfaces ResNet-10 attribute oracle, one logit per attribute (stand-in)",
    paper="cfbench zoo (stands in for the VGGFace2-based CelebA attribute oracle)",
)  # fmt: skip
NETWORKS.lazy(
    "synthfaces-identity", "cfbench.oracles.synthfaces:identity",
    description="synthfaces DenseNet-BC face-identity encoder, 128-d (stand-in)",
    paper="cfbench zoo (stands in for VGGFace2 ResNet-50)",
)  # fmt: skip
NETWORKS.lazy(
    "synthfaces-simsiam", "cfbench.oracles.synthfaces:simsiam",
    description="synthfaces SimSiam (DenseNet-BC backbone), projector output z (stand-in)",
    paper="cfbench zoo (stands in for SimSiam ResNet-50)",
)  # fmt: skip
NETWORKS.lazy(
    "synthfaces-features", "cfbench.oracles.synthfaces:features",
    description="512-d pooled features of the synthfaces oracle, for FID/sFID (stand-in)",
    paper="cfbench zoo (stands in for the FID Inception-v3)",
)  # fmt: skip
NETWORKS.lazy(
    "synthfaces-lpips", "cfbench.oracles.synthfaces:lpips",
    description="unit-weight LPIPS on the synthfaces oracle's ResNet stages (stand-in)",
    paper="Zhang et al., CVPR 2018, eq. 1 with w=1 (stands in for LPIPS-VGG)",
)  # fmt: skip
DEFAULTS["synthfaces"] = {
    "oracle": "synthfaces-oracle", "identity": "synthfaces-identity", "simsiam": "synthfaces-simsiam",
    "features": "synthfaces-features", "perceptual": "synthfaces-lpips",
}  # fmt: skip

# -- published networks, read from files in the weights cache (`cfbench.weights`)
NETWORKS.lazy(
    "simsiam-resnet50", "cfbench.oracles.simsiam:simsiam_resnet50",
    description="SimSiam ResNet-50 (ImageNet, 100 epochs, batch 256), projector output z, for S3",
    paper="Chen & He, CVPR 2021 (facebookresearch/simsiam); used by ACE, CVPR 2023",
)  # fmt: skip
NETWORKS.lazy(
    "inception-v3-fid", "cfbench.oracles.inception:inception_v3_fid",
    description="FID Inception-v3 (TF 2015-12-05 weights), 2048-d pool features, via torch-fidelity",
    paper="Heusel et al., NeurIPS 2017; torch-fidelity",
)  # fmt: skip
NETWORKS.lazy(
    "lpips-vgg", "cfbench.oracles.lpips_vgg:lpips_vgg",
    description="LPIPS v0.1 with the ImageNet VGG16 trunk, on [-1, 1] inputs, for sigma_L",
    paper="Zhang et al., CVPR 2018 (lpips package); used by DiME, ACCV 2022 and ACE, CVPR 2023",
)  # fmt: skip


# -- the VGGFace2 family: FVA/FS identity networks and the CelebA(-HQ) attribute oracles
NETWORKS.lazy(
    "vggface2-resnet50", "cfbench.oracles.vggface2:vggface2_resnet50",
    description="VGGFace2 resnet50_ft, 2048-d avgpool face embedding, for FVA and FS",
    paper="Cao et al., FG 2018 (cydonia999/VGGFace2-pytorch); used by DiME, ACCV 2022 and ACE, CVPR 2023",
)  # fmt: skip
NETWORKS.lazy(
    "facenet-vggface2", "cfbench.oracles.vggface2:facenet_vggface2",
    description="facenet-pytorch InceptionResnetV1 (VGGFace2), L2-normalised 512-d face embedding",
    paper="Schroff et al., CVPR 2015 (facenet-pytorch); an alternative identity network",
)  # fmt: skip
NETWORKS.lazy(
    "celeba-oracle", "cfbench.oracles.celeba_oracle:celeba_oracle",
    description="CelebA attribute oracle (VGGFace2 Resnet50_128 + Linear(128, 40)), 40 logits, for MNAC and CD",
    paper="Rodriguez et al., ICCV 2021 (DiVE); shipped by DiME, ACCV 2022, used by ACE, CVPR 2023",
)  # fmt: skip
NETWORKS.lazy(
    "celebahq-oracle", "cfbench.oracles.celeba_oracle:celebahq_oracle",
    description="CelebAMask-HQ attribute oracle (VGGFace2 Resnet50_ft_dag + Linear(2048, 40)), 40 logits",
    paper="Jacob et al., ECCV 2022 (STEEX); used by ACE, CVPR 2023",
)  # fmt: skip
for _dataset in ("celeba", "celebahq"):
    DEFAULTS[_dataset] = {
        "oracle": f"{_dataset}-oracle", "identity": "vggface2-resnet50", "simsiam": "simsiam-resnet50",
        "features": "inception-v3-fid", "perceptual": "lpips-vgg",
    }  # fmt: skip


def load_network(role: str, dataset: str, choice: str | None = None, path: Path | None = None) -> EvalNetwork:
    """The network for ``role`` on ``dataset`` (``choice`` overrides the dataset's default)."""
    if role not in ROLES:
        raise CfbenchError(f"Unknown network role {role!r}. Known: {', '.join(ROLES)}.")
    name = choice or DEFAULTS.get(dataset, {}).get(role)
    if name is None:
        raise CfbenchError(
            f"Dataset {dataset!r} has no default {role} network; choose one with --network {role}=NAME "
            f"(known: {', '.join(NETWORKS.names())})."
        )
    network = NETWORKS.get(name)(path)
    if network.role != role:
        raise CfbenchError(f"Network {name!r} is a {network.role} network, not a {role} network.")
    return network
