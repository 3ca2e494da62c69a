"""The published classifiers that DiME, ACE (and LDCE, GCD) explain on CelebA and CelebA-HQ,
read from the files as published (``torch.load`` with ``weights_only``, strict keys) into
torchvision's ``densenet121``.

Facts (guillaumejs2403/DiME ``core/classifier/densenet.py``, ``main.py``,
``core/image_datasets.py``; guillaumejs2403/ACE ``models/__init__.py``,
``models/dive/densenet.py``, ``models/steex/DecisionDensenetModel.py``,
``models/normalizer.py``; valeoai/STEEX ``models/DecisionDensenetModel.py``,
``train_decision_model_celeba_or_celebamhq.py``, ``data/faceattribute_dataset.py``):

- **celeba-densenet121**, DiVE's CelebA DenseNet-121 shipped by DiME (``classifier.pth``,
  the one ACE also explains on CelebA): ``torch.save({'feat_extract': sd, 'classifier': sd})``
  where ``feat_extract`` is the state dict of a wrapper whose ``feat_extract`` attribute is
  ``torchvision.models.densenet121()`` with ``classifier = Identity`` (keys
  ``feat_extract.features.*``), and ``classifier`` is ``Linear(1024, 40)``: 40 logits in the
  column order of ``list_attr_celeba.txt`` (31 Smiling, 39 Young). No normalisation
  inside: DiME feeds ``Normalize(0.5, 0.5)`` images, ACE wraps it in ``Normalizer(0.5, 0.5)``
  on [0, 1]; both give it [-1, 1]. 128 px (Resize(128) + CenterCrop(128) of the aligned images).
- **celebahq-densenet**, STEEX's CelebAMask-HQ ``DecisionDensenetModel(num_classes=3)``
  (``checkpoints_decision_densenet.tar.gz`` → ``decision_densenet/celebamaskhq/checkpoint.tar``),
  explained by ACE, LDCE and GCD: a torch pickle ``{'epoch', 'optimizer_state_dict', 'loss',
  'model_state_dict'}``; keys ``feat_extract.feat_extract.features.*`` (the same wrapper one
  level down) and ``classifier.{weight (3, 1024), bias}``; outputs [Male, Smiling, Young]
  (ACE maps query 20 → 0, 31 → 1, 39 → 2), logits before STEEX's sigmoid; input [-1, 1]
  (STEEX trains on bicubic 256×256 images normalised with (0.5, 0.5); ACE wraps it in
  ``Normalizer(0.5, 0.5)`` on [0, 1] Resize(256) + CenterCrop(256) images).

Each factory ``f(attribute) -> nn.Module`` maps images in [0, 1] (N, 3, H, W) to the query's
logit (N,); an image of another size is resized (bilinear) to the size the network was
trained at. A file of another published network (an oracle, the other dataset's
classifier) is recognised and named in a one-line `CfbenchError`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cfbench.checkpoints import load_strict, read_torch
from cfbench.errors import CfbenchError
from cfbench.oracles.celeba_oracle import CELEBA_ATTRIBUTES
from cfbench.oracles.vggface2 import with_bn_counters
from cfbench.weights import WEIGHTS, locate

#: STEEX's DecisionDensenet outputs (``train_attributes_idx = [20, 31, 39]``).
STEEX_ATTRIBUTES = ("Male", "Smiling", "Young")
FEATURES = 1024  # DenseNet-121's pooled features

#: The published networks `describe_checkpoint` recognises, as messages name them.
KINDS = {
    "celeba-densenet121": "the DiVE/DiME CelebA DenseNet-121 classifier",
    "celebahq-densenet": "STEEX's CelebA-HQ DecisionDensenet classifier",
    "celeba-oracle": "the DiVE/DiME CelebA attribute oracle",
    "celebahq-oracle": "STEEX's CelebA-HQ attribute oracle",
}
#: torchvision renamed ``norm.1`` → ``norm1`` (and conv, relu) in its DenseNet layers; old files use the dots
_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DenseNet121Features(nn.Module):
    """DiVE's/STEEX's ``DenseNet121`` wrapper: torchvision's ``densenet121`` with its
    classifier replaced by the identity (1024-d pooled features), under ``feat_extract``."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import densenet121

        self.feat_extract = densenet121(weights=None)
        self.feat_extract.classifier = _Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat_extract(x)


class DenseNetAttributes(nn.Module):
    """DiVE's ``ClassificationModel`` / STEEX's ``DecisionDensenetModel`` without their
    checkpoint reading and query selection: [-1, 1] images -> ``outputs`` logits. Its state
    dict keys are the published ones (``feat_extract.feat_extract.features.*``, ``classifier.*``)."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.feat_extract = DenseNet121Features()
        self.classifier = nn.Linear(FEATURES, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feat_extract(x))


def dive_densenet121() -> DenseNetAttributes:
    """An untrained DiVE CelebA DenseNet-121 (40 attribute logits)."""
    return DenseNetAttributes(len(CELEBA_ATTRIBUTES))


def steex_decision_densenet() -> DenseNetAttributes:
    """An untrained STEEX DecisionDensenet (3 logits: Male, Smiling, Young)."""
    return DenseNetAttributes(len(STEEX_ATTRIBUTES))


class PublishedClassifier(nn.Module):
    """A published multi-attribute network behind the harness' contract: images in [0, 1]
    (N, 3, H, W) -> the logit of output ``index`` (N,). The images are resized to
    ``resolution`` when they have another size, then normalised with (0.5, 0.5) to [-1, 1]
    as ACE's ``Normalizer`` does."""

    def __init__(self, net: nn.Module, index: int, resolution: int, name: str, attribute: str):
        super().__init__()
        self.net, self.index, self.resolution = net, int(index), int(resolution)
        self.name, self.attribute = name, attribute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.resolution
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=min(x.shape[-2:]) > size)  # fmt: skip
        return self.net((x - 0.5) / 0.5)[:, self.index]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, attribute={self.attribute!r}, index={self.index}, resolution={self.resolution}"


# -- recognising the published containers ----------------------------------------------------------
def _keys(state: object) -> set[str]:
    return {k for k in state if isinstance(k, str)} if isinstance(state, Mapping) else set()


def describe_checkpoint(content: Any) -> str | None:
    """Which published network a loaded checkpoint holds: a name of `KINDS`
    (``celeba-densenet121``, ``celebahq-densenet``, ``celeba-oracle``, ``celebahq-oracle``),
    or None when it is none of them. Only the container's layout and key names are read."""
    if not isinstance(content, Mapping):
        return None
    if isinstance(content.get("feat_extract"), Mapping) and isinstance(content.get("classifier"), Mapping):
        trunk = _keys(content["feat_extract"])
        if any(k.startswith("feat_extract.features.") for k in trunk):
            return "celeba-densenet121"
        if "conv1_7x7_s2.weight" in trunk or "feat_extract.weight" in trunk:
            return "celeba-oracle"
        return None
    state = content.get("model_state_dict")
    if isinstance(state, Mapping):
        keys = _keys(state)
        if any(k.startswith("feat_extract.feat_extract.features.") for k in keys):
            return "celebahq-densenet"
        if "feat_extract.conv1_7x7_s2.weight" in keys:
            return "celebahq-oracle"
    return None


_LAYOUT = {
    "celeba-densenet121": "{'feat_extract': DenseNet-121 state dict (feat_extract.features.*), "
                          "'classifier': Linear(1024, 40) state dict}",
    "celebahq-densenet": "{'model_state_dict': DecisionDensenet state dict (feat_extract.feat_extract.features.*, "
                         "classifier.*), 'epoch', 'loss', 'optimizer_state_dict'}",
}


def _wrong_file(found: Path, kind: str | None, expected: str) -> CfbenchError:
    """The one line for a file that is not the ``expected`` network's."""
    entry = WEIGHTS[expected]
    want = f"{KINDS[expected]} ({entry.filename}, published at {entry.url})"
    if kind is not None and kind != expected:
        other = f", {WEIGHTS[kind].filename}" if kind in WEIGHTS else ""
        return CfbenchError(f"{found} holds {KINDS[kind]} ({kind}{other}), not {want}.")
    return CfbenchError(f"{found} is not {want}: expected {_LAYOUT[expected]}.")


def refuse_other_network(found: Path, content: Any, expected: str) -> None:
    """One `CfbenchError` line when ``content`` (a loaded checkpoint) holds another published
    network of `KINDS` than ``expected`` (say, the oracle where the classifier belongs); the
    oracle loaders can call it too (``expected="celeba-oracle"``)."""
    kind = describe_checkpoint(content)
    if kind is not None and kind != expected:
        raise _wrong_file(found, kind, expected)


def _dense_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with torchvision's legacy DenseNet names (``norm.1``) written as today's (``norm1``)."""
    return {_LEGACY_DENSENET.sub(r"\1\2", k): v for k, v in state.items()}


def _query_index(name: str, attributes: tuple[str, ...], attribute: str) -> int:
    if attribute not in attributes:
        raise CfbenchError(f"classifier {name!r} does not predict {attribute!r} (it predicts {', '.join(attributes)}).")
    return attributes.index(attribute)


def _load(model: DenseNetAttributes, state: Mapping[str, torch.Tensor], found: Path, what: str) -> DenseNetAttributes:
    load_strict(model, with_bn_counters(model, _dense_state(state)), found, what)
    return model.eval()


def _read_published(name: str, path: Path | str | None, what: str) -> tuple[Path, object]:
    """The file of published classifier ``name`` (or ``path``) and what it holds, refused in
    one line when it holds another network or something unrecognised."""
    found = locate(name, path)
    content = read_torch(found, what, WEIGHTS[name].url)
    refuse_other_network(found, content, name)
    if describe_checkpoint(content) != name:
        raise _wrong_file(found, None, name)
    return found, content


def celeba_densenet121(attribute: str, path: Path | str | None = None) -> PublishedClassifier:
    """DiME's CelebA DenseNet-121 (DiVE's) from ``classifier.pth`` (or ``path``): the logit
    of ``attribute``, any of the 40 CelebA attributes (DiME/ACE explain Smiling and Young)."""
    name = "celeba-densenet121"
    index = _query_index(name, CELEBA_ATTRIBUTES, attribute)
    found, content = _read_published(name, path, "DiME CelebA classifier checkpoint")
    state = {f"{part}.{key}": value for part in ("feat_extract", "classifier") for key, value in content[part].items()}
    model = _load(dive_densenet121(), state, found, "DiVE's DenseNet-121 + Linear(1024, 40)")
    return PublishedClassifier(model, index, 128, name, attribute)


def celebahq_densenet(attribute: str, path: Path | str | None = None) -> PublishedClassifier:
    """STEEX's CelebA-HQ DecisionDensenet from its ``checkpoint.tar`` (or ``path``): the
    logit of Male, Smiling or Young."""
    name = "celebahq-densenet"
    index = _query_index(name, STEEX_ATTRIBUTES, attribute)
    found, content = _read_published(name, path, "STEEX CelebA-HQ classifier checkpoint")
    model = _load(steex_decision_densenet(), content["model_state_dict"], found,
                  "STEEX's DecisionDensenet (DenseNet-121 + Linear(1024, 3))")  # fmt: skip
    return PublishedClassifier(model, index, 256, name, attribute)


celeba_densenet121.attributes = CELEBA_ATTRIBUTES  # type: ignore[attr-defined]
celebahq_densenet.attributes = STEEX_ATTRIBUTES  # type: ignore[attr-defined]

__all__ = [
    "KINDS", "STEEX_ATTRIBUTES", "DenseNet121Features", "DenseNetAttributes", "PublishedClassifier",
    "celeba_densenet121", "celebahq_densenet", "describe_checkpoint", "dive_densenet121", "refuse_other_network",
    "steex_decision_densenet",
]  # fmt: skip
