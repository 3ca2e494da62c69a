"""The `identity` baseline: the counterfactual is the input itself."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cfbench.handles import ClassifierHandle
from cfbench.randomness import SampleRNG
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig


@dataclass
class IdentityConfig(MethodConfig):
    """No hyperparameters."""


@METHODS.register("identity")
class Identity(Method):
    """Returns the input unchanged: the FR≈0 floor of every leaderboard"""

    Config = IdentityConfig
    access = "black-box"
    paper = "baseline"

    def explain(self, images: torch.Tensor, targets: torch.Tensor, classifier: ClassifierHandle,
                rng: SampleRNG) -> Counterfactuals:
        success = classifier.predict(images) == targets.cpu()
        return Counterfactuals(images=images.clone(), success=success, counters=classifier.counters())
