"""Training losses of the zoo models."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon loss (Khosla et al., NeurIPS 2020, eq. 2, the "L_out" form): each anchor
    pulls every other sample with the same label and pushes the rest."""
    z = F.normalize(embeddings.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~positives, 0).sum(1)) / positives.sum(1).clamp_min(1)
    return per_anchor[positives.any(1)].mean()


def simsiam(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetrised negative cosine with stop-gradient (Chen & He, CVPR 2021, eqs. 1-3)."""
    return -(F.cosine_similarity(p1, z2.detach(), dim=1).mean() + F.cosine_similarity(p2, z1.detach(), dim=1).mean()) / 2


def impostor_margin(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Contrastive hinge on different-label pairs (Hadsell et al., CVPR 2006, eq. 4, on
    cosine similarity), averaged over the pairs that violate it: pushes every impostor
    pair whose cosine exceeds ``margin`` back under it. SupCon only ranks impostors
    below genuine pairs; FVA's fixed threshold (cos > 0.5) also needs them low in
    absolute terms."""
    z = F.normalize(embeddings.float(), dim=1)
    violations = F.relu(z @ z.T - margin)[labels[:, None] != labels[None, :]]
    return violations.pow(2).sum() / violations.gt(0).sum().clamp_min(1)
