"""The registry of published weight files that cfbench reads but does not ship: where
each is published, the file name it is expected under, which architecture reads it
and its license. Users download them once into ``$CFBENCH_HOME/weights/`` (default
``~/.cache/cfbench/weights``) or pass a path; a missing file is one line that says
which file, where it was looked for and where it is published.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cfbench.errors import CfbenchError


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
