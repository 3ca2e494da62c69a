"""The conciseness metrics of attribution maps (GCD supp. D.4, Table 9) against their
definitions, computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from cfbench.metrics.attribution import ADComplexity, AttributionSparseness, complexity, sparseness
from cfbench.metrics.base import EvalData


def test_sparseness_is_the_gini_index_and_complexity_the_entropy():
    a = torch.tensor([[0.0, 1.0, 3.0, -2.0]])
    x = np.sort(np.abs(a.numpy().ravel()) + 1e-7)
    n = len(x)
    gini = np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / (n * x.sum())
    assert math.isclose(float(sparseness(a)[0]), gini, rel_tol=1e-6)
    p = np.abs(a.numpy().ravel()) / 6
    entropy = -sum(v * math.log(v) for v in p if v > 0)
    assert math.isclose(float(complexity(a)[0]), entropy, rel_tol=1e-6)
    one_pixel, flat = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    one_pixel[0, 0, 1, 2] = 5
    assert sparseness(one_pixel) > 0.9 > 0.1 > sparseness(flat)  # concentrated vs spread
    assert complexity(one_pixel) == 0 and math.isclose(float(complexity(flat)), math.log(16), rel_tol=1e-6)
    assert torch.isnan(complexity(torch.zeros(1, 1, 2, 2)))[0]


def _data(table: pd.DataFrame, originals: torch.Tensor, counterfactuals: torch.Tensor) -> EvalData:
    return EvalData(table=table, load=lambda rows: (originals[rows], counterfactuals[rows]))


def test_own_maps_are_read_from_the_table_and_ad_from_the_images():
    x = torch.zeros(3, 3, 4, 4)
    cf = x.clone()
    cf[0, :, 0, 0] = 1.0  # one changed pixel: AD complexity 0
    cf[1] = 0.5  # every pixel changed alike: log(16)
    table = pd.DataFrame({"success": [True] * 3, "attribution_sparseness": [0.2, 0.4, float("nan")]})
    own = AttributionSparseness().compute(_data(table, x, cf))
    assert math.isclose(own.value, 0.3) and own.n == 2
    ad = ADComplexity().compute(_data(table, x, cf))  # the unchanged third image is left out
    assert ad.n == 2 and math.isclose(ad.value, math.log(16) / 2, rel_tol=1e-6)
    none = AttributionSparseness().compute(_data(table.drop(columns="attribution_sparseness"), x, cf))
    assert math.isnan(none.value) and none.reason == "the method returns no attribution maps"
