"""The registry of published weight files that cfbench reads but does not ship: where
each is published, the file name it is expected under, which architecture reads it
and its license. Users download them once into ``$CFBENCH_HOME/weights/`` (default
``~/.cache/cfbench/weights``) or pass a path; a missing file is one line that says
which file, where it was looked for and where it is published.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cfbench.errors import CfbenchError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PublishedWeights:
    name: str
    filename: str
    url: str
    architecture: str
    license: str
    note: str = ""


def home() -> Path:
    return Path(os.environ.get("CFBENCH_HOME", "~/.cache/cfbench")).expanduser()


WEIGHTS: dict[str, PublishedWeights] = {
    w.name: w
    for w in (
        PublishedWeights(
            "ddpm-celeba128", "ddpm-celeba.pt", "https://huggingface.co/guillaumejs2403/DiME",
            "cfbench.diffusion.unet:CELEBA_128", "see the DiME repository",
            "guided-diffusion state dict of the DiME/ACE CelebA 128 DDPM (500 linear steps, learned sigma)",
        ),
        PublishedWeights(
            "ddpm-celebahq256", "ddpm-celebahq.pt", "https://huggingface.co/guillaumejs2403/ACE",
            "cfbench.diffusion.unet:CELEBAHQ_256", "see the ACE repository",
            "guided-diffusion state dict of ACE's CelebA-HQ 256 DDPM (num_head_channels=64)",
        ),
        PublishedWeights(
            "diffae-ffhq256", "diffae-ffhq256-last.ckpt", "https://github.com/phizaz/diffae (ffhq256_autoenc/last.ckpt)",
            "cfbench.diffusion.diffae:FFHQ_256", "MIT",
            "Lightning checkpoint; only the ema_model.* keys are read",
        ),
        PublishedWeights(
            "diffae-celeba128", "diffae-celeba128-last.ckpt",
            "https://drive.google.com/drive/folders/1-HraJKbEI8wNIKWh5YS3RzVyAYmP9-Yd (GCD)",
            "cfbench.diffusion.diffae:CELEBA_128", "see the GCD repository",
            "GCD's celeba128_autoenc Lightning checkpoint; only the ema_model.* keys are read",
        ),
        PublishedWeights(
            "simsiam-resnet50", "checkpoint_0099.pth.tar",
            "https://dl.fbaipublicfiles.com/simsiam/models/100ep-256bs/pretrain/checkpoint_0099.pth.tar",
            "cfbench.oracles.simsiam:SimSiamResNet50", "CC-BY-NC 4.0",
            "facebookresearch/simsiam ResNet-50, 100 epochs, batch 256 (the model ACE's S³ uses); "
            "{'state_dict': {'module.encoder.*', 'module.predictor.*'}, ...}",
        ),
        PublishedWeights(
            "inception-v3-fid", "weights-inception-2015-12-05-6726825d.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            "torch_fidelity.feature_extractor_inceptionv3:FeatureExtractorInceptionV3",
            "Apache-2.0 (TensorFlow Inception 2015-12-05 weights, converted by torch-fidelity)",
            "state dict of torch-fidelity's FID Inception-v3",
        ),
        PublishedWeights(
            "vgg16-imagenet", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision.models:vgg16 (features only, as the LPIPS trunk)", "BSD-3-Clause (torchvision)",
            "torchvision ImageNet VGG16 state dict; LPIPS-VGG reads its features.* into the lpips trunk",
        ),
        PublishedWeights(
            "vgg19-imagenet", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "torchvision.models:vgg19 (features only, DiME's L_perc)", "BSD-3-Clause (torchvision)",
            "torchvision ImageNet VGG19 state dict; DiME reads its features.* (strictly) and uses features[:18]",
        ),
        PublishedWeights(
            "vggface2-resnet50", "resnet50_ft_weight.pkl",
            "https://github.com/cydonia999/VGGFace2-pytorch (resnet50_ft, Google Drive link in its README)",
            "cfbench.oracles.vggface2:VGGFace2ResNet50",
            "MIT (cydonia999 converter); weights converted from the VGGFace2 authors' Caffe resnet50_ft",
            "latin1 pickle of numpy arrays with torchvision names (fc = 8631 identities, unused); read without "
            "executing code; the FVA/FS network of DiME and ACE",
        ),
        PublishedWeights(
            "facenet-vggface2", "20180402-114759-vggface2.pt",
            "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            "facenet_pytorch:InceptionResnetV1", "MIT (facenet-pytorch; weights from davidsandberg/facenet, MIT)",
            "state dict of InceptionResnetV1(pretrained='vggface2'); logits.* (8631 identities) unused",
        ),
        PublishedWeights(
            "celeba-oracle", "oracle.pth", "https://huggingface.co/guillaumejs2403/DiME (CelebA Oracle)",
            "cfbench.oracles.celeba_oracle:dive_oracle", "MIT (DiME repository); trained by DiVE (ServiceNow)",
            "{'feat_extract': Resnet50_128 DAG state dict, 'classifier': Linear(128, 40)}; DiME's code calls it "
            "models/oracle.pth, the file name on the HF page is unverified",
        ),
        PublishedWeights(
            "celebahq-oracle", "steex-oracle-celebamaskhq.tar",
            "https://github.com/valeoai/STEEX/releases (checkpoints_oracle_attribute.tar.gz: "
            "oracle_attribute/celebamaskhq/checkpoint.tar, saved under this name)",
            "cfbench.oracles.celeba_oracle:steex_oracle", "Apache-2.0 (STEEX)",
            "torch pickle {'model_state_dict', 'epoch', 'loss', 'optimizer_state_dict'} of STEEX's OracleResnet "
            "(Resnet50_ft_dag + Linear(2048, 40)); the CelebA-HQ oracle ACE uses",
        ),
    )  # fmt: skip
}


def locate(name: str, path: Path | str | None = None) -> Path:
    """The file of published weights ``name``: ``path`` if given, else the cache."""
    if name not in WEIGHTS:
        raise CfbenchError(f"Unknown published weights {name!r}. Known: {', '.join(sorted(WEIGHTS))}.")
    entry = WEIGHTS[name]
    found = Path(path).expanduser() if path else home() / "weights" / entry.filename
    if not found.is_file():
        raise CfbenchError(
            f"{name}: {entry.filename} not found at {found}; it is published at {entry.url} "
            f"(put it there or set CFBENCH_HOME)."
        )
    return found


def state_digest(module: nn.Module) -> str:
    """sha256 of a network's state dict (names, dtypes, shapes and values, in key order):
    the identity of the weights a run used, however they were stored."""
    import torch

    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
