"""The `pgd` baseline: a targeted projected-gradient attack on the classifier.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018, §2 (PGD on the negative loss, projection onto the ε-ball). This is the
adversarial example that DiME §1 and ACE §1 contrast counterfactuals with: it flips
the decision with imperceptible, non-semantic noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cfbench.handles import ClassifierHandle
from cfbench.randomness import SampleRNG
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig, hparam


@dataclass
class PGDConfig(MethodConfig):
    norm: str = hparam("linf", "Madry et al. §2", "threat model: linf or l2", choices=("linf", "l2"))
    epsilon: float = hparam(8 / 255, "Madry et al. §5 (CIFAR-10)", "radius of the ball around the input, [0,1] scale",
                            low=0.0)
    step_size: float = hparam(2 / 255, "Madry et al. §5 (CIFAR-10)", "step per iteration", low=0.0)
    steps: int = hparam(20, "Madry et al. §5", "iterations", low=0)
    random_start: bool = hparam(True, "Madry et al. §2", "start from a uniform point of the ball")


@METHODS.register("pgd")
class PGD(Method):
    """Targeted projected gradient attack in pixel space: the adversarial example VCEs are contrasted with"""

    Config = PGDConfig
    access = "white-box"
    paper = "Madry et al., ICLR 2018"

    def explain(self, images: torch.Tensor, targets: torch.Tensor, classifier: ClassifierHandle,
                rng: SampleRNG) -> Counterfactuals:
        cfg = self.config
        x0 = images.detach()
        y = targets.to(x0.dtype).to(x0.device)
        delta = torch.zeros_like(x0)
        if cfg.random_start:
            delta = (rng.rand(x0.shape[1:], device=x0.device, dtype=x0.dtype) * 2 - 1) * cfg.epsilon
            delta = self._project(delta)
        # keep x0 + delta in [0, 1] by projection: clamp() in the forward pass has zero
        # gradient at 0 and 1, so pixels there (saturated, or pushed out by the random start) never moved
        delta = (x0 + delta).clamp(0, 1) - x0
        for _ in range(cfg.steps):
            delta.requires_grad_(True)
            logits = classifier.logits(x0 + delta)
            loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = self._project(delta - cfg.step_size * self._direction(grad))
                delta = (x0 + delta).clamp(0, 1) - x0
        cf = (x0 + delta.detach()).clamp(0, 1)
        success = classifier.predict(cf) == targets.cpu()
        return Counterfactuals(images=cf, success=success, counters=classifier.counters())

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.config.norm == "linf":
            return grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return grad / norms.view(-1, *[1] * (grad.dim() - 1))

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self.config.epsilon
        if self.config.norm == "linf":
            return delta.clamp(-eps, eps)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0)
        return delta * factor.view(-1, *[1] * (delta.dim() - 1))
