"""The published CelebA and CelebA-HQ attribute oracles of MNAC and CD: VGGFace2
ResNet-50s (`cfbench.oracles.vggface2.CaffeResNet50` under the MatConvNet "DAG" names)
fine-tuned to predict the 40 CelebA attributes.

Facts (guillaumejs2403/DiME ``eval_utils/oracle_metrics.py``, ``compute_MNAC.py``;
valeoai/STEEX ``models/OracleResnetModel.py``, ``compute_mnac.py``,
``train_vggface2_oracle.py``, ``data/faceattribute_dataset.py``; ACE
``eval_utils/oracle_celebahq_metrics.py``, ``compute_MNAC.py``):

- **celeba-oracle** (DiVE/BTE's oracle, shipped by DiME): ``torch.save({'feat_extract':
  sd, 'classifier': sd})``; ``feat_extract`` is ``Resnet50_128`` (DAG keys
  ``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``conv2_1_1x1_reduce(_bn)``, ``conv2_1_3x3(_bn)``,
  ``conv2_1_1x1_increase(_bn)``, ``conv2_1_1x1_proj(_bn)``, … ``conv5_3_*``, no conv
  bias, BN eps 1e-5, ``pool1_3x3_s2`` 3×3/2 unpadded with ``ceil_mode=True``,
  ``pool5_7x7_s1`` AvgPool 7/1, then ``feat_extract`` = Conv2d(2048, 128, 1, bias=False));
  ``classifier`` is Linear(128, 40). Its forward takes [-1, 1], maps it to [0, 1],
  swaps RGB → BGR, subtracts ``[131.0912, 103.8827, 91.4953] / 255`` from the channels
  *in that (B, G, R) order* (the VGGFace2 R mean lands on B: that is how it was trained,
  and it is kept) on the [0, 1] scale, then ``F.interpolate(…, 224, 'bicubic',
  align_corners=False)``. DiME's MNAC thresholds ``sigmoid(logit) > 0.5``.
- **celebahq-oracle** (STEEX, used by ACE): ``checkpoint.tar`` is a torch pickle
  ``{'epoch', 'optimizer_state_dict', 'loss', 'model_state_dict'}``; the model is
  ``OracleResnet``: ``feat_extract`` = ``Resnet50_ft_dag`` (the same DAG trunk, its
  ``classifier`` replaced by Identity, so no head keys) giving the 2048-d pool5, then
  ``classifier`` = Linear(2048, 40) and a sigmoid in ``forward``. It has no
  normalisation inside: STEEX trains and evaluates it on PIL-bicubic 224×224 images
  normalised to [-1, 1], RGB. Columns follow the CelebAMask-HQ annotation file, whose
  40 attributes are CelebA's in CelebA's order (ACE indexes both oracles alike: 20
  Male, 31 Smiling, 39 Young).

The ``oracle`` role returns logits: for celebahq-oracle that is the Linear output
before STEEX's sigmoid, so ``logit > 0`` ⇔ STEEX's ``p > 0.5``.
ACE's own CelebA-HQ MNAC wraps this oracle in a second (0.5, 0.5) normalisation of
[-1, 1] inputs and resizes with torch bicubic; we follow STEEX's protocol instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cfbench.checkpoints import load_strict, read_torch
from cfbench.errors import CfbenchError
from cfbench.oracles import EvalNetwork
from cfbench.oracles.published import published_state
from cfbench.oracles.vggface2 import CaffeResNet50, dag_key, resize_like_pil, with_bn_counters
from cfbench.weights import WEIGHTS, locate

#: The 40 CelebA attributes, in the column order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

#: What DiVE's ``Resnet50_128`` subtracts from its (B, G, R) channels, ×255.
DIVE_MEAN = (131.0912, 103.8827, 91.4953)
ORACLE_SIZE = 224


def dive_input(x: torch.Tensor) -> torch.Tensor:
    """DiVE's oracle input from images in [0, 1] (its ``(x + 1) / 2`` undone the other way):
    RGB → BGR, minus `DIVE_MEAN` / 255 channel by channel, bicubic to 224 (align_corners=False)."""
    mean = torch.tensor(DIVE_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
    x = x.flip(1) - mean
    return F.interpolate(x, size=(ORACLE_SIZE, ORACLE_SIZE), mode="bicubic", align_corners=False)


def steex_input(x: torch.Tensor) -> torch.Tensor:
    """STEEX's oracle input from images in [0, 1]: PIL-style bicubic resize to 224×224
    (torch's antialiased bicubic, PIL's kernel; clamped to [0, 1] as PIL's uint8 result
    is), then normalised to [-1, 1]."""
    return resize_like_pil(x, (ORACLE_SIZE, ORACLE_SIZE), mode="bicubic").clamp(0, 1) * 2 - 1


class DagAttributeOracle(nn.Module):
    """A VGGFace2 ResNet-50 attribute oracle: ``prepare`` (the oracle's own input
    preprocessing), the trunk, an optional bias-free 1×1 embedding (DiVE's 128-d
    ``feat_extract``), and a Linear to 40 attribute logits. Images in [0, 1]."""

    def __init__(self, prepare: Callable[[torch.Tensor], torch.Tensor], embed_dim: int | None = None):
        super().__init__()
        self.prepare = prepare
        self.backbone = CaffeResNet50()
        self.embed = nn.Conv2d(2048, embed_dim, 1, bias=False) if embed_dim else None
        self.classifier = nn.Linear(embed_dim or 2048, len(CELEBA_ATTRIBUTES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier reads: 128-d (DiVE) or the 2048-d pool5 (STEEX)."""
        features = self.backbone(self.prepare(x))
        return features if self.embed is None else self.embed(features[:, :, None, None]).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def file_names(self) -> dict[str, str]:
        """The published files' name of every state-dict key that has another one."""
        trunk = (k.removeprefix("backbone.") for k in self.state_dict() if k.startswith("backbone."))
        names = {f"backbone.{k}": f"feat_extract.{dag_key(k)}" for k in trunk}
        if self.embed is not None:
            names["embed.weight"] = "feat_extract.feat_extract.weight"
        return names


def dive_oracle() -> DagAttributeOracle:
    """An untrained DiVE ``Resnet50_128`` + Linear(128, 40) oracle."""
    return DagAttributeOracle(dive_input, embed_dim=128)


def steex_oracle() -> DagAttributeOracle:
    """An untrained STEEX ``OracleResnet`` (``Resnet50_ft_dag`` + Linear(2048, 40))."""
    return DagAttributeOracle(steex_input)


def _oracle_network(
    name: str, model: DagAttributeOracle, state: dict[str, torch.Tensor], found: Path, what: str, note: str
) -> EvalNetwork:
    """``model`` loaded strictly from ``state`` (the file's keys), as the `EvalNetwork` ``name``."""
    names = model.file_names()
    load_strict(model, with_bn_counters(model, state, names), found, what, names)
    return EvalNetwork(name, "oracle", model.eval(), attributes=CELEBA_ATTRIBUTES, note=note)


def celeba_oracle(path: Path | None = None) -> EvalNetwork:
    """DiME's CelebA oracle (DiVE's) from ``oracle.pth`` (or ``path``)."""
    found = locate("celeba-oracle", path)
    checkpoint = read_torch(found, "DiVE CelebA oracle checkpoint", WEIGHTS["celeba-oracle"].url)
    from cfbench.published_classifiers import refuse_other_network  # it reads this module's attribute names

    refuse_other_network(found, checkpoint, "celeba-oracle")
    parts = ("feat_extract", "classifier")
    if not isinstance(checkpoint, dict) or not all(isinstance(checkpoint.get(p), dict) for p in parts):
        raise CfbenchError(
            f"{found} is not the DiVE CelebA oracle: expected {{'feat_extract': state dict, 'classifier': state dict}}."
        )
    state = {f"{part}.{key}": value for part in parts for key, value in checkpoint[part].items()}
    return _oracle_network(
        "celeba-oracle", dive_oracle(), state, found, "DiVE's Resnet50_128 oracle",
        "DiVE/DiME CelebA oracle (VGGFace2 Resnet50_128 + Linear(128, 40)); its own BGR mean subtraction "
        "and bicubic resize to 224, as eval_utils/oracle_metrics.py",
    )  # fmt: skip


def celebahq_oracle(path: Path | None = None) -> EvalNetwork:
    """STEEX's CelebAMask-HQ oracle (used by ACE) from its ``checkpoint.tar`` (or ``path``)."""
    found, state = published_state("celebahq-oracle", path, "STEEX oracle checkpoint", "model_state_dict")
    from cfbench.published_classifiers import refuse_other_network

    refuse_other_network(found, {"model_state_dict": state}, "celebahq-oracle")
    return _oracle_network(
        "celebahq-oracle", steex_oracle(), state, found, "STEEX's OracleResnet (Resnet50_ft_dag + Linear(2048, 40))",
        "STEEX CelebAMask-HQ oracle (VGGFace2 Resnet50_ft_dag + Linear(2048, 40)); logits before STEEX's "
        "sigmoid; input PIL-style bicubic 224 then [-1, 1] as STEEX compute_mnac.py (not ACE's double normalisation)",
    )  # fmt: skip
