"""Metrics: FR (LDCE App. E eq. 12) and L1/L2 (eqs. 16-17) with bootstrap 95% CIs, on
cases whose answers are computed by hand; and a metric added by a plugin module."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, SampleMetric
from cfbench.stats import bootstrap_ci
from tests.conftest import PGD_SETS, invoke, only_run_dir, toy_run


def eval_data(originals, counterfactuals, success, batch_size=64):
    table = pd.DataFrame({"success": success, "target": [1] * len(success), "pred": [0] * len(success)})
    return EvalData(
        table=table,
        load=lambda rows: (originals[rows], counterfactuals[rows]),
        batch_size=batch_size,
    )


def compute(name, data):
    return METRICS.get(name)().compute(data)


@pytest.fixture
def known():
    """Four 3×2×2 images and changes whose L1 and L2 norms are easy to add up."""
    originals = torch.full((4, 3, 2, 2), 0.5, dtype=torch.float64)
    cfs = originals.clone()
    cfs[1, 0, 0, 0] += 0.5  # one entry by 0.5: L1 = L2 = 0.5
    cfs[2] += 0.25  # all 12 entries by 0.25: L1 = 3, L2 = sqrt(12 / 16)
    cfs[3, 1, 1, 0] += 0.3  # 0.3 and -0.4: L1 = 0.7, L2 = 0.5
    cfs[3, 2, 0, 1] -= 0.4
    return originals, cfs, [True, False, True, True]


def test_identical_images_have_zero_distance(known):
    originals, _, success = known
    for name in ("l1", "l2"):
        result = compute(name, eval_data(originals, originals.clone(), success))
        assert result.value == 0 and result.ci == (0, 0) and result.n == 4


def test_known_perturbations_give_known_l1_l2(known):
    data = eval_data(*known)
    l1, l2 = compute("l1", data), compute("l2", data)
    assert l1.value == pytest.approx((0 + 0.5 + 3 + 0.7) / 4, abs=1e-12)
    assert l2.value == pytest.approx((0 + 0.5 + math.sqrt(0.75) + 0.5) / 4, abs=1e-12)
    assert l1.n == l2.n == 4  # over all samples, successful or not (eq. 16 averages over N)
    assert l1.ci[0] <= l1.value <= l1.ci[1] and 0 <= l1.ci[0] and l1.ci[1] <= 3
    assert METRICS.get("l1").higher_is_better is False


def test_flip_ratio_is_the_percentage_of_successes(known):
    result = compute("fr", eval_data(*known))
    assert result.value == 75.0 and result.n == 4
    low, high = result.ci
    assert 0 <= low <= 75 <= high <= 100
    assert compute("fr", eval_data(known[0], known[1], [False] * 4)).value == 0
    assert compute("fr", eval_data(known[0], known[1], [True] * 4)).ci == (100, 100)


def test_bootstrap_ci_matches_the_normal_approximation():
    values = np.array([0.0, 1.0] * 200)  # p = 0.5, n = 400: 95% CI ≈ 0.5 ± 1.96·0.025
    low, high = bootstrap_ci(values)
    assert low == pytest.approx(0.5 - 0.049, abs=0.01) and high == pytest.approx(0.5 + 0.049, abs=0.01)
    assert bootstrap_ci(np.full(10, 2.5)) == (2.5, 2.5)
    assert all(math.isnan(v) for v in bootstrap_ci(np.zeros(0)))
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_results_do_not_depend_on_batch_size_and_are_deterministic():
    g = torch.Generator().manual_seed(0)
    originals = torch.rand(37, 3, 5, 5, generator=g)
    cfs = (originals + 0.1 * torch.randn(37, 3, 5, 5, generator=g)).clamp(0, 1)
    success = (torch.rand(37, generator=g) > 0.3).tolist()
    for name in ("fr", "l1", "l2"):
        results = [compute(name, eval_data(originals, cfs, success, batch_size=b)).to_dict() for b in (1, 4, 36, 37, 64)]
        results.append(compute(name, eval_data(originals, cfs, success)).to_dict())
        assert all(r == results[0] for r in results), name
        assert results[0]["n"] == 37 and results[0]["ci"][0] < results[0]["value"] < results[0]["ci"][1]


def test_subset_successful_and_empty_subset():
    class MeanAbs(SampleMetric):
        subset = "successful"

        def values(self, originals, counterfactuals, rows):
            return (originals - counterfactuals).abs().flatten(1).mean(dim=1)

    originals = torch.zeros(3, 1, 2, 2)
    cfs = torch.stack([torch.full((1, 2, 2), v) for v in (0.2, 0.4, 0.9)])
    result = MeanAbs().compute(eval_data(originals, cfs, [True, False, True]))
    assert result.value == pytest.approx(0.55) and result.n == 2
    empty = MeanAbs().compute(eval_data(originals, cfs, [False, False, False]))
    assert math.isnan(empty.value) and empty.n == 0 and empty.ci is None


def test_run_metrics_equal_a_recomputation_from_the_saved_images(workdir):
    result = invoke(*toy_run(*PGD_SETS, n=10, method="pgd"))
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(workdir / "runs")
    table = pd.read_csv(run_dir / "samples.csv", dtype={"id": str})
    from PIL import Image

    def load(folder, sample_id):
        return np.asarray(Image.open(run_dir / folder / f"{sample_id}.png"), dtype=np.float64) / 255

    diffs = [(load("originals", i) - load("counterfactuals", i)).ravel() for i in table["id"]]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["l1"]["value"] == pytest.approx(np.mean([np.abs(d).sum() for d in diffs]), rel=1e-6)  # pixels are read as float32
    assert metrics["l2"]["value"] == pytest.approx(np.mean([np.sqrt((d**2).sum()) for d in diffs]), rel=1e-6)  # pixels are read as float32
    assert metrics["fr"]["value"] == pytest.approx(100 * table["success"].mean())
    assert all(metrics[m]["n"] == 10 for m in ("fr", "l1", "l2"))


def test_a_plugin_metric_appears_without_changing_the_runner(workdir):
    """tests/fixtures/plugins.py registers `max_change` and a protocol `tests-v1` naming it."""
    result = invoke(*toy_run(*PGD_SETS, "--protocol", "tests-v1", n=8, method="pgd"))
    assert result.exit_code == 0, result.output
    assert "max_change" in result.stdout
    run_dir = only_run_dir(workdir / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"fr", "fr_null", "l1", "l2", "max_change"}
    assert metrics["max_change"]["value"] == pytest.approx(0.5, abs=1 / 255)  # PGD uses its whole ε = 0.5
    assert metrics["max_change"]["higher_is_better"] is False
    assert json.loads((run_dir / "run.json").read_text())["protocol"] == "tests-v1"
    board = pd.read_csv(workdir / "runs" / "leaderboards" / "toy_bright.csv")
    assert "max_change" in board.columns and board["max_change"].iloc[0] == pytest.approx(metrics["max_change"]["value"])
