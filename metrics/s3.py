"""SimSiam similarity S³, ACE §4 and LDCE App. E eq. 15: the cosine similarity of the
SimSiam *projector* outputs z of the original and the counterfactual.

Subset as ACE's ``compute_SimSiamSimilarity.py``: the correctly classified originals
(its "CC" folders), every counterfactual of them, successful or not. Network: the
dataset's ``simsiam`` role (SimSiam ResNet-50, batch-256 checkpoint, ImageNet
normalisation, no resize, on real data; the synthfaces SimSiam as a stand-in).
"""
from __future__ import annotations

from cfbench.metrics import METRICS
from cfbench.metrics.face import CosineSimilarityMetric


@METRICS.register("s3")
class SimSiamSimilarity(CosineSimilarityMetric):
    """SimSiam similarity: mean projector cosine of original and counterfactual, correct originals"""

    name = "s3"
    paper = "ACE §4; LDCE App. E eq. 15"
    higher_is_better = True
    needs = frozenset({"simsiam"})
    role = "simsiam"
    subset = "correct"
