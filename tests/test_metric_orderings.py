"""The synthfaces stand-in networks order the sanity baselines sensibly: `identity`
returns the input (FR 0, nothing changed), `pgd` flips every decision with an
adversarial perturbation (FR 100, images off the data manifold)."""
from __future__ import annotations

import pytest

from cfbench.runner import Run, RunSpec


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    jobs = {
        method: Run(RunSpec(method=method, dataset="synthfaces", attr="smile", n=24, batch_size=24, device="cpu",
                            runs_root=root, progress=False))  # fmt: skip
        for method in ("identity", "pgd")
    }
    return {method: (job, job.execute()) for method, job in jobs.items()}


def test_protocol_columns(runs):
    for _, metrics in runs.values():
        assert {"fr", "fid", "sfid", "fva", "fs", "mnac", "cd", "cout", "s3", "l1_plus"} <= set(metrics)
        assert "(stand-in)" in metrics["fid"]["network"] and "(stand-in)" in metrics["mnac"]["network"]


def test_flip_ratio_orders_the_baselines(runs):
    identity, pgd = runs["identity"][1], runs["pgd"][1]
    assert identity["fr"]["value"] == 0 and pgd["fr"]["value"] == 100
    # identity has no successful counterfactual: the success-subset metrics are undefined
    assert identity["fva"]["value"] is None and identity["fva"]["n"] == 0
    assert identity["fva"]["reason"] == "no successful counterfactuals"
    assert pgd["fva"]["n"] == 24 and pgd["fid"]["value"] > 0


def test_same_images_score_as_unchanged_and_pgd_as_changed(runs):
    """Counting every pair (success forced), the networks tell "unchanged" from "perturbed"."""
    from cfbench.metrics import METRICS

    values = {}
    for method, (job, _) in runs.items():
        table = job.record.read_table()
        table["success"] = True
        data = job._eval_data(job.record, table, job.network)
        values[method] = {
            name: METRICS.get(name)().compute(data).value for name in ("fid", "sfid", "fs", "fva", "mnac", "s3")
        }
    identity, pgd = values["identity"], values["pgd"]
    assert identity["fid"] == pytest.approx(0, abs=1e-3) and pgd["fid"] > 1  # 1e-3: sqrtm noise at N < D
    # sFID is not compared: its halves hold different people, and on the stand-in features the
    # split noise (≈130 at n = 100) dwarfs pgd's shift (FID ≈ 6), so the two are within noise.
    assert identity["sfid"] > 0 and pgd["sfid"] > 0
    assert identity["fs"] == pytest.approx(1, abs=1e-5) and identity["fva"] == 100 and identity["mnac"] == 0
    assert identity["s3"] == pytest.approx(1, abs=1e-5) and pgd["s3"] < identity["s3"]
    assert pgd["fs"] < identity["fs"]
