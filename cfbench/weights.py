"""The registry of published weight files that cfbench reads but does not ship: where
each is published, the file name it is expected under, which architecture and loader
read it, its license, and its size and sha256 where known. Users download them once
into ``$CFBENCH_HOME/weights/`` (default ``~/.cache/cfbench/weights``; ``cfbench
weights fetch NAME`` where a direct link is known) or pass a path; a missing file is
one line that says which file, where it was looked for and where it is published.

File names: an entry's ``filename`` is its name in the cache. It is the name the file
is published under (for the files of the DiME/ACE Hugging Face pages, the name DiME's
code reads them under) unless two published files share a name (STEEX's
``checkpoint.tar`` files, the latent-diffusion ``model.ckpt``): those are cached
under a name of their own and ``published`` says the published one; ``cfbench
weights list`` and ``cfbench weights path`` show both.

Pins: ``sha256`` is the file's full digest, or a prefix of it where only that is
published (torch hub file names such as ``vgg16-397923af.pth`` carry the first 8 hex
digits); ``None`` where nothing is known: such a file is *unpinned*, and ``cfbench
weights verify`` / ``fetch`` print its digest as "unpinned: sha256 …" instead of
claiming it checked anything.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cfbench.errors import CfbenchError, MissingWeights

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PublishedFile:
    """One file of a multi-file entry (a folder in the cache)."""

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class PublishedWeights:
    name: str
    #: the name in the cache ``$CFBENCH_HOME/weights/`` (a folder for a multi-file entry)
    filename: str
    #: the file itself where ``direct``, else the page it is published on
    url: str
    architecture: str
    license: str
    note: str = ""
    #: the name as published, where the cache name differs (another name, a member of an archive)
    published: str = ""
    #: bytes of the published file; None where not known
    size: int | None = None
    #: sha256 of the published file (64 hex digits, or a published prefix of them); None: unpinned
    sha256: str | None = None
    #: whether ``url`` is a direct file link that ``cfbench weights fetch`` downloads
    direct: bool = False
    #: the function that reads the file (``module:attr``); empty where no cfbench loader reads it yet
    loader: str = ""
    #: a multi-file entry: the files of the folder ``filename``
    files: tuple[PublishedFile, ...] = ()
    #: shipped inside this installed Python package (``filename`` relative to it): nothing to download
    package: str = ""

    def parts(self) -> list[PublishedFile]:
        """The files of the entry: one for a single-file entry."""
        return list(self.files) or [PublishedFile(self.filename, self.url, self.size, self.sha256)]

    def path(self) -> Path:
        """Where the entry lives here: in the weights cache, or inside its package."""
        if self.package:
            return package_root(self.package) / self.filename
        return home() / "weights" / self.filename

    def file_paths(self) -> list[tuple[PublishedFile, Path]]:
        """Each file of the entry and where it lives here."""
        if self.files:
            return [(part, self.path() / part.name) for part in self.files]
        return [(self.parts()[0], self.path())]

    @property
    def pin(self) -> str:
        """"sha256" (every file pinned by its full digest), "sha256 prefix" or "unpinned"."""
        digests = [part.sha256 for part in self.parts()]
        if any(d is None for d in digests):
            return "unpinned"
        return "sha256" if all(len(d) == 64 for d in digests) else "sha256 prefix"

    @property
    def source(self) -> str:
        """How a user gets it: "fetch" (direct link), "by hand" or "package"."""
        return "package" if self.package else "fetch" if self.direct else "by hand"


def home() -> Path:
    return Path(os.environ.get("CFBENCH_HOME", "~/.cache/cfbench")).expanduser()


def package_root(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CfbenchError(f"the {package} package is not installed (pip install {package}).")
    return Path(next(iter(spec.submodule_search_locations)))


WEIGHTS: dict[str, PublishedWeights] = {
    w.name: w
    for w in (
        PublishedWeights(
            "ddpm-celeba128", "ddpm-celeba.pt", "https://huggingface.co/guillaumejs2403/DiME",
            "cfbench.diffusion.unet:CELEBA_128", "see the DiME repository",
            "guided-diffusion state dict of the DiME/ACE CelebA 128 DDPM (500 linear steps, learned sigma); "
            "DiME's code reads it as models/ddpm-celeba.pt, the file name on the HF page is unverified",
            loader="cfbench.diffusion.unet:load_guided_diffusion",
        ),
        PublishedWeights(
            "celeba-densenet121", "classifier.pth", "https://huggingface.co/guillaumejs2403/DiME (Classifier)",
            "DiVE/DiME DenseNet121: torchvision densenet121 features + Linear(1024, 40)", "see the DiME repository",
            "{'feat_extract': state dict (feat_extract.features.*), 'classifier': Linear(1024, 40)}, 40 CelebA "
            "logits, inputs in [-1, 1]; the DiME/ACE CelebA classifier; DiME's code reads it as "
            "models/classifier.pth, the file name on the HF page is unverified",
            loader="cfbench.published_classifiers:celeba_densenet121",
        ),
        PublishedWeights(
            "ddpm-celebahq256", "ddpm-celebahq.pt", "https://huggingface.co/guillaumejs2403/ACE",
            "cfbench.diffusion.unet:CELEBAHQ_256", "see the ACE repository",
            "guided-diffusion state dict of ACE's CelebA-HQ 256 DDPM (num_head_channels=64); the file name on the "
            "HF page is unverified",
            loader="cfbench.diffusion.unet:load_guided_diffusion",
        ),
        PublishedWeights(
            "celebahq-densenet", "steex-decision-densenet-celebamaskhq.tar",
            "https://github.com/valeoai/STEEX/releases",
            "STEEX DecisionDensenetModel (densenet121 features + Linear(1024, 3))", "Apache-2.0 (STEEX)",
            "torch pickle {'model_state_dict', 'epoch', 'loss', 'optimizer_state_dict'}, 3 outputs "
            "[Male, Smiling, Young], inputs in [-1, 1]; the CelebA-HQ classifier of ACE and LDCE",
            published="decision_densenet/celebamaskhq/checkpoint.tar in checkpoints_decision_densenet.tar.gz",
            loader="cfbench.published_classifiers:celebahq_densenet",
        ),
        PublishedWeights(
            "diffae-ffhq256", "diffae-ffhq256-last.ckpt", "https://github.com/phizaz/diffae (ffhq256_autoenc/last.ckpt)",
            "cfbench.diffusion.diffae:FFHQ_256", "MIT",
            "Lightning checkpoint; only the ema_model.* keys are read",
            published="ffhq256_autoenc/last.ckpt", loader="cfbench.diffusion.diffae:load_diffae_checkpoint",
        ),
        PublishedWeights(
            "diffae-celeba128", "diffae-celeba128-last.ckpt",
            "https://drive.google.com/drive/folders/1-HraJKbEI8wNIKWh5YS3RzVyAYmP9-Yd (GCD)",
            "cfbench.diffusion.diffae:CELEBA_128", "see the GCD repository",
            "GCD's celeba128_autoenc Lightning checkpoint; only the ema_model.* keys are read",
            published="celeba128_autoenc/last.ckpt (presumably; GCD's Drive folder)",
            loader="cfbench.diffusion.diffae:load_diffae_checkpoint",
        ),
        PublishedWeights(
            "simsiam-resnet50", "checkpoint_0099.pth.tar",
            "https://dl.fbaipublicfiles.com/simsiam/models/100ep-256bs/pretrain/checkpoint_0099.pth.tar",
            "cfbench.oracles.simsiam:SimSiamResNet50", "CC-BY-NC 4.0",
            "facebookresearch/simsiam ResNet-50, 100 epochs, batch 256 (the model ACE's S³ uses); "
            "{'state_dict': {'module.encoder.*', 'module.predictor.*'}, ...}",
            direct=True, loader="cfbench.oracles.simsiam:simsiam_resnet50",
        ),
        PublishedWeights(
            "inception-v3-fid", "weights-inception-2015-12-05-6726825d.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
            "torch_fidelity.feature_extractor_inceptionv3:FeatureExtractorInceptionV3",
            "Apache-2.0 (TensorFlow Inception 2015-12-05 weights, converted by torch-fidelity)",
            "state dict of torch-fidelity's FID Inception-v3 (torch-fidelity does not check a hash, so the "
            "6726825d of its name is not taken for a sha256 prefix)",
            direct=True, loader="cfbench.oracles.inception:inception_v3_fid",
        ),
        PublishedWeights(
            "vgg16-imagenet", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision.models:vgg16 (features only, as the LPIPS trunk)", "BSD-3-Clause (torchvision)",
            "torchvision ImageNet VGG16 state dict; LPIPS-VGG reads its features.* into the lpips trunk; "
            "torchvision checks the sha256 prefix of its name (check_hash=True)",
            sha256="397923af", direct=True, loader="cfbench.oracles.lpips_vgg:lpips_vgg",
        ),
        PublishedWeights(
            "lpips-vgg-linear", "weights/v0.1/vgg.pth",
            "https://github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/vgg.pth, in the lpips wheel)",
            "lpips:LPIPS (net='vgg', version='0.1'): lin0-lin4", "BSD-2-Clause (lpips)",
            "LPIPS v0.1 calibrated linear layers; ship with the lpips package, which reads them itself; the pin is "
            "the file of lpips 0.1.4",
            size=7289, sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
            loader="cfbench.oracles.lpips_vgg:build_lpips_vgg", package="lpips",
        ),
        PublishedWeights(
            "vgg19-imagenet", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "torchvision.models:vgg19 (features only, DiME's L_perc)", "BSD-3-Clause (torchvision)",
            "torchvision ImageNet VGG19 state dict; DiME reads its features.* (strictly) and uses features[:18]; "
            "torchvision checks the sha256 prefix of its name (check_hash=True)",
            sha256="dcbb9e9d", direct=True, loader="cfbench.losses:vgg19_features",
        ),
        PublishedWeights(
            "vggface2-resnet50", "resnet50_ft_weight.pkl",
            "https://github.com/cydonia999/VGGFace2-pytorch (resnet50_ft, Google Drive link in its README)",
            "cfbench.oracles.vggface2:VGGFace2ResNet50",
            "MIT (cydonia999 converter); weights converted from the VGGFace2 authors' Caffe resnet50_ft",
            "latin1 pickle of numpy arrays with torchvision names (fc = 8631 identities, unused); read without "
            "executing code; the FVA/FS network of DiME and ACE",
            loader="cfbench.oracles.vggface2:vggface2_resnet50",
        ),
        PublishedWeights(
            "facenet-vggface2", "20180402-114759-vggface2.pt",
            "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            "facenet_pytorch:InceptionResnetV1", "MIT (facenet-pytorch; weights from davidsandberg/facenet, MIT)",
            "state dict of InceptionResnetV1(pretrained='vggface2'); logits.* (8631 identities) unused",
            direct=True, loader="cfbench.oracles.vggface2:facenet_vggface2",
        ),
        PublishedWeights(
            "celeba-oracle", "oracle.pth", "https://huggingface.co/guillaumejs2403/DiME (CelebA Oracle)",
            "cfbench.oracles.celeba_oracle:dive_oracle", "MIT (DiME repository); trained by DiVE (ServiceNow)",
            "{'feat_extract': Resnet50_128 DAG state dict, 'classifier': Linear(128, 40)}; DiME's code calls it "
            "models/oracle.pth, the file name on the HF page is unverified",
            loader="cfbench.oracles.celeba_oracle:celeba_oracle",
        ),
        PublishedWeights(
            "celebahq-oracle", "steex-oracle-celebamaskhq.tar",
            "https://github.com/valeoai/STEEX/releases",
            "cfbench.oracles.celeba_oracle:steex_oracle", "Apache-2.0 (STEEX)",
            "torch pickle {'model_state_dict', 'epoch', 'loss', 'optimizer_state_dict'} of STEEX's OracleResnet "
            "(Resnet50_ft_dag + Linear(2048, 40)); the CelebA-HQ oracle ACE uses",
            published="oracle_attribute/celebamaskhq/checkpoint.tar in checkpoints_oracle_attribute.tar.gz",
            loader="cfbench.oracles.celeba_oracle:celebahq_oracle",
        ),
        PublishedWeights(
            "minisd", "miniSD.ckpt", "https://huggingface.co/justinpinkney/miniSD/resolve/main/miniSD.ckpt",
            "cfbench.diffusion.ldm:MINI_SD", "see https://huggingface.co/justinpinkney/miniSD (a Stable Diffusion "
            "v1 fine-tune)",
            "Lightning .ckpt of Stable Diffusion v1 fine-tuned at 256 px (LDCE-txt); read with its CLIP text "
            "encoder folder clip-vit-large-patch14",
            direct=True, loader="cfbench.diffusion.ldm:load_ldm_checkpoint",
        ),
        PublishedWeights(
            "cin256-v2", "cin256-v2.ckpt", "https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt",
            "cfbench.diffusion.ldm:CIN256_V2", "MIT (CompVis/latent-diffusion)",
            "Lightning .ckpt of the class-conditional ImageNet LDM (configs/latent-diffusion/cin256-v2.yaml; "
            "LDCE-cls); the latent-diffusion README saves it as models/ldm/cin256-v2/model.ckpt",
            published="model.ckpt", direct=True, loader="cfbench.diffusion.ldm:load_ldm_checkpoint",
        ),
        PublishedWeights(
            "clip-vit-large-patch14", "clip-vit-large-patch14", "https://huggingface.co/openai/clip-vit-large-patch14",
            "transformers:CLIPTokenizer + CLIPTextConfig (miniSD's FrozenCLIPEmbedder)", "MIT (openai/CLIP)",
            "folder of the tokenizer (vocab.json, merges.txt) and config.json of the CLIP text encoder that "
            "miniSD is conditioned on; pass it as --set text_encoder=DIR",
            direct=True, loader="cfbench.diffusion.ldm:load_ldm_checkpoint (text_encoder)",
            files=tuple(
                PublishedFile(f, f"https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/{f}")
                for f in ("vocab.json", "merges.txt", "config.json")
            ),
        ),
    )  # fmt: skip
}


def entry(name: str) -> PublishedWeights:
    """The registry entry ``name``; an unknown name is one `CfbenchError` line."""
    if name not in WEIGHTS:
        raise CfbenchError(f"Unknown published weights {name!r}. Known: {', '.join(sorted(WEIGHTS))}.")
    return WEIGHTS[name]


def published_as(item: PublishedWeights) -> str:
    """`` (published as NAME)`` where the published name differs and ``url`` does not say it already."""
    return f" (published as {item.published})" if item.published and item.published not in item.url else ""


def how_to_get(item: PublishedWeights) -> str:
    """Where ``item`` is published and how it gets into the cache, for error lines."""
    published = published_as(item)
    if item.package:
        return f"it ships with the {item.package} package: reinstall it (pip install --force-reinstall {item.package})"
    if item.direct:
        return (f"`cfbench weights fetch {item.name}` downloads it from {item.url}{published} "
                "(or put it there, or set CFBENCH_HOME)")  # fmt: skip
    return f"download it by hand from {item.url}{published} and put it there (or set CFBENCH_HOME)"


def locate(name: str, path: Path | str | None = None) -> Path:
    """The file (or, for a multi-file entry, the folder) of published weights ``name``:
    ``path`` if given, else the cache."""
    item = entry(name)
    found = Path(path).expanduser() if path else item.path()
    present = found.is_dir() and all((found / f.name).is_file() for f in item.files) if item.files else found.is_file()
    if not present:
        what = f"{item.filename} ({', '.join(f.name for f in item.files)})" if item.files else item.filename
        raise MissingWeights(f"{name}: {what} not found at {found}; {how_to_get(item)}.", name)
    return found


def load_all(*loaders: Callable[[], Any]) -> list[Any]:
    """Call every loader, also after one lacks its published file, so that a network that
    needs several files names all the missing ones in one `MissingWeights`."""
    loaded, errors = [], []
    for load in loaders:
        try:
            loaded.append(load())
        except MissingWeights as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise MissingWeights(" ".join(str(e) for e in errors), *(name for e in errors for name in e.names))
    return loaded


def missing_weights_line(missing: list[str]) -> str:
    """One line for every published file a run needs and lacks (entry names): which
    files, where they go, the `cfbench weights fetch` command for those with a direct link
    and the pages of the others."""
    items = [entry(name) for name in dict.fromkeys(missing)]
    fetch = [item.name for item in items if item.direct]
    by_hand = [f"{item.filename} from {item.url}" for item in items if not item.direct and not item.package]
    line = (f"missing weights: {', '.join(f'{item.filename} ({item.name})' for item in items)} in "
            f"{home() / 'weights'}")
    if fetch:
        line += f"; get them with `cfbench weights fetch {' '.join(fetch)}`"
    if by_hand:
        line += f"; download by hand: {'; '.join(by_hand)}"
    return line + "."


class Listing:
    """`WEIGHTS` as ``cfbench list weights`` shows it (the interface of a plugin registry)."""

    def names(self) -> list[str]:
        return list(WEIGHTS)

    def describe(self, name: str) -> dict[str, str]:
        item = WEIGHTS[name]
        return {"description": f"{item.filename}: {cache_state(item)}, {item.pin}, {item.source}"}

    def planned(self) -> list[str]:
        return []


def cache_state(item: PublishedWeights) -> str:
    """"cached", "partial" (a download to resume), "missing", or "not installed" (a package's file)."""
    try:
        paths = [path for _, path in item.file_paths()]
    except CfbenchError:
        return "not installed"
    if all(path.is_file() for path in paths):
        return "cached" if not item.package else "installed"
    if any(path.with_name(path.name + ".part").is_file() for path in paths):
        return "partial"
    return "missing"


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
