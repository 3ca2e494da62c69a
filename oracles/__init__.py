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
