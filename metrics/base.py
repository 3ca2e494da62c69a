"""Metric objects (torchmetrics-style): each states what it needs and computes one thing.

A metric sees an `EvalData` (the saved originals and counterfactuals and the
per-sample table) and returns a `MetricResult`. Metrics never know which method made
the images.
"""
from __future__ import annotations

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


@dataclass
class MetricResult:
    value: float
    ci: tuple[float, float] | None
    n: int
    network: str | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "ci": list(self.ci) if self.ci else None, "n": self.n, "network": self.network}


class Metric:
    """Base of metric plugins: ``name``, ``paper``, ``higher_is_better`` and ``needs``
    (a subset of {"classifier", "oracle", "features", "runs"})."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset()

    def compute(self, data: EvalData) -> MetricResult:
        raise NotImplementedError


class SampleMetric(Metric):
    """A mean over per-sample values, with a bootstrap CI over samples.

    ``subset`` picks the rows: ``"all"`` or ``"successful"``; ``scale`` converts the
    mean to the papers' unit (100 for a percentage).
    """

    subset: ClassVar[str] = "all"
    scale: ClassVar[float] = 1.0

    def values(self, originals: torch.Tensor, counterfactuals: torch.Tensor, rows: pd.DataFrame) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, data: EvalData) -> MetricResult:
        rows = list(range(len(data.table)))
        if self.subset == "successful":
            rows = [r for r in rows if bool(data.table["success"].iloc[r])]
        collected = [
            self.values(o, c, data.table.iloc[chunk]).detach().double().cpu() for chunk, o, c in data.batches(rows)
        ]
        values = torch.cat(collected).numpy() if collected else np.zeros(0)
        if values.size == 0:
            return MetricResult(float("nan"), None, 0)
        low, high = bootstrap_ci(values)
        return MetricResult(float(values.mean()) * self.scale, (low * self.scale, high * self.scale), int(values.size))
