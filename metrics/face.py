"""Identity preservation on faces, ACE §4 (and DiME §4.1 for FVA): cosine similarities
between the embeddings of each original and its counterfactual.

* **FVA** (face verification accuracy): % of counterfactuals whose cosine similarity
  with their original exceeds 0.5 (the same person), DiME/ACE ``compute_FVA.py``.
* **FS** (face similarity): the mean cosine similarity itself, ACE §4 (printed as
  "mean dist" by the same script).

Both over the successful counterfactuals (DiME §4.1: "only those successful
counterfactual examples"; the scripts read the CC/CCF and IC/CCF folders), with the
``identity`` network of the dataset (VGGFace2 ResNet-50 avgpool on CelebA, the
synthfaces identity encoder as a stand-in). Each network applies its own
preprocessing to the [0, 1] images; the threshold is on the similarity, not on
STEEX's cosine *distance*.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch.nn.functional as F

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, SampleMetric

#: DiME §4.1 / ACE ``compute_FVA.py``: two faces show the same person above this similarity.
SAME_IDENTITY = 0.5


class CosineSimilarityMetric(SampleMetric):
    """Per sample: the cosine similarity of the ``role`` network's outputs for the original
    and the counterfactual (computed once per run, `EvalData.embed`)."""

    role: ClassVar[str] = "identity"
    subset = "successful"

    def similarities(self, data: EvalData, rows: list[int]) -> np.ndarray:
        originals, counterfactuals = data.embed(self.role)
        if not rows:
            return np.zeros(0)
        return F.cosine_similarity(originals[rows], counterfactuals[rows], dim=1).numpy()

    def per_sample(self, data: EvalData, rows: list[int]) -> np.ndarray:
        return self.similarities(data, rows)


@METRICS.register("fs")
class FaceSimilarity(CosineSimilarityMetric):
    """Face similarity: mean identity-embedding cosine similarity of original and successful counterfactual"""

    name = "fs"
    paper = "ACE §4"
    higher_is_better = True
    needs = frozenset({"identity"})


@METRICS.register("fva")
class FaceVerificationAccuracy(CosineSimilarityMetric):
    """Face verification accuracy: % of successful counterfactuals with identity cosine similarity > 0.5"""

    name = "fva"
    paper = "DiME §4.1; ACE §4"
    higher_is_better = True
    needs = frozenset({"identity"})
    scale = 100.0

    def per_sample(self, data: EvalData, rows: list[int]) -> np.ndarray:
        return (self.similarities(data, rows) > SAME_IDENTITY).astype(np.float64)


__all__ = ["SAME_IDENTITY", "CosineSimilarityMetric", "FaceSimilarity", "FaceVerificationAccuracy"]
