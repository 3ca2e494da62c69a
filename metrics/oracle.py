"""Attribute changes seen by an oracle: MNAC and CD (DiME §4.1-4.2, LDCE App. E eqs. 18-19).

The dataset's ``oracle`` network returns one logit per attribute; an attribute is
present when its logit is > 0 (sigmoid > 0.5, the scripts' threshold). Both metrics
use the successful counterfactuals (DiME/ACE read the CC/CCF and IC/CCF folders).

* **MNAC**: per sample, the number of oracle attributes whose decision differs between
  original and counterfactual, averaged. The query attribute counts, as in the official
  ``compute_MNAC.py`` (DiME, ACE) and LDCE eq. 18 (a sum over the whole attribute
  space), although DiME's text speaks of attributes changed "in addition to the
  target": a counterfactual that changes only the query attribute has MNAC 1.
* **CD** (DiME eq. 10): with Δ_a = O_a(x') − O_a(x) ∈ {−1, 0, 1} over the successful
  counterfactuals and ρ̂_a = Pearson(Δ_q, Δ_a) (NaN, when either is constant, read as 0
  as in ACE's ``compute_CD.py``; DiME's script lets the NaN through),
  CD = Σ_a |ρ_a − ρ̂_a| over every oracle attribute the dataset labels, the query
  included (ACE/DiME sum over all 40; its term is 0 unless Δ_q is constant). ρ_a is
  the Pearson correlation of the ground-truth labels of q and a on the train split:
  ``cd`` computes it from every train label (`Split.labels`), as the official
  ``compute_CD.py`` scripts do from the whole CelebA training annotation, ``cd_spec`` takes it exactly from the generative model where the
  dataset has one (`Dataset.correlation_matrix`, synthfaces).
* **query_changed** / **shortcut_changed** (cfbench): the % of successful counterfactuals
  whose oracle decision changed on the query attribute, or on the attribute a shortcut
  classifier declares it relies on (``synthfaces-shortcut-smile``: Rosy_Cheeks): did the
  explanation change the feature the classifier uses or the one its label names?

CIs: MNAC's is the bootstrap over samples; CD's resamples the successful
counterfactuals (1000 seeded resamples, correlations recomputed, reference fixed).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from cfbench.datasets import get_dataset
from cfbench.errors import CfbenchError
from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, Metric, MetricResult, SampleMetric
from cfbench.stats import bootstrap_ci


def oracle_decisions(data: EvalData, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's binary decisions (logit > 0) on the originals and counterfactuals of ``rows``."""
    originals, counterfactuals = data.embed("oracle")
    if not rows:
        width = originals.shape[1]
        return np.zeros((0, width), bool), np.zeros((0, width), bool)
    return (originals[rows] > 0).numpy(), (counterfactuals[rows] > 0).numpy()


def query_index(names: tuple[str, ...], query: str, what: str) -> int:
    if query not in names:
        raise CfbenchError(f"the {what} has no attribute {query!r} (it has {', '.join(names)}).")
    return names.index(query)


def pearson_with(columns: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``columns`` (n, A) with ``query`` (n,);
    0 where either is constant (ACE's NaN -> 0), clipped to [-1, 1] like ``np.corrcoef``."""
    columns = columns - columns.mean(axis=0)
    query = query - query.mean()
    norms = np.sqrt((columns**2).sum(axis=0) * (query**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (columns * query[:, None]).sum(axis=0) / norms
    return np.clip(np.where(norms > 0, rho, 0.0), -1.0, 1.0)


@lru_cache(maxsize=8)
def train_label_correlations(dataset: str, query: str) -> dict[str, float]:
    """ρ(query, a) of the ground-truth labels of the whole train split."""
    ds = get_dataset(dataset)
    split = ds.split("train")
    labels = torch.as_tensor(split.labels(range(len(split)))).double().numpy()
    names = tuple(ds.attributes)
    rho = pearson_with(labels, labels[:, query_index(names, query, f"dataset {dataset!r}")])
    return dict(zip(names, rho.tolist()))


def spec_correlations(dataset: str, query: str) -> dict[str, float] | None:
    """ρ(query, a) from the dataset's generative model, or None where it has none."""
    exact = get_dataset(dataset).correlation_matrix()
    if exact is None:
        return None
    names, matrix = exact
    row = np.nan_to_num(np.asarray(matrix, dtype=np.float64)[query_index(tuple(names), query, "dataset")])
    return dict(zip(names, row.tolist()))


@METRICS.register("mnac")
class MNAC(SampleMetric):
    """Mean number of oracle attributes changed (query included), successful counterfactuals"""

    name = "mnac"
    paper = "DiME §4.1; LDCE App. E eq. 18"
    higher_is_better = False
    needs = frozenset({"oracle"})
    role = "oracle"
    subset = "successful"

    def per_sample(self, data: EvalData, rows: list[int]) -> np.ndarray:
        originals, counterfactuals = oracle_decisions(data, rows)
        return (originals != counterfactuals).sum(axis=1).astype(np.float64)


@METRICS.register("cd")
class CorrelationDifference(Metric):
    """Correlation difference vs train-label correlations, successful counterfactuals"""

    name = "cd"
    paper = "DiME §4.2 eq. 10; LDCE App. E eq. 19"
    higher_is_better = False
    needs = frozenset({"oracle"})
    no_reference = "the dataset gives no label correlations"

    def reference(self, data: EvalData) -> dict[str, float] | None:
        return train_label_correlations(data.dataset, data.attribute)

    def compute(self, data: EvalData) -> MetricResult:
        oracle = data.network("oracle")
        reference = self.reference(data)
        if reference is None:
            return MetricResult(float("nan"), None, 0, oracle.label, self.no_reference)
        names = tuple(oracle.attributes)
        q = query_index(names, data.attribute, f"oracle {oracle.name!r}")
        shared = [i for i, a in enumerate(names) if a in reference]
        rho = np.nan_to_num(np.array([reference[names[i]] for i in shared]))
        originals, counterfactuals = oracle_decisions(data, data.rows("successful"))
        deltas = counterfactuals.astype(np.float64) - originals.astype(np.float64)
        if len(deltas) == 0:
            return MetricResult(float("nan"), None, 0, oracle.label, "no successful counterfactuals")

        def cd(picks: np.ndarray) -> float:
            d = deltas[picks.astype(np.int64)]
            return float(np.abs(rho - pearson_with(d[:, shared], d[:, q])).sum())

        everyone = np.arange(len(deltas))
        return MetricResult(cd(everyone), bootstrap_ci(everyone, statistic=cd), len(deltas), oracle.label)


@METRICS.register("cd_spec")
class CorrelationDifferenceSpec(CorrelationDifference):
    """Correlation difference vs the exact label correlations of the dataset's generative model"""

    name = "cd_spec"
    paper = "DiME §4.2 eq. 10 (reference from the synthfaces spec)"
    no_reference = "the dataset has no generative model to give exact correlations (synthfaces has)"

    def reference(self, data: EvalData) -> dict[str, float] | None:
        return spec_correlations(data.dataset, data.attribute)


class OracleChange(SampleMetric):
    """% of successful counterfactuals whose oracle decision on one attribute (`attribute`)
    differs from the original's."""

    paper = "cfbench"
    higher_is_better = True
    needs = frozenset({"oracle"})
    role = "oracle"
    subset = "successful"
    scale = 100.0

    def attribute(self, data: EvalData) -> str | None:
        raise NotImplementedError

    def per_sample(self, data: EvalData, rows: list[int]) -> np.ndarray:
        attribute = self.attribute(data)
        if attribute is None:
            return np.zeros(0)
        a = query_index(tuple(data.network("oracle").attributes), attribute, "oracle")
        originals, counterfactuals = oracle_decisions(data, rows)
        return (originals[:, a] != counterfactuals[:, a]).astype(np.float64)


@METRICS.register("query_changed")
class QueryChanged(OracleChange):
    """% of successful counterfactuals whose query attribute the oracle also sees changed"""

    name = "query_changed"

    def attribute(self, data: EvalData) -> str | None:
        return data.attribute


@METRICS.register("shortcut_changed")
class ShortcutChanged(OracleChange):
    """% of successful counterfactuals that change the classifier's planted shortcut (oracle)

    The attribute is the classifier's ``shortcut``; NaN with n = 0 for a classifier
    that declares none. Higher is better: an explanation should reveal the shortcut."""

    name = "shortcut_changed"
    needs = frozenset({"oracle", "classifier"})

    def attribute(self, data: EvalData) -> str | None:
        return getattr(data.classifier, "shortcut", None)

    def compute(self, data: EvalData) -> MetricResult:
        if self.attribute(data) is None:
            reason = "the classifier declares no shortcut"
            return MetricResult(float("nan"), None, 0, data.network("oracle").label, reason)
        return super().compute(data)
