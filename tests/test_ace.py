"""The `ace` method on a tiny random guided-diffusion UNet (CPU): the attack through the
diffusion filter lowers the class loss (PGD, GD, C&W), checkpointing gives the same
gradients, the mask and RePaint refinement leave every pixel outside the mask as it was
(also on a run record), the counters, the Table 5 variants and the paper's settings."""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tests.fixtures.toy  # noqa: F401  (registers the toy dataset and classifier)
from cfbench.classifiers import CLASSIFIERS
from cfbench.handles import make_handle
from cfbench.methods import METHODS
from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData
from cfbench.methods.ace import ACE, ACEConfig, unet_calls
from cfbench.randomness import SampleRNG
from cfbench.runner import Run, RunSpec
from tests.conftest import load_benchmark
from tests.fixtures.tiny_backbone import save_tiny_ddpm
from tests.test_dime import Brightness, Linear, bright_and_dark, tiny_backbone


def method(**overrides) -> ACE:
    """ACE on the tiny backbone (20 respaced steps), τ = 2, 4 PGD iterations, 3 px dilation."""
    config = dataclasses.replace(ACEConfig(), **{"respacing": "20", "tau": 2, "attack_iterations": 4,
                                                 "dilation": 3, **overrides})  # fmt: skip
    return ACE(config, "cpu", backbone=tiny_backbone())


def rng(n: int, seed: int = 0) -> SampleRNG:
    return SampleRNG(seed, [str(i) for i in range(n)])


def explain(m: ACE, images: torch.Tensor, targets: torch.Tensor, network=None, seed: int = 0):
    return m.explain(images, targets, make_handle("white-box", network or Brightness(), len(images)), rng(len(images), seed))


def corner_classifier() -> Linear:
    """A logit that reads only the top-left 4×4 corner of a 16 px image."""
    weight = torch.zeros(1, 3, 16, 16)
    weight[..., :4, :4] = 1.0
    return Linear(weight)


class CornerBrightness(torch.nn.Module):
    """toy-corner: 40 · (mean of the top-left 4×4 corner − 0.5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[..., :4, :4].mean(dim=(1, 2, 3)) - 0.5)


def toy_corner(attribute: str) -> torch.nn.Module:
    return CornerBrightness()


toy_corner.attributes = ("Bright",)
if "toy-corner" not in CLASSIFIERS:
    CLASSIFIERS.register("toy-corner", description="mean intensity of a corner (test fixture)", paper="tests")(toy_corner)


def class_loss(m: ACE, images: torch.Tensor, targets: torch.Tensor, network) -> torch.Tensor:
    """BCE of the classifier on F_τ(images), per sample (a deterministic filter)."""
    denoiser = m.backbone.denoiser(len(images))
    filtered = m.filter(images, denoiser, rng(len(images)), torch.arange(len(images)))
    return F.binary_cross_entropy_with_logits(network(filtered), targets.float(), reduction="none")


@pytest.mark.parametrize("attack,step", [("pgd", 8.0), ("gd", 400.0), ("cw", 8000.0)])
def test_the_attack_through_the_filter_lowers_the_class_loss(attack, step):
    m = method(attack=attack, attack_step=step, stochastic=False, attack_iterations=6)
    x, y = bright_and_dark(), torch.tensor([0, 1, 0, 1])
    network = Brightness(gain=10.0)
    pre = m.pre_explanation(x, y, make_handle("white-box", network, 4), m.backbone.denoiser(4), rng(4))
    assert 0 <= pre.min() and pre.max() <= 1
    before, after = class_loss(m, x, y, network), class_loss(m, pre, y, network)
    assert (after < before - 0.1).all(), (before, after)


def test_checkpointing_gives_the_same_gradients():
    x, y = bright_and_dark(), torch.tensor([0, 1, 0, 1])
    adv = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    grads = []
    for every in (0, 1, 2):
        m = method(tau=3, checkpoint_every=every)
        handle = make_handle("white-box", Brightness(), 4)
        grads.append(m.loss_gradient(adv, x, y, handle, m.backbone.denoiser(4), rng(4), torch.arange(4)))
    assert grads[0].abs().sum() > 0
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0])


def test_pixels_outside_the_mask_are_the_inputs():
    x = torch.full((2, 3, 16, 16), 0.2)
    # GD (no sign): the change fades with the distance to the pixels the classifier reads
    result = explain(method(attack="gd", attack_iterations=5, attack_step=2000.0), x, torch.ones(2, dtype=torch.long),
                     corner_classifier())
    mask = result.masks
    assert mask.shape == (2, 1, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[..., :4, :4].all() and mask.mean() < 0.5  # the corner the classifier reads, and little else
    outside = (mask == 0).expand_as(x)
    assert torch.equal(result.images[outside], x[outside])
    assert not torch.equal(result.images[~outside], x[~outside])
    assert result.pre_explanations.shape == x.shape


def test_an_unchanged_image_gives_an_empty_mask_not_nan():
    m = method()
    x = bright_and_dark()
    assert m.mask(x, x).sum() == 0
    assert torch.isfinite(m.mask(x, x)).all()


def test_counters_follow_the_algorithm():
    m = method(tau=2, attack_iterations=4)
    result = explain(m, bright_and_dark(), torch.tensor([0, 1, 0, 1]))
    forward, backward = unet_calls(m.config)
    assert (forward, backward) == (4 * 2 + 2, 4 * 2)
    assert result.counters["diffusion_evals"].tolist() == [forward] * 4
    assert result.counters["diffusion_gradients"].tolist() == [backward] * 4
    assert result.counters["classifier_gradients"].tolist() == [4] * 4
    assert result.counters["classifier_queries"].tolist() == [5] * 4  # 4 iterations + the final check


def test_table5_variants_and_the_null_edit():
    x, y = bright_and_dark(), torch.tensor([0, 1, 0, 1])
    pre = explain(method(variant="pre_explanation"), x, y)
    assert torch.equal(pre.images, pre.pre_explanations) and pre.masks is None
    assert pre.counters["diffusion_evals"].tolist() == [unet_calls(method(variant="pre_explanation").config)[0]] * 4
    full = method(variant="filtered_full")
    result = explain(full, x, y)
    full_tau = int(full.backbone.process.timestep_map[1]) + 1  # every training step from respaced index τ−1 = 1
    assert result.counters["diffusion_evals"].tolist() == [unet_calls(full.config, full_tau)[0]] * 4
    null = method().null_edit()
    assert null.config.variant == "unconditional"
    unguided = explain(null, x, y)
    assert unguided.counters["diffusion_gradients"].sum() == 0 and unguided.counters["classifier_gradients"].sum() == 0
    assert torch.equal(unguided.pre_explanations, x) and not torch.equal(unguided.images, x)


def test_paper_settings_by_distance_dataset_and_query():
    cls = METHODS.get("ace")
    assert cls is ACE
    l1, l2 = cls.resolve_config("celeba", None, {}), cls.resolve_config("celeba", None, {"distance": "l2"})
    assert (l1.lambda_d, l2.lambda_d, l1.mask_threshold, l2.mask_threshold) == (0.001, 0.1, 0.15, 0.15)
    assert (l1.tau, l1.respacing, l1.attack_iterations, l1.attack_step, l1.attack_epsilon) == (5, "50", 50, 1.0, 255.0)
    hq = {q: cls.resolve_config("celebahq", None, {"distance": "l2"}, q).mask_threshold for q in ("smile", "age")}
    assert hq == {"smile": 0.1, "age": 0.05}
    assert cls.resolve_config("celebahq", None, {}, "age").mask_threshold == 0.15
    assert cls.resolve_config("celebahq", None, {"distance": "l2", "mask_threshold": "0.2"}, "age").mask_threshold == 0.2
    assert cls.resolve_config("celeba", None, {"distance": "l2", "lambda_d": "0.5"}).lambda_d == 0.5
    assert cls.resolve_config("celebahq", None, {}).respacing == "25"
    tuned = {d: cls.resolve_config("synthfaces", "quick", {"distance": d}).lambda_d for d in ("l1", "l2")}
    assert tuned == {"l1": 0.00003, "l2": 0.001}
    assert cls.resolve_config("synthfaces", "quick", {"lambda_d": "0.001"}).lambda_d == 0.001


def test_outside_the_mask_a_run_record_holds_the_input(tmp_path):
    weights = save_tiny_ddpm(tmp_path / "tiny-ddpm.pt")
    overrides = {"backbone": "tiny-ddpm", "weights_path": str(weights), "respacing": "20", "tau": "2",
                 "attack": "gd", "attack_iterations": "4", "attack_step": "2000", "dilation": "3"}
    job = Run(RunSpec(method="ace", dataset="toy", attr="bright", classifier="toy-corner", n=4, batch_size=4, device="cpu",
                      overrides=overrides, out=tmp_path / "run", progress=False))  # fmt: skip
    job.execute(evaluate=False)
    path = job.record.path
    ids = sorted(p.stem for p in (path / "counterfactuals").glob("*.png"))
    assert len(ids) == 4 and all((path / "pre_explanations" / f"{i}.png").exists() for i in ids)
    area = []
    for i in ids:
        original, cf = (np.asarray(Image.open(path / d / f"{i}.png")) for d in ("originals", "counterfactuals"))
        mask = np.asarray(Image.open(path / "masks" / f"{i}.png")) > 127
        area.append(mask.mean())
        assert np.array_equal(cf[~mask], original[~mask]), i
    assert 0 < np.mean(area) < 1
    table = job.record.read_table().set_index("id").loc[ids]
    np.testing.assert_allclose(table["mask_area"].to_numpy(), area)
    result = METRICS.get("mask_area")().compute(EvalData(table=table.reset_index(), load=None))
    assert result.n == 4 and result.value == pytest.approx(100 * np.mean(area))


def test_networks_see_fixed_size_chunks_and_padding_is_not_counted():
    """The UNet and the classifier always run on ``network_batch`` rows (a network's
    per-image arithmetic depends on its batch size, and PGD's sign amplifies it); the
    zero rows that pad a chunk are not counted as queries or gradients."""
    m = method(network_batch=4, attack_iterations=2)
    seen = {"unet": set(), "classifier": set()}
    unet = m.backbone.model

    class Spy(torch.nn.Module):
        def __init__(self, inner, key):
            super().__init__()
            self.inner, self.key = inner, key

        def forward(self, *args):
            seen[self.key].add(args[0].shape[0])
            return self.inner(*args)

    m.backbone.model = Spy(unet, "unet")
    for n in (1, 3, 6):
        result = explain(m, bright_and_dark(6)[:n], torch.tensor([0, 1, 0, 1, 0, 1])[:n], Spy(Brightness(), "classifier"))
        assert result.counters["classifier_queries"].tolist() == [3] * n  # 2 iterations + the final check
        assert result.counters["classifier_gradients"].tolist() == [2] * n
    assert seen == {"unet": {4}, "classifier": {4}}


@pytest.mark.parametrize("attr", ["bright", "Bright"])
def test_a_run_resolves_the_queries_threshold_by_query_or_attribute_name(attr, tmp_path, monkeypatch):
    monkeypatch.setitem(ACE.THRESHOLDS, ("toy", "l1", "bright"), 0.4)
    weights = save_tiny_ddpm(tmp_path / "tiny-ddpm.pt")
    job = Run(RunSpec(method="ace", dataset="toy", attr=attr, n=1, device="cpu", out=tmp_path / "run", progress=False,
                      overrides={"backbone": "tiny-ddpm", "weights_path": str(weights), "respacing": "20"}))
    assert job.config.mask_threshold == 0.4


def test_the_refinement_diagnostic_reads_the_failures_of_a_run_record(tmp_path, monkeypatch):
    weights = save_tiny_ddpm(tmp_path / "tiny-ddpm.pt")
    overrides = {"backbone": "tiny-ddpm", "weights_path": str(weights), "respacing": "20", "tau": "2",
                 "attack_iterations": "2", "attack_step": "0", "dilation": "3"}  # no attack: x′ = x, every sample fails
    job = Run(RunSpec(method="ace", dataset="toy", attr="bright", classifier="toy-corner", n=3, batch_size=3, device="cpu",
                      overrides=overrides, out=tmp_path / "run", progress=False))  # fmt: skip
    job.execute(evaluate=False)
    module = load_benchmark("ace_refinement")
    record = tmp_path / "refinement.json"
    monkeypatch.setattr(sys, "argv", ["ace_refinement", str(job.record.path), "--draws", "2", "--thresholds", "0.15",
                                      "0.05", "--record", str(record)])  # fmt: skip
    module.main()
    result = json.loads(record.read_text())
    assert result["failed"] == 3 and result["pre_explanation_crossed_pct"] == 0.0
    assert len(result["filtered_crossed_pct"]) == 2
    for threshold in ("0.15", "0.05"):  # x′ = x: an empty mask, the refinement returns x, which does not flip
        assert result["refined_flipped_pct"][threshold] == {"mask_area_pct": 0.0, "flipped": [0.0, 0.0]}
