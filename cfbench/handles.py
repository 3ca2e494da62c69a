"""Handles on the classifier to explain, as a method sees it.

The network maps images in [0, 1], (N, 3, H, W), to one logit per image for the
query attribute (positive = attribute present). A handle counts, per sample of the
batch being explained, every forward query and every gradient that flows back.
White-box handles are differentiable; black-box handles refuse gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from cfbench.errors import CfbenchError


class ClassifierHandle:
    """Counting wrapper around a binary classifier for a batch of ``n`` samples.

    ``samples`` (optional in every call) maps the rows of ``x`` to indices of the
    batch being explained; it defaults to ``arange(n)`` when ``x`` has ``n`` rows. A
    row mapped to −1 is padding (a method calling the network on batches of a fixed
    size): evaluated, never counted. A ``pooled`` handle counts every image as sample 0.
    """

    access = ""

    def __init__(self, network: nn.Module, n: int, pooled: bool = False):
        self.network = network
        self.n = n
        self.pooled = pooled
        self.queries = torch.zeros(n, dtype=torch.long)
        self.gradients = torch.zeros(n, dtype=torch.long)

    def _rows(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        if self.pooled:  # one count for the whole call's images (a fit phase)
            return torch.zeros(x.shape[0], dtype=torch.long)
        if samples is None:
            if x.shape[0] != self.n:
                raise ValueError(f"{x.shape[0]} images for a batch of {self.n}: pass samples=")
            return torch.arange(self.n)
        samples = torch.as_tensor(samples, dtype=torch.long).cpu()
        if samples.shape != (x.shape[0],):
            raise ValueError("samples must give one batch index per image")
        return samples

    def logits(self, x: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        rows = self._rows(x, samples)
        self._count(self.queries, rows)
        return self._forward(x, rows)

    @staticmethod
    def _count(counter: torch.Tensor, rows: torch.Tensor) -> None:
        rows = rows[rows >= 0]  # padding rows are not counted
        counter.index_add_(0, rows, torch.ones_like(rows))

    def _forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, x: torch.Tensor, samples: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted labels (0/1) on the CPU, like the counters, counted as queries."""
        with torch.no_grad():
            return (self.logits(x.detach(), samples) > 0).long().cpu()

    def counters(self) -> dict[str, torch.Tensor]:
        return {"classifier_queries": self.queries.clone(), "classifier_gradients": self.gradients.clone()}


class WhiteBoxClassifier(ClassifierHandle):
    """Differentiable handle; a backward pass through a query counts one gradient call."""

    access = "white-box"

    def _forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        out = self.network(x).reshape(-1)
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_gradient(rows))
        return out

    def _count_gradient(self, rows: torch.Tensor) -> None:
        self._count(self.gradients, rows)


class BlackBoxClassifier(ClassifierHandle):
    """Query-only handle: inputs that require grad are refused, outputs are detached."""

    access = "black-box"

    def _forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise CfbenchError("black-box classifier: gradients are not available, query with detached images")
        with torch.no_grad():
            return self.network(x).reshape(-1).detach()


def make_handle(access: str, network: nn.Module, n: int, pooled: bool = False) -> ClassifierHandle:
    """The handle of the kind a method declared; ``pooled`` counts every image of every call
    as sample 0 (``n`` = 1), for work that explains no sample (`Method.fit`)."""
    kinds = {"white-box": WhiteBoxClassifier, "black-box": BlackBoxClassifier}
    if access not in kinds:
        raise CfbenchError(f"unknown classifier access {access!r}: use white-box or black-box")
    return kinds[access](network, n, pooled)
