"""Diversity σL, DiME §4.3 eq. 11: for each sample, the mean perceptual distance (LPIPS)
between its counterfactuals from runs that differ only by the seed, over all pairs of
runs; then the mean over samples.

``sigma_l``: every sample present in all the runs (matched by ``id``), counterfactuals
successful or not (DiME §4.3: "even the unsuccessful instances"); the originals take no
part. ``sigma_l_agree``: the subset the official ``compute_LPIPS.py`` (DiME and ACE)
actually averages: it pairs the images found in the same classifier/counterfactual
subfolder (CC/IC × CCF/ICF) of every run, so a sample enters only where its success
agrees across the seeds. The per-sample value is the mean over the
n(n−1)/2 pairs of runs, which is what the script computes; eq. 11's printed
normaliser 2/(n(n+1)) would not average the pairs. Network: the dataset's
``perceptual`` role (LPIPS-VGG, as the scripts' ``lpips.LPIPS(net='vgg')``; the
synthfaces LPIPS stand-in), which takes [0, 1] images and applies its own scaling.
The runs are this one and ``EvalData.other_seeds``; with no other seed the result is
NaN with n = 0. CI: bootstrap over samples.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData, Metric, MetricResult, mean_result


def shared_rows(runs: list[EvalData]) -> list[list[int]]:
    """For each run, the row positions of the sample ids every run has, in the first run's order."""
    positions = [{sample_id: r for r, sample_id in enumerate(run.table["id"])} for run in runs]
    ids = [i for i in runs[0].table["id"] if all(i in p for p in positions[1:])]
    return [[p[i] for i in ids] for p in positions]


@METRICS.register("sigma_l")
class SigmaL(Metric):
    """Diversity: mean pairwise LPIPS between counterfactuals of runs with other seeds, all samples"""

    name = "sigma_l"
    paper = "DiME §4.3 eq. 11"
    higher_is_better = True
    needs = frozenset({"runs", "perceptual"})

    def rows(self, runs: list[EvalData]) -> list[list[int]]:
        return shared_rows(runs)

    def compute(self, data: EvalData) -> MetricResult:
        runs = [data, *data.other_seeds]
        if len(runs) < 2:
            return MetricResult(float("nan"), None, 0, reason="needs runs with other seeds (--seeds 0,1,2)")
        network = data.network("perceptual")
        rows = self.rows(runs)
        values = []
        with torch.no_grad():
            for start in range(0, len(rows[0]), data.batch_size):
                images = [
                    run.load(r[start : start + data.batch_size])[1].to(data.device) for run, r in zip(runs, rows)
                ]
                pairs = [network.module(a, b).reshape(len(a)).double().cpu() for a, b in combinations(images, 2)]
                values.append(torch.stack(pairs).mean(dim=0))
        per_sample = torch.cat(values).numpy() if values else np.zeros(0)
        return mean_result(per_sample, network=network.label)


@METRICS.register("sigma_l_agree")
class SigmaLAgree(SigmaL):
    """Diversity on the samples whose success agrees across the seeds (official compute_LPIPS.py)"""

    name = "sigma_l_agree"
    paper = "DiME §4.3 eq. 11 as DiME/ACE `compute_LPIPS.py` computes it"

    def rows(self, runs: list[EvalData]) -> list[list[int]]:
        rows = shared_rows(runs)
        success = np.array([run.table["success"].to_numpy(dtype=bool)[r] for run, r in zip(runs, rows)]).reshape(
            len(runs), -1)
        agree = (success == success[0]).all(axis=0)
        return [[r for r, keep in zip(run_rows, agree) if keep] for run_rows in rows]
