"""The evaluation metrics of the papers (FID, sFID, precision/recall, FVA, FS, MNAC, CD,
COUT, S³, σL, DiME's ℓ1) on constructed cases with hand-computed answers, with small
fake evaluation networks injected into `EvalData`; each metric is also checked to give
the same result at batch sizes 1 and 7 and on a second computation."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch_fidelity.metric_prc import calculate_precision_recall_full

from cfbench.datasets import DATASETS
from cfbench.datasets.base import Dataset, Split
from cfbench.errors import CfbenchError
from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData
from cfbench.metrics.cout import cout_scores, insertion_counts
from cfbench.metrics.fid import frechet_distance, frechet_distance_lowrank
from cfbench.metrics.precision_recall import inside_manifold
from cfbench.oracles import EvalNetwork

ATTRS = ("Smiling", "Young", "Male", "Hat")
WORLD = "metric-suite-world"


# -- fake evaluation networks: each reads its output from known pixels -----------------
class Pixels(nn.Module):
    """Returns ``x[:, channel, row, :width]`` minus ``offset``, so a test writes the
    network's output straight into the image."""

    def __init__(self, channel: int, row: int, width: int, offset: float = 0.0):
        super().__init__()
        self.channel, self.row, self.width, self.offset = channel, row, width, offset
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x[:, self.channel, self.row, : self.width] - self.offset


class MeanAbsDistance(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().flatten(1).mean(dim=1)


class ChannelSum(nn.Module):
    """A classifier: one logit, the sum of channel 0 minus 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].flatten(1).sum(dim=1) - 1.0


def fake_networks() -> dict[str, EvalNetwork]:
    return {
        # attribute a is present when pixel (0, 0, a) is 1: logit = pixel - 0.5
        "oracle": EvalNetwork("fake-oracle", "oracle", Pixels(0, 0, len(ATTRS), 0.5), attributes=ATTRS),
        # a 2-d identity embedding read from row 1 of channel 1, centred at 0.5
        "identity": EvalNetwork("fake-identity", "identity", Pixels(1, 1, 2, 0.5), stand_in=True),
        "simsiam": EvalNetwork("fake-simsiam", "simsiam", Pixels(1, 1, 2, 0.5)),
        # features: row 2 of channel 2, raw values
        "features": EvalNetwork("fake-features", "features", Pixels(2, 2, 3)),
        "perceptual": EvalNetwork("fake-lpips", "perceptual", MeanAbsDistance()),
    }


def make_data(originals, counterfactuals, table=None, batch_size=64, classifier=None, **kw) -> EvalData:
    n = len(originals)
    if table is None:
        table = pd.DataFrame({"id": [f"s{i:03d}" for i in range(n)], "success": [True] * n})
    table = table.copy()
    for column, default in (("id", None), ("success", True), ("label", 0), ("pred", 0)):
        if column not in table:
            table[column] = [f"s{i:03d}" for i in range(n)] if column == "id" else default
    if "target" not in table:
        table["target"] = 1 - table["pred"]
    return EvalData(
        table=table,
        load=lambda rows: (originals[rows], counterfactuals[rows]),
        batch_size=batch_size,
        classifier=classifier,
        dataset=WORLD,
        attribute="Smiling",
        _loaded=fake_networks(),
        **kw,
    )


def compute(name: str, data: EvalData):
    return METRICS.get(name)().compute(data)


def blank(n: int, size: int = 4) -> torch.Tensor:
    return torch.full((n, 3, size, size), 0.5, dtype=torch.float64)


# -- a registered toy dataset: train labels and an exact correlation matrix -------------
TRAIN_LABELS = torch.tensor(  # ρ(Smiling, ·) = 1, 0, 1/√3 for Young, Male, Hat
    [[1, 1, 1, 1], [1, 1, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.float32
)
SPEC = np.array(
    [[1.0, 0.5, -0.5, 0.0], [0.5, 1.0, 0.0, 0.0], [-0.5, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)  # ρ(Smiling, ·) = 0.5, -0.5, 0


class ToySplit(Split):
    def __len__(self) -> int:
        return len(TRAIN_LABELS)

    def __getitem__(self, index):
        raise AssertionError("CD must read labels only")

    def labels(self, indices):
        return TRAIN_LABELS[list(indices)]


@DATASETS.register(WORLD)
class ToyWorld(Dataset):
    name = WORLD
    attributes = ATTRS

    def split(self, name: str) -> Split:
        assert name == "train"
        return ToySplit()

    def correlation_matrix(self):
        return ATTRS, SPEC


# -- oracle cases ----------------------------------------------------------------------
def with_attributes(images: torch.Tensor, bits) -> torch.Tensor:
    images = images.clone()
    images[:, 0, 0, : len(ATTRS)] = torch.as_tensor(bits, dtype=images.dtype)
    return images


@pytest.fixture
def oracle_case():
    """Four successful counterfactuals with oracle changes Δ (columns Smiling, Young, Male, Hat):
    (+1, +1, 0, +1), (-1, -1, 0, +1), (+1, +1, 0, -1), (-1, -1, 0, -1), and one failed one
    that changes everything."""
    before = [[0, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0]]
    after = [[1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    originals, cfs = with_attributes(blank(5), before), with_attributes(blank(5), after)
    table = pd.DataFrame({"success": [True, True, True, True, False]})
    return originals, cfs, table


def test_mnac_counts_changed_attributes_query_included(oracle_case):
    originals, cfs, table = oracle_case
    result = compute("mnac", make_data(originals, cfs, table))
    assert result.value == 3.0 and result.n == 4 and result.ci == (3.0, 3.0)  # Smiling, Young, Hat; not the failed row
    assert result.network == "fake-oracle"
    assert compute("mnac", make_data(originals, originals.clone(), table)).value == 0
    one = with_attributes(originals, [[1 - b if a == 2 else b for a, b in enumerate(row)] for row in
                                      [[0, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0]]])
    assert compute("mnac", make_data(originals, one, table)).value == 1.0  # only Male flips


def test_query_and_shortcut_changed(oracle_case):
    originals, cfs, table = oracle_case
    mixed = with_attributes(cfs, [[1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]])
    query = compute("query_changed", make_data(originals, mixed, table))
    assert query.value == 75.0 and query.n == 4 and query.network == "fake-oracle"  # row 3 keeps Smiling
    shortcut = torch.nn.Identity()
    shortcut.shortcut = "Hat"
    hat = compute("shortcut_changed", make_data(originals, mixed, table, classifier=shortcut))
    assert hat.value == 50.0 and hat.n == 4  # rows 1 and 2 change Hat; the failed row is not counted
    plain = compute("shortcut_changed", make_data(originals, mixed, table, classifier=torch.nn.Identity()))
    assert math.isnan(plain.value) and plain.n == 0  # a classifier without a declared shortcut


def test_cd_against_train_labels_and_spec(oracle_case):
    originals, cfs, table = oracle_case
    data = make_data(originals, cfs, table)
    # counterfactual correlations with Δ_Smiling: Young 1, Male 0 (constant Δ -> 0), Hat 0;
    # train labels: 1, 0, 1/√3; the query's own term is |1 - 1| = 0
    cd = compute("cd", data)
    assert cd.value == pytest.approx(1 / math.sqrt(3), abs=1e-12) and cd.n == 4 and cd.network == "fake-oracle"
    assert cd.ci[0] <= cd.ci[1]
    # spec: 0.5, -0.5, 0 -> |0.5 - 1| + |-0.5 - 0| + |0 - 0| = 1
    assert compute("cd_spec", data).value == pytest.approx(1.0, abs=1e-12)
    # when the oracle sees the query never change, every ρ̂ is 0 (NaN -> 0, as ACE)
    still = compute("cd_spec", make_data(originals, originals.clone(), table))
    assert still.value == pytest.approx(1.0 + 0.5 + 0.5 + 0.0)


def test_cd_rejects_a_query_the_oracle_lacks(oracle_case):
    originals, cfs, table = oracle_case
    data = make_data(originals, cfs, table)
    data.attribute = "Bald"
    with pytest.raises(CfbenchError, match="Bald"):
        compute("cd_spec", data)


# -- identity and SimSiam similarities ---------------------------------------------------
def with_embedding(images: torch.Tensor, vectors) -> torch.Tensor:
    images = images.clone()
    images[:, 1, 1, :2] = torch.as_tensor(vectors, dtype=images.dtype) + 0.5
    return images


def test_fva_and_fs():
    originals = with_embedding(blank(3), [[0.5, 0.0], [0.5, 0.0], [0.5, 0.0]])
    cfs = with_embedding(blank(3), [[0.0, 0.5], [0.5, 0.5], [-0.5, 0.0]])  # cos 0, 1/√2, -1 (failed)
    table = pd.DataFrame({"success": [True, True, False]})
    data = make_data(originals, cfs, table)
    fs, fva = compute("fs", data), compute("fva", data)
    assert fs.value == pytest.approx(0.5 / math.sqrt(2), abs=1e-12) and fs.n == 2
    assert fva.value == pytest.approx(50.0) and fva.n == 2 and 0 <= fva.ci[0] <= fva.ci[1] <= 100
    assert fs.network == fva.network == "fake-identity (stand-in)"
    same = make_data(originals, originals.clone(), table)
    assert compute("fs", same).value == pytest.approx(1.0) and compute("fva", same).value == 100.0


def test_s3_uses_correctly_classified_originals_and_all_their_counterfactuals():
    originals = with_embedding(blank(3), [[0.5, 0.0]] * 3)
    cfs = with_embedding(blank(3), [[0.0, 0.5], [0.5, 0.5], [-0.5, 0.0]])  # cos 0, 1/√2, -1
    table = pd.DataFrame({"success": [True, False, True], "label": [0, 1, 1], "pred": [0, 1, 0]})
    result = compute("s3", make_data(originals, cfs, table))  # rows 0 and 1 (row 2 is misclassified)
    assert result.value == pytest.approx(0.5 / math.sqrt(2)) and result.n == 2 and result.network == "fake-simsiam"
    assert compute("s3", make_data(originals, originals.clone(), table)).value == pytest.approx(1.0)


# -- Fréchet distances -----------------------------------------------------------------
def design(mean, sd) -> torch.Tensor:
    """The 2³ points mean ± sd: sample mean ``mean``, sample covariance (8/7)·diag(sd²)."""
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=3)), dtype=torch.float64)
    return torch.as_tensor(mean, dtype=torch.float64) + signs * torch.as_tensor(sd, dtype=torch.float64)


def with_features(images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    images = images.clone()
    images[:, 2, 2, :3] = features
    return images


def test_fid_of_gaussians_with_known_moments():
    mu1, sd1, mu2, sd2 = [0.5, 0.5, 0.5], [0.2, 0.2, 0.1], [0.6, 0.5, 0.3], [0.1, 0.2, 0.3]
    # closed form for diagonal covariances: |μ1-μ2|² + Σ_d (σ1d - σ2d)², covariances scaled by 8/7
    expected = 0.01 + 0.04 + (8 / 7) * (0.01 + 0.0 + 0.04)
    f1, f2 = design(mu1, sd1), design(mu2, sd2)
    assert frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_lowrank(f1.numpy(), f2.numpy()) == pytest.approx(expected, rel=1e-9)
    data = make_data(with_features(blank(8), f1), with_features(blank(8), f2))
    result = compute("fid", data)
    assert result.value == pytest.approx(expected, rel=1e-9) and result.n == 8 and result.network == "fake-features"
    assert result.ci[0] < result.value < result.ci[1]
    identical = compute("fid", make_data(with_features(blank(8), f1), with_features(blank(8), f1)))
    assert identical.value == pytest.approx(0.0, abs=1e-12)


def test_fid_uses_successful_counterfactuals_against_all_originals():
    f1, f2 = design([0.5] * 3, [0.2] * 3), design([0.7] * 3, [0.1] * 3)
    extra = torch.zeros(1, 3, dtype=torch.float64)  # a failed sample whose counterfactual is far away
    originals = with_features(blank(9), torch.cat([f1, f1[:1]]))
    cfs = with_features(blank(9), torch.cat([f2, extra + 9]))
    table = pd.DataFrame({"success": [True] * 8 + [False]})
    result = compute("fid", make_data(originals, cfs, table))
    assert result.n == 8
    assert result.value == pytest.approx(frechet_distance(torch.cat([f1, f1[:1]]), f2), rel=1e-12)


def test_lowrank_frechet_distance_matches_torch_fidelity():
    g = np.random.default_rng(0)
    for n1, n2, d in ((30, 20, 50), (200, 150, 16), (40, 300, 24)):
        a = g.standard_normal((n1, d))
        b = g.standard_normal((n2, d)) @ g.standard_normal((d, d)) * 0.3 + 0.2
        reference = frechet_distance(torch.tensor(a), torch.tensor(b))
        assert frechet_distance_lowrank(a, b) == pytest.approx(reference, rel=1e-6)


def test_sfid_compares_each_half_with_the_other_halfs_counterfactuals():
    f = design([0.5] * 3, [0.2, 0.1, 0.3])
    originals = with_features(blank(8), f)
    # counterfactuals identical to their originals: FID is 0, sFID is not (halves differ)
    same = make_data(originals, originals.clone())
    assert compute("fid", same).value == pytest.approx(0.0, abs=1e-12)
    sfid = compute("sfid", same)
    assert sfid.value > 0.01 and sfid.n == 8 and sfid.ci[0] <= sfid.value <= sfid.ci[1]
    # constant features on each side: every split gives |f0 - f1|², with odd N too
    constant = with_features(blank(9), torch.full((9, 3), 0.25, dtype=torch.float64))
    shifted = with_features(blank(9), torch.full((9, 3), 0.75, dtype=torch.float64))
    result = compute("sfid", make_data(constant, shifted))
    assert result.value == pytest.approx(3 * 0.25, abs=1e-12) and result.ci == pytest.approx((0.75, 0.75))
    # the splits follow the sample ids, not the table order
    table = pd.DataFrame({"id": [f"s{i:03d}" for i in range(8)], "success": [True] * 8})
    order = [3, 0, 7, 1, 6, 2, 5, 4]
    cfs = with_features(blank(8), design([0.6] * 3, [0.1] * 3))
    straight = compute("sfid", make_data(originals, cfs, table))
    shuffled = compute("sfid", make_data(originals[order], cfs[order], table.iloc[order].reset_index(drop=True)))
    assert shuffled.value == pytest.approx(straight.value, rel=1e-12)


# -- precision and recall ----------------------------------------------------------------
def points(xy) -> torch.Tensor:
    out = torch.zeros(len(xy), 3, dtype=torch.float64)
    out[:, :2] = torch.tensor(xy, dtype=torch.float64)
    return out


def test_precision_recall_on_hand_placed_points():
    line = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]  # k=3 radii: 3, 2, 2, 2, 3
    # (2,1) is 1 from (2,0); (6,0) is 2 from (4,0) (radius 3); (8,0) and (0,9) are outside;
    # (50,50) belongs to a failed sample and is left out
    originals = with_features(blank(5), points(line))
    cfs = with_features(blank(5), points([(2, 1), (6, 0), (8, 0), (0, 9), (50, 50)]))
    data = make_data(originals, cfs, pd.DataFrame({"success": [True] * 4 + [False]}))
    result = compute("precision", data)
    assert result.value == 0.5 and result.n == 4 and result.network == "fake-features"
    # originals: the line plus an outlier (30,30); counterfactuals (x,1) for x = 0..4, radii 3,2,2,2,3:
    # every (x,0) is 1 away from (x,1), the outlier is far -> recall 5/6; precision 1
    originals = with_features(blank(6), points(line + [(30, 30)]))
    cfs = with_features(blank(6), points([(x, 1) for x in range(5)] + [(99, 99)]))
    table = pd.DataFrame({"success": [True] * 5 + [False]})
    data = make_data(originals, cfs, table)
    assert compute("recall", data).value == pytest.approx(5 / 6) and compute("recall", data).n == 6
    assert compute("precision", data).value == 1.0


def test_manifold_membership_matches_torch_fidelity():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 5, generator=g, dtype=torch.float64)
    fake = torch.randn(45, 5, generator=g, dtype=torch.float64) * 1.3 + 0.4
    precision, recall = calculate_precision_recall_full(fake, real, neighborhood=3)
    assert inside_manifold(fake, real).mean() == pytest.approx(precision)
    assert inside_manifold(real, fake).mean() == pytest.approx(recall)


# -- COUT ---------------------------------------------------------------------------
def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_cout_on_a_two_pixel_change():
    # 2×5 images: 10 pixels, one per insertion step; the classifier's logit is the sum of
    # channel 0 minus 1. The counterfactual sets two pixels to 1: logits -1, 0, 1, 1, …
    originals = torch.zeros(1, 3, 2, 5, dtype=torch.float64)
    cfs = originals.clone()
    cfs[0, 0, 0, 3] = cfs[0, 0, 1, 1] = 1.0
    table = pd.DataFrame({"success": [True], "label": [0], "pred": [0]})
    result = compute("cout", make_data(originals, cfs, table, classifier=ChannelSum()))
    curve = [sigmoid(-1), 0.5] + [sigmoid(1)] * 9  # probability of the target (1) at 0, 1, …, 10 pixels
    aupc = sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / 10
    assert result.value == pytest.approx(2 * aupc - 1, abs=1e-12) and result.network is None
    # identical images: flat curves at the classifier's confidence, 1 - 2σ(|logit|)
    same = compute("cout", make_data(originals, originals.clone(), table, classifier=ChannelSum()))
    assert same.value == pytest.approx(1 - 2 * sigmoid(1), abs=1e-12)


def test_cout_tie_order_decides_only_among_equal_mask_values():
    class Weighted(torch.nn.Module):  # pixel (0, 0) counts 5×, every other pixel once
        def forward(self, x):
            return 5 * x[:, 0, 0, 0] + x[:, 0].flatten(1)[:, 1:].sum(dim=1) - 1

    originals = torch.zeros(2, 3, 2, 5, dtype=torch.float64)
    cfs = originals.clone()
    cfs[:, 0, 0, 0] = cfs[:, 0, 1, 4] = 1.0  # a tie between the first and the last pixel ...
    cfs[1, 0, 1, 4] = 0.9  # ... broken by value in the second pair
    targets = torch.tensor([1, 1])
    by_index = cout_scores(Weighted(), originals, cfs, targets)
    assert torch.equal(by_index, cout_scores(Weighted(), originals, cfs, targets, tie_order=torch.arange(10)))
    reversed_ties = cout_scores(Weighted(), originals, cfs, targets, tie_order=torch.arange(9, -1, -1))
    assert reversed_ties[0] < by_index[0] and reversed_ties[1] == by_index[1]


def test_cout_subset_and_target_direction():
    originals = torch.zeros(3, 3, 2, 5, dtype=torch.float64)
    originals[1, 0, 0, :3] = 1.0  # logit 2: predicted 1, target 0
    cfs = originals.clone()
    cfs[1, 0, 0, :3] = 0.0  # logits 2, 1, 0, -1, -1 …: towards 0
    table = pd.DataFrame({"success": [True, True, True], "label": [0, 1, 1], "pred": [0, 1, 0]})
    result = compute("cout", make_data(originals, cfs, table, classifier=ChannelSum()))
    assert result.n == 2  # row 2 is misclassified
    towards_zero = [sigmoid(-2), sigmoid(-1), 0.5] + [sigmoid(1)] * 8
    aupc = sum((a + b) / 2 for a, b in zip(towards_zero, towards_zero[1:])) / 10
    assert result.value == pytest.approx(((1 - 2 * sigmoid(1)) + (2 * aupc - 1)) / 2, abs=1e-12)


def test_cout_insertion_schedule_follows_ace():
    assert insertion_counts(10) == list(range(11))
    counts = insertion_counts(16 * 16)  # step 256 // 50 = 5, then a last partial step
    assert counts[:3] == [0, 5, 10] and counts[-2:] == [255, 256] and len(counts) == 53
    counts = insertion_counts(128 * 128)  # 327 pixels a step, ACE's 51 steps
    assert counts[-2:] == [16350, 16384] and len(counts) == 52


def test_cout_needs_the_classifier():
    with pytest.raises(CfbenchError, match="classifier"):
        compute("cout", make_data(blank(1), blank(1)))


# -- σL ------------------------------------------------------------------------------
def test_sigma_l_over_seeds():
    originals = blank(3)

    def run(values, ids=("a", "b", "c")):
        cfs = torch.stack([torch.full((3, 4, 4), v, dtype=torch.float64) for v in values])
        table = pd.DataFrame({"id": list(ids), "success": [True, False, True][: len(ids)]})
        return make_data(originals[: len(ids)], cfs, table)

    data = run([0.0, 0.1, 0.2])
    # no other seed: nothing to compare
    empty = compute("sigma_l", data)
    assert math.isnan(empty.value) and empty.n == 0 and empty.ci is None
    # identical counterfactuals across seeds: 0
    data.other_seeds = [run([0.0, 0.1, 0.2]), run([0.0, 0.1, 0.2])]
    assert compute("sigma_l", data).value == 0.0
    # sample a at 0, 0.2, 0.6 over three seeds: pairs 0.2, 0.6, 0.4 -> 0.4; sample b: 0.1, 0.1, 0 -> 0.2/3;
    # sample c is missing from the last run and is left out
    data.other_seeds = [run([0.2, 0.2, 0.5]), run([0.6, 0.1], ids=("a", "b"))]
    result = compute("sigma_l", data)
    assert result.value == pytest.approx((0.4 + 0.2 / 3) / 2, abs=1e-12) and result.n == 2
    assert result.network == "fake-lpips"


def test_sigma_l_agree_keeps_the_samples_whose_success_agrees_across_seeds():
    def run(values, success):
        cfs = torch.stack([torch.full((3, 4, 4), v, dtype=torch.float64) for v in values])
        return make_data(blank(3), cfs, pd.DataFrame({"id": ["a", "b", "c"], "success": success}))

    data = run([0.0, 0.1, 0.2], [True, False, True])
    data.other_seeds = [run([0.2, 0.2, 0.5], [True, False, False]), run([0.6, 0.1, 0.3], [True, False, True])]
    every, agree = compute("sigma_l", data), compute("sigma_l_agree", data)
    assert every.n == 3 and agree.n == 2  # c succeeded under two seeds of three: out
    assert agree.value == pytest.approx((0.4 + 0.2 / 3) / 2, abs=1e-12)
    assert every.value == pytest.approx((0.4 + 0.2 / 3 + 0.2) / 3, abs=1e-12)


# -- DiME's ℓ1 ------------------------------------------------------------------------
def test_l1_plus_is_the_mean_absolute_change_of_successful_counterfactuals():
    originals = blank(3)
    cfs = originals.clone()
    cfs[0, 0, 0, 0] += 0.48  # 0.48 / 48 entries = 0.01
    cfs[1] += 0.25  # every entry: 0.25, but this one failed
    cfs[2, 1] -= 0.3  # one channel of three: 0.1
    table = pd.DataFrame({"success": [True, False, True]})
    result = compute("l1_plus", make_data(originals, cfs, table))
    assert result.value == pytest.approx((0.01 + 0.1) / 2, abs=1e-12) and result.n == 2


# -- every metric: batch size and repetition ------------------------------------------------
def random_case(n: int = 23):
    g = torch.Generator().manual_seed(1)
    originals = torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64)
    cfs = (originals + 0.3 * torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64)).clamp(0, 1)
    originals[:, 0, 0, :4] = (torch.rand(n, 4, generator=g) > 0.5).double()
    cfs[:, 0, 0, :4] = (torch.rand(n, 4, generator=g) > 0.5).double()
    table = pd.DataFrame({
        "id": [f"s{i:03d}" for i in range(n)],
        "success": (torch.rand(n, generator=g) > 0.3).tolist(),
        "label": (torch.rand(n, generator=g) > 0.5).long().tolist(),
    })
    table["pred"] = [int(v > 0) for v in ChannelSum()(originals).tolist()]
    return originals, cfs, table


@pytest.mark.parametrize("name", ["fid", "sfid", "precision", "recall", "fva", "fs", "mnac", "cd", "cd_spec",
                                  "cout", "s3", "sigma_l", "l1_plus"])
def test_batch_size_independent_and_deterministic(name):
    originals, cfs, table = random_case()

    def data(batch_size):
        d = make_data(originals, cfs, table, batch_size=batch_size, classifier=ChannelSum())
        d.other_seeds = [make_data(originals, cfs.flip(0), table, batch_size=batch_size)]
        return d

    one, seven, again = compute(name, data(1)), compute(name, data(7)), compute(name, data(7))
    assert one.n == seven.n > 0 and not math.isnan(one.value)
    assert seven.value == pytest.approx(one.value, rel=1e-12, abs=1e-12)
    assert seven.ci == pytest.approx(one.ci, rel=1e-12, abs=1e-12)
    assert again.to_dict() == seven.to_dict()


def test_network_outputs_are_computed_once_per_run():
    originals, cfs, table = random_case()
    data = make_data(originals, cfs, table, batch_size=5)
    for name in ("fid", "sfid", "precision", "recall"):
        compute(name, data)
    assert data.network("features").module.calls == 2 * math.ceil(len(table) / 5)


# -- the real synthfaces stand-ins, where their zoo weights exist ------------------------
@pytest.fixture(scope="module")
def synthfaces_case():
    """8 synthfaces test images and counterfactuals made by intervention: Smiling
    toggled, nothing else redrawn, so the oracle should see one attribute change."""
    from cfbench.classifiers import load_classifier
    from cfbench.datasets import get_dataset

    classifier = load_classifier("synthfaces-densenet", "Smiling")
    networks = {role: EvalData(pd.DataFrame(), None).network(role) for role in ("oracle", "features", "simsiam",
                                                                                 "perceptual")}
    split = get_dataset("synthfaces").split("test")
    indices = list(range(8))
    ids, originals, labels = split.batch(indices)
    _, cfs, _ = split.intervene_batch(indices, {"Smiling": "flip"})
    with torch.no_grad():
        logits, cf_logits = classifier(originals).reshape(-1), classifier(cfs).reshape(-1)
    pred = (logits > 0).long()
    table = pd.DataFrame({
        "id": ids, "label": labels[:, get_dataset("synthfaces").attributes.index("Smiling")].long().tolist(),
        "pred": pred.tolist(), "target": (1 - pred).tolist(), "success": ((cf_logits > 0).long() == 1 - pred).tolist(),
    })
    return originals, cfs, table, classifier, networks


def test_synthfaces_stand_ins(synthfaces_case):
    originals, cfs, table, classifier, networks = synthfaces_case

    def data(counterfactuals):
        return EvalData(table=table, load=lambda rows: (originals[rows], counterfactuals[rows]), classifier=classifier,
                        batch_size=8, dataset="synthfaces", attribute="Smiling", _loaded=dict(networks))

    changed = data(cfs)
    assert table["success"].sum() >= 5
    mnac = compute("mnac", changed)
    assert mnac.value == pytest.approx(1.0, abs=0.25) and mnac.network == "synthfaces-oracle (stand-in)"
    for name in ("fid", "sfid", "precision", "recall", "cd", "cd_spec", "cout", "s3"):
        result = compute(name, changed)
        assert math.isfinite(result.value), name
        assert name == "cout" or result.network.endswith("(stand-in)"), name
    assert compute("cout", changed).value > 0  # the toggled smile moves the classifier to the target
    same = data(originals.clone())
    same.other_seeds = [data(originals.clone())]
    assert compute("mnac", same).value == 0 and compute("s3", same).value == pytest.approx(1.0, abs=1e-6)
    assert compute("sigma_l", same).value == pytest.approx(0.0, abs=1e-6)
    assert compute("fid", same).value == pytest.approx(0.0, abs=1e-3)
