"""The VGGFace2 identity networks of FVA and FS, and the Caffe-style ResNet-50 that the
VGGFace2-based attribute oracles (`cfbench.oracles.celeba_oracle`) share.

Facts (guillaumejs2403/DiME ``eval_utils/resnet50_facevgg2_FVA.py``, ``compute_FVA.py``;
ACE ``compute_FVA.py``; cydonia999/VGGFace2-pytorch ``models/resnet.py``, ``utils.py``,
``datasets/vgg_face2.py``; valeoai/STEEX and DiME ``eval_utils/oracle_metrics.py`` for the
DAG names):

- ``resnet50_ft`` (pretrained on MS1M, fine-tuned on VGGFace2, converted from the
  authors' Caffe model) is a ResNet-50 with torchvision's module names but Caffe's
  layout: a block downsamples in its first 1×1 convolution (not the 3×3 one), the stem
  max-pool is 3×3/2 without padding and with ``ceil_mode=True``, the head is
  ``AvgPool2d(7, stride=1)``; no convolution has a bias, BatchNorm eps is 1e-5;
- ``resnet50_ft_weight.pkl`` is a pickle (read with ``encoding='latin1'``) of a dict
  name → numpy array with the torchvision names, ``fc`` (2048 → 8631) included; FVA
  builds the net with ``include_top=False`` and compares the 2048-d avgpool outputs;
- FVA's preprocessing: PIL ``Resize(224)`` (bilinear), RGB → BGR, float on the 0–255
  scale, minus the VGGFace2 mean (B, G, R) = (91.4953, 103.8827, 131.0912); no crop,
  no division;
- the MatConvNet "DAG" ports (``Resnet50_128``, ``Resnet50_ft_dag``) are the same
  network under Caffe layer names (`dag_key`).

The pickle is read without running code: `read_numpy_pickle` allows only the globals
that rebuild numpy arrays and refuses any other with one `CfbenchError` line.
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfbench.checkpoints import load_strict
from cfbench.errors import CfbenchError
from cfbench.oracles import EvalNetwork
from cfbench.oracles.published import published_state
from cfbench.weights import locate

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric  # type: ignore[no-redef]

#: The VGGFace2 training mean, channels in (B, G, R) order, on the 0–255 scale.
VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)
FVA_SIZE = 224
FACENET_SIZE = 160


# -- the network -------------------------------------------------------------------------
class CaffeBottleneck(nn.Module):
    """A ResNet-50 bottleneck as Caffe lays it out: the stride is in ``conv1`` (1×1)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        width = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or inplanes != width:
            projection = nn.Conv2d(inplanes, width, 1, stride=stride, bias=False)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CaffeResNet50(nn.Module):
    """The VGGFace2 ResNet-50 trunk with torchvision's key names (``fc`` left out):
    a (B, 3, 224, 224) input, already normalised, gives the (B, 2048) pool5 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            rest = [CaffeBottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            layer = [CaffeBottleneck(inplanes, planes, stride), *rest]
            self.add_module(f"layer{index}", nn.Sequential(*layer))
            inplanes = planes * 4
        self.avgpool = nn.AvgPool2d(7, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


_DAG_BLOCK = {
    "conv1": "1x1_reduce", "bn1": "1x1_reduce_bn", "conv2": "3x3", "bn2": "3x3_bn",
    "conv3": "1x1_increase", "bn3": "1x1_increase_bn", "downsample.0": "1x1_proj", "downsample.1": "1x1_proj_bn",
}  # fmt: skip


def dag_key(key: str) -> str:
    """The MatConvNet/Caffe "DAG" name of a `CaffeResNet50` state-dict key:
    ``conv1.weight`` → ``conv1_7x7_s2.weight``, ``layer1.0.bn2.running_mean`` →
    ``conv2_1_3x3_bn.running_mean``, ``layer4.0.downsample.0.weight`` → ``conv5_1_1x1_proj.weight``."""
    module, _, param = key.rpartition(".")
    if module in ("conv1", "bn1"):
        return f"conv1_7x7_s2{'_bn' if module == 'bn1' else ''}.{param}"
    layer, block, rest = module.split(".", 2)
    return f"conv{int(layer.removeprefix('layer')) + 1}_{int(block) + 1}_{_DAG_BLOCK[rest]}.{param}"


def with_bn_counters(
    model: nn.Module, state: Mapping[str, torch.Tensor], names: Mapping[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """``state`` plus the BatchNorm ``num_batches_tracked`` counters it lacks (files converted
    from Caffe or saved by old PyTorch have none; evaluation does not use them)."""
    names = names or {}
    filled = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked"):
            filled.setdefault(names.get(key, key), torch.zeros_like(value))
    return filled


# -- reading the published pickle without running code ----------------------------------
def _encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to text: Python 3 writes bytes into protocol-2
    pickles as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode of a non-string")
    return text.encode(encoding, errors)


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _encode,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _numeric._frombuffer for core in ("core", "_core")},
}


class _Refused(Exception):
    pass


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves only the globals that rebuild numpy arrays; any other is refused before
    anything is called."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _NUMPY_GLOBALS.get((module, name))
        if allowed is None:
            raise _Refused(f"{module}.{name}")
        return allowed


def read_numpy_pickle(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A pickled dict of name → numpy array (the ``resnet50_ft_weight.pkl`` container) as
    tensors, read with ``encoding='latin1'`` and without executing code."""
    try:
        with open(path, "rb") as f:
            data = _NumpyUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise CfbenchError(
            f"{path} is not a plain pickle of numpy arrays: it references {e}, which cfbench refuses to load "
            f"(unpickling it could run code)."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError, MemoryError) as e:
        raise CfbenchError(f"{path} is not a readable {what} ({type(e).__name__}: {str(e).strip()[:120]}).") from None
    if not isinstance(data, dict):
        raise CfbenchError(f"{path} is not a {what}: it holds a {type(data).__name__}, not a dict of numpy arrays.")
    state = {}
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            raise CfbenchError(f"{path} is not a {what}: entry {key!r} is not a numeric numpy array.")
        state[key] = torch.from_numpy(np.array(value))
    return state


# -- the identity networks ---------------------------------------------------------------
def resize_like_pil(x: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize as torchvision's PIL ``Resize(size)``: an int scales the shorter side to
    ``size`` (the longer one truncated to an int, as torchvision does). Torch's
    antialiased interpolation uses PIL's filters (bicubic a = -0.5): it matches PIL's
    float-mode resize to 1e-3 of a grey level; on uint8 images PIL also rounds (and
    clamps) between its horizontal and vertical passes, ≈0.3 grey levels on average."""
    height, width = x.shape[-2:]
    if isinstance(size, int):
        short, long = sorted((height, width))
        longer = int(size * long / short)
        size = (size, longer) if height <= width else (longer, size)
    if tuple(size) == (height, width):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def vggface2_input(x: torch.Tensor) -> torch.Tensor:
    """FVA's input from images in [0, 1]: Resize(224) bilinear, RGB → BGR, 0–255 scale,
    minus the VGGFace2 BGR mean."""
    mean = torch.tensor(VGGFACE2_MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return resize_like_pil(x, FVA_SIZE).flip(1) * 255.0 - mean


class VGGFace2ResNet50(CaffeResNet50):
    """FVA/FS identity network: images in [0, 1] → the 2048-d ``resnet50_ft`` avgpool embedding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(vggface2_input(x))


def vggface2_resnet50(path: Path | None = None) -> EvalNetwork:
    """DiME's and ACE's FVA/FS network from ``resnet50_ft_weight.pkl`` (or ``path``)."""
    found = locate("vggface2-resnet50", path)
    state = read_numpy_pickle(found, "VGGFace2 resnet50_ft weight pickle")
    state = {k: v for k, v in state.items() if k not in ("fc.weight", "fc.bias")}  # the 8631-identity classifier
    model = VGGFace2ResNet50()
    load_strict(model, with_bn_counters(model, state), found, "the VGGFace2 resnet50_ft ResNet-50")
    return EvalNetwork(
        "vggface2-resnet50", "identity", model.eval(),
        note="VGGFace2 resnet50_ft (cydonia999 pickle), 2048-d avgpool; input Resize(224) bilinear antialiased, "
        "BGR minus the VGGFace2 mean on 0-255, as DiME/ACE compute_FVA.py (no uint8 rounding after the resize)",
    )  # fmt: skip


def facenet_input(x: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's input from images in [0, 1]: the whole image resized to 160×160
    (bilinear, antialiased; our images are aligned face crops, so no MTCNN detection)
    and ``fixed_image_standardization`` (x·255 − 127.5) / 128."""
    return (resize_like_pil(x, (FACENET_SIZE, FACENET_SIZE)) * 255.0 - 127.5) / 128.0


def _facenet_class() -> type[nn.Module]:
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    class FacenetVGGFace2(InceptionResnetV1):
        """facenet-pytorch's InceptionResnetV1 (built with ``pretrained=None``, so it never
        downloads): images in [0, 1] → its L2-normalised 512-d embedding."""

        def __init__(self) -> None:
            super().__init__(pretrained=None, classify=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(facenet_input(x))

    return FacenetVGGFace2


def build_facenet() -> nn.Module:
    """An untrained `facenet-vggface2` module (facenet-pytorch is imported only here)."""
    return _facenet_class()()


def facenet_vggface2(path: Path | None = None) -> EvalNetwork:
    """facenet-pytorch's VGGFace2 InceptionResnetV1 from ``20180402-114759-vggface2.pt`` (or ``path``)."""
    found, state = published_state("facenet-vggface2", path, "facenet-pytorch state dict")
    # logits.* is the 8631-identity classifier, which the embedding does not use
    state = {k: v for k, v in state.items() if k not in ("logits.weight", "logits.bias")}
    model = load_strict(build_facenet(), state, found, "facenet-pytorch's InceptionResnetV1")
    return EvalNetwork(
        "facenet-vggface2", "identity", model.eval(),
        note="facenet-pytorch InceptionResnetV1 (VGGFace2), L2-normalised 512-d; whole image resized to 160 "
        "(bilinear, antialiased), fixed standardisation (x*255-127.5)/128; not the network DiME/ACE report FVA with",
    )  # fmt: skip
