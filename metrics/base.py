"""Metric objects (torchmetrics-style): each states what it needs and computes one thing.

A metric sees an `EvalData` (the saved originals and counterfactuals and the
per-sample table) and returns a `MetricResult`. Metrics never know which method made
the images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator

import numpy as np
import pandas as pd
import torch

from cfbench.oracles import EvalNetwork, load_network
from cfbench.stats import bootstrap_ci


@dataclass
class EvalData:
    """What a run hands its metrics.

    ``table`` has one row per sample (columns ``id``, ``success``, ``target``, ``pred`` …);
    ``load`` gives the saved original and counterfactual of some rows as float
    tensors in [0, 1]. ``dataset``/``attribute`` say which evaluation networks apply
    (`cfbench.oracles.DEFAULTS`, overridden by ``networks``: role -> name);
    ``other_seeds`` holds the same run made with other seeds (σL needs them).
    Network outputs are computed once per run and shared by the metrics that use
    them (`embed`).
    """

    table: pd.DataFrame
    load: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]
    classifier: torch.nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    dataset: str = "synthfaces"
    attribute: str = ""
    networks: dict[str, str] = field(default_factory=dict)
    other_seeds: list[EvalData] = field(default_factory=list)
    _loaded: dict[str, EvalNetwork] = field(default_factory=dict, repr=False)
    _cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def network(self, role: str) -> EvalNetwork:
        """The evaluation network of ``role`` for this dataset, loaded once per run."""
        if role not in self._loaded:
            self._loaded[role] = load_network(role, self.dataset, self.networks.get(role)).to(self.device)
        return self._loaded[role]

    def batches(self, rows: list[int] | None = None) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        rows = list(range(len(self.table))) if rows is None else rows
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            originals, counterfactuals = self.load(chunk)
            yield chunk, originals.to(self.device), counterfactuals.to(self.device)

    def rows(self, subset: str = "all") -> list[int]:
        """Row positions of a subset of the samples: ``all``; ``successful`` (the classifier
        assigns the counterfactual to the target); ``correct`` (the classifier is right on
        the original, ACE's "CC" set, counterfactuals successful or not)."""
        table = self.table
        if subset == "all":
            keep = np.ones(len(table), dtype=bool)
        elif subset == "successful":
            keep = table["success"].to_numpy(dtype=bool)
        elif subset == "correct":
            keep = (table["pred"].to_numpy() == table["label"].to_numpy()) if len(table) else np.zeros(0, bool)
        else:
            raise ValueError(f"unknown sample subset {subset!r}")
        return np.flatnonzero(keep).tolist()

    def embed(self, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``role`` network's outputs for the original and the counterfactual of every
        row, (N, D) float64 on the CPU, in table order; computed once per run (FID, sFID
        and precision/recall share the features, MNAC and CD the oracle logits)."""
        if role not in self._cache:
            module = self.network(role).module
            outputs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
            with torch.no_grad():
                for _, originals, counterfactuals in self.batches():
                    for out, images in zip(outputs, (originals, counterfactuals)):
                        out.append(module(images).reshape(len(images), -1).double().cpu())
            self._cache[role] = tuple(torch.cat(o) if o else torch.zeros(0, 0, dtype=torch.float64) for o in outputs)
        return self._cache[role]


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or None where JSON has no number for it (NaN, ±inf)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class MetricResult:
    """A metric's value with its 95% CI and sample count; a NaN value (the metric is not
    defined on this run) carries a ``reason``, one sentence for the user."""

    value: float
    ci: tuple[float, float] | None
    n: int
    network: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        """As metrics.json stores it: always valid JSON. A value that is not a finite number
        is ``null`` with a ``"reason"`` (and a ``null`` CI); a missing metric is never 0."""
        value = _finite(self.value)
        ci = [_finite(bound) for bound in self.ci] if self.ci is not None and value is not None else None
        ci = ci if ci and None not in ci else None
        result = {"value": value, "ci": ci, "n": int(self.n), "network": self.network}
        if value is None:
            result["reason"] = self.reason or f"not defined for this run (n={int(self.n)})"
        return result


class Metric:
    """Base of metric plugins: ``name``, ``paper``, ``higher_is_better`` and ``needs``
    (a subset of {"classifier", "runs"} and the network roles of `cfbench.oracles.ROLES`:
    "oracle", "identity", "simsiam", "features", "perceptual")."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset()

    def compute(self, data: EvalData) -> MetricResult:
        raise NotImplementedError


def mean_result(
    values: np.ndarray, scale: float = 1.0, network: str | None = None, reason: str = "no samples to average"
) -> MetricResult:
    """The mean of per-sample ``values`` times ``scale``, with its bootstrap 95% CI over
    samples (`cfbench.stats.bootstrap_ci`, seeded); NaN with n = 0 and ``reason`` when
    there are none."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return MetricResult(float("nan"), None, 0, network, reason)
    low, high = bootstrap_ci(values)
    return MetricResult(float(values.mean()) * scale, (low * scale, high * scale), int(values.size), network)


#: why a mean over a sample subset (`EvalData.rows`) has no value
EMPTY_SUBSET = {
    "all": "no samples",
    "successful": "no successful counterfactuals",
    "correct": "no original the classifier gets right",
}


class SampleMetric(Metric):
    """A mean over per-sample values, with a bootstrap CI over samples.

    ``subset`` picks the rows (`EvalData.rows`: ``"all"``, ``"successful"`` or
    ``"correct"``); ``scale`` converts the mean to the papers' unit (100 for a
    percentage); ``role`` names the evaluation network the values come from, recorded
    in the result. Subclasses implement `values` (per batch of images) or override
    `per_sample` (e.g. from `EvalData.embed`); `prepare` runs once before either.
    """

    subset: ClassVar[str] = "all"
    scale: ClassVar[float] = 1.0
    role: ClassVar[str | None] = None

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, data: EvalData) -> None:
        """Called once per `compute`, before the values (e.g. to keep the classifier)."""

    def per_sample(self, data: EvalData, rows: list[int]) -> np.ndarray:
        collected = [
            self.values(o, c, data.table.iloc[chunk]).detach().double().cpu() for chunk, o, c in data.batches(rows)
        ]
        return torch.cat(collected).numpy() if collected else np.zeros(0)

    def compute(self, data: EvalData) -> MetricResult:
        self.prepare(data)
        values = self.per_sample(data, data.rows(self.subset))
        network = data.network(self.role).label if self.role else None
        return mean_result(values, self.scale, network, EMPTY_SUBSET.get(self.subset, "no samples"))
