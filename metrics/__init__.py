"""Metric plugins, imported as ``cfbench.metrics``; third parties use the
entry-point group ``cfbench.metrics``."""
from cfbench.registry import Registry

METRICS = Registry("metric", "cfbench.metrics")

METRICS.lazy(
    "fr",
    "cfbench.metrics.flip_ratio:FlipRatio",
    description="Flip ratio: % of counterfactuals the classifier assigns to the target",
    paper="LDCE App. E eq. 12",
)
METRICS.lazy(
    "l1",
    "cfbench.metrics.distance:L1",
    description="Mean L1 distance between input and counterfactual, [0,1] pixels",
    paper="LDCE App. E eqs. 16-17",
)
METRICS.lazy(
    "l2",
    "cfbench.metrics.distance:L2",
    description="Mean L2 distance between input and counterfactual, [0,1] pixels",
    paper="LDCE App. E eqs. 16-17",
)

__all__ = ["METRICS"]
