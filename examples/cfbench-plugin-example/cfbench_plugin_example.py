"""An example third-party cfbench plugin.

* ``blur``: a black-box method that replaces the image by a box blur of itself.
* ``mean_abs_change``: a metric, the mean absolute pixel change per image.

Both are found through the entry points in ``pyproject.toml``; nothing here
imports from cfbench's internals beyond its public plugin API.

A run computes its protocol's metrics plus those named with ``--metric``:
``cfbench run … --metric mean_abs_change``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from cfbench.errors import CfbenchError
from cfbench.handles import ClassifierHandle
from cfbench.randomness import SampleRNG
from cfbench.methods import Counterfactuals, Method, MethodConfig, hparam
from cfbench.metrics.base import SampleMetric

__all__ = ["Blur", "BlurConfig", "MeanAbsChange"]


@dataclass
class BlurConfig(MethodConfig):
    kernel_size: int = hparam(5, "cfbench-plugin-example README, 'blur'", "side of the square box filter, odd")


class Blur(Method):
    """Replace the image by a box blur of itself (a black-box baseline)

    The classifier is queried once per image, only to report the method's own view
    of success; the harness re-decides success on the saved image.
    """

    Config = BlurConfig
    access = "black-box"
    paper = "cfbench-plugin-example (no paper)"

    def explain(self, images: torch.Tensor, targets: torch.Tensor, classifier: ClassifierHandle,
                rng: SampleRNG) -> Counterfactuals:
        k = self.config.kernel_size
        if k < 1 or k % 2 == 0:
            raise CfbenchError(f"--set kernel_size={k}: use a positive odd number.")
        padded = F.pad(images, [k // 2] * 4, mode="replicate")
        blurred = F.avg_pool2d(padded, kernel_size=k, stride=1)
        success = classifier.predict(blurred) == targets.cpu()
        return Counterfactuals(images=blurred, success=success, counters=classifier.counters())


class MeanAbsChange(SampleMetric):
    """Mean absolute pixel change between input and counterfactual, [0,1] pixels"""

    name = "mean_abs_change"
    paper = "cfbench-plugin-example (no paper)"
    higher_is_better = False

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        return (originals.double() - counterfactuals.double()).abs().flatten(1).mean(dim=1)

