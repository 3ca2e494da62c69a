"""The `dime` method on a tiny random guided-diffusion UNet (CPU): the guided step's math,
the gradients of eq. 8, retries with the next classifier scale, the O(τ²) UNet count and
the Table 2 variants; through `cfbench run`, the one-line error of a missing zoo DDPM and
the tuned synthfaces config on the shipped DDPM and classifier."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cfbench import losses
from cfbench.diffusion.backbones import Backbone, BackboneRecord
from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.unet import UNet, UNetConfig
from cfbench.errors import CfbenchError
from cfbench.handles import make_handle
from cfbench.losses import FeatureDistance
from cfbench.methods import METHODS
from cfbench.methods.dime import DiME, DiMEConfig, unet_evaluations
from cfbench.randomness import SampleRNG
from tests.conftest import assert_one_error_line, invoke

TINY = UNetConfig(image_size=16, model_channels=32, channel_mult=(1,), attention_resolutions=(), num_res_blocks=1)


TINY_RECORD = BackboneRecord("tiny", "ddpm", "", 16, {"num_timesteps": 100, "schedule": "linear",
                                                      "variance": "learned_range"})


def tiny_backbone() -> Backbone:
    torch.manual_seed(0)
    model = UNet(TINY)
    nn.init.normal_(model.out[-1].weight, std=0.02)  # the zero-initialised output layer, made non-trivial
    return Backbone(TINY_RECORD, model.eval(), TINY_RECORD.make_process("20"))


class Brightness(nn.Module):
    """logit = gain · (mean of the [0, 1] image − 0.5)."""

    def __init__(self, gain: float = 50.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return self.gain * (x.mean(dim=(1, 2, 3)) - 0.5)


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, x):
        return (x * self.weight).flatten(1).sum(1)


def method(backbone: Backbone | None = None, perceptual: nn.Module | None = None, **overrides) -> DiME:
    """DiME on the tiny backbone with τ = 3 and no L_perc unless overridden."""
    config = dataclasses.replace(DiMEConfig(), **{"tau": 3, "lambda_p": 0.0, **overrides})
    return DiME(config, "cpu", backbone=backbone or tiny_backbone(), perceptual=perceptual)


def bright_and_dark(n: int = 4, size: int = 16) -> torch.Tensor:
    """Rows alternate 0.9 (the Brightness classifier says 1) and 0.1 (it says 0)."""
    levels = torch.tensor([0.9, 0.1] * (n // 2))
    return levels.view(n, 1, 1, 1).expand(n, 3, size, size).clone()


def explain(m: DiME, images: torch.Tensor, targets: torch.Tensor, network: nn.Module | None = None, seed: int = 0):
    rng = SampleRNG(seed, [str(i) for i in range(len(images))])
    return m.explain(images, targets, make_handle("white-box", network or Brightness(), len(images)), rng)


# -- the guided step (eq. 4) and the gradients (eq. 8) ---------------------------------------------
@pytest.mark.parametrize("i", [5, 0])
def test_guided_step_matches_a_hand_computed_case(i):
    diffusion = GaussianDiffusion.from_config(100, "linear", "20")
    g = torch.Generator().manual_seed(1)
    z, grads, noise = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    output = torch.cat([torch.randn(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g) * 2 - 1], dim=1)
    seen = []

    def model(x, t):
        seen.append(t.tolist())
        return output

    t = torch.full((2,), i)
    step = diffusion.p_step(model(z, diffusion.model_timesteps(t)), t, z, noise, shift=grads)
    assert seen == [[int(diffusion.timestep_map[i])] * 2]  # one call, at the original timestep
    assert torch.equal(step["mean"], step["unguided_mean"] - step["variance"] * grads)

    # by hand, in float64, from the linear schedule of T = 100 (β from 1e-3 to 0.2) kept at the respaced steps
    betas = np.linspace(1e-3, 0.2, 100)
    kept = diffusion.timestep_map.numpy()
    ac = np.cumprod(1 - betas)[kept[i]]
    ac_prev = np.cumprod(1 - betas)[kept[i - 1]] if i else 1.0
    beta = 1 - ac / ac_prev
    ac1, ac0 = np.cumprod(1 - betas)[kept[1]], np.cumprod(1 - betas)[kept[0]]
    # β̃ (at index 0, where β̃ = 0, clipped to β̃_1)
    tilde = beta * (1 - ac_prev) / (1 - ac) if i else (1 - ac1 / ac0) * (1 - ac0) / (1 - ac1)
    zd, eps, v = z.double(), output[:, :3].double(), output[:, 3:].double()
    x0 = (zd / np.sqrt(ac) - np.sqrt(1 / ac - 1) * eps).clamp(-1, 1)
    mu = beta * np.sqrt(ac_prev) / (1 - ac) * x0 + (1 - ac_prev) * np.sqrt(1 - beta) / (1 - ac) * zd
    log_var = (v + 1) / 2 * np.log(beta) + (1 - v) / 2 * np.log(tilde)
    mean = mu - torch.exp(log_var) * grads.double()
    sample = mean + (torch.exp(0.5 * log_var) * noise.double() if i else 0)
    assert torch.allclose(step["mean"].double(), mean, atol=1e-5)
    assert torch.allclose(step["sample"].double(), sample, atol=1e-5)


def test_class_and_perceptual_gradients_and_their_signs():
    m = method(perceptual=FeatureDistance(nn.Identity()), lambda_p=3.0)
    weight = torch.randn(1, 3, 16, 16)
    handle = make_handle("white-box", Linear(weight), 2)
    x = torch.rand(2, 3, 16, 16) * 1.4 - 0.7  # x_t = x + 0.3 stays inside the clamp to [-1, 1]
    y = torch.tensor([1, 0])
    grad, logits = m._gradient(x, y, torch.arange(2), 8.0, handle, (16, 16), None, None)
    # logit = w·(x + 1)/2: −8·(signed logit) has gradient −4w for target 1, +4w for target 0
    assert torch.allclose(grad, torch.stack([-4 * weight[0], 4 * weight[0]]), atol=1e-6)
    assert logits.shape == (2,) and handle.counters()["classifier_gradients"].tolist() == [1, 1]
    # L_perc with identity features: 3·Σ_b mean((u_t − u)²), u = (x + 1)/2 -> 3·(u_t − u)/D
    target = m.perceptual.features(x)
    x_t = x + 0.3
    grad, logits = m._gradient(x_t, y, torch.arange(2), 0.0, None, (16, 16), m.perceptual, target)
    assert logits is None
    assert torch.allclose(grad, 3 * ((x_t + 1) / 2 - (x + 1) / 2) / x[0].numel(), atol=1e-7)
    # without use_logits: −s·log σ(signed logit)
    m.config = dataclasses.replace(m.config, use_logits=False)
    grad, logits = m._gradient(x, y, torch.arange(2), 8.0, handle, (16, 16), None, None)
    signed = torch.where(y == 1, logits, -logits)
    expected = -8 * torch.sigmoid(-signed).view(2, 1, 1, 1) * torch.stack([weight[0], -weight[0]]) / 2
    assert torch.allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize("variant, factor", [("dime", True), ("direct", False), ("naive", True)])
def test_the_step_uses_clean_gradients_over_sqrt_alpha_and_l1_on_z(monkeypatch, variant, factor):
    """τ = 1: one guided step at index 0 with x_t = x: g = ∇L_class/√ᾱ_0 (direct: without 1/√ᾱ_0)
    + η·sign(z − x)."""
    calls = []
    weight = torch.randn(1, 3, 16, 16)
    m = method(tau=1, classifier_scales=(8.0,), variant=variant)
    real = m.backbone.process.p_step

    def recording(output, t, z, noise=None, generator=None, shift=None):
        calls.append((z.clone(), t.clone(), shift.clone()))
        return real(output, t, z, noise, generator, shift)

    monkeypatch.setattr(m.backbone.process, "p_step", recording)
    images = bright_and_dark(2)
    explain(m, images, torch.tensor([0, 1]), Linear(weight))
    (z, t, grads), = calls
    x = images * 2 - 1
    class_grad = torch.stack([4 * weight[0], -4 * weight[0]])  # targets 0 and 1, scale 8
    sqrt_ac = float(m.backbone.process.sqrt_alphas_cumprod[0])
    expected = class_grad / (sqrt_ac if factor else 1.0) + 0.05 * torch.sign(z - x)
    assert t.tolist() == [0, 0] and torch.allclose(grads, expected, atol=1e-5)


# -- retries, counters and variants ----------------------------------------------------------------
def test_only_unflipped_instances_get_the_next_scale(monkeypatch):
    calls = []
    real = DiME._guidance

    def recording(self, x, y, feats, scale, *rest):
        hook = real(self, x, y, feats, scale, *rest)

        def first_call_recorded(z, i, rows):
            if i == self.config.tau - 1:
                calls.append((rows.tolist(), scale))
            return hook(z, i, rows)

        return first_call_recorded

    monkeypatch.setattr(DiME, "_guidance", recording)
    tau = 3
    m = method(tau=tau)
    # bright rows already show the target 1 and stay bright: they succeed with the first scale;
    # dark rows are far below the boundary: no scale flips them
    result = explain(m, bright_and_dark(4), torch.ones(4, dtype=torch.long))
    assert calls == [([0, 1, 2, 3], 8.0), ([1, 3], 10.0), ([1, 3], 15.0)]
    assert result.success.tolist() == [True, False, True, False]
    per_scale = unet_evaluations(tau)
    assert result.counters["diffusion_evals"].tolist() == [per_scale, 3 * per_scale] * 2
    assert result.counters["classifier_gradients"].tolist() == [tau, 3 * tau] * 2
    assert result.counters["classifier_queries"].tolist() == [tau + 1, 3 * (tau + 1)] * 2  # + the check per scale


@pytest.mark.parametrize("sampling", [True, False])
def test_unet_evaluations_are_counted_exactly(sampling):
    assert unet_evaluations(60) == 60 + sum(range(1, 60)) == 1830  # ≈1.8k per scale at the paper's τ (DiME §3.2)
    tau = 4
    m = method(tau=tau, classifier_scales=(8.0,), use_sampling_on_x_t=sampling)
    rows_seen = []
    m.backbone.model.register_forward_hook(lambda module, args, out: rows_seen.append(args[0].shape[0]))
    result = explain(m, bright_and_dark(2), torch.tensor([0, 1]))
    evals = result.counters["diffusion_evals"]
    assert evals.tolist() == [tau * (tau + 1) // 2] * 2 == [10, 10]
    assert sum(rows_seen) == int(evals.sum())


def test_unconditional_takes_no_gradient_and_one_pass():
    m = method(tau=4, variant="unconditional")
    result = explain(m, bright_and_dark(2), torch.tensor([0, 1]))
    counters = result.counters
    assert counters["classifier_gradients"].tolist() == [0, 0]
    assert counters["diffusion_evals"].tolist() == [4, 4] == [unet_evaluations(4, "unconditional")] * 2
    assert counters["classifier_queries"].tolist() == [1, 1]  # the success check only


@pytest.mark.parametrize("variant", ["direct", "naive"])
def test_direct_and_naive_run_without_the_clean_estimate_chain(variant):
    tau = 4
    m = method(tau=tau, classifier_scales=(8.0, 10.0), variant=variant)
    images = bright_and_dark(2)
    result = explain(m, images, torch.tensor([0, 1]))
    assert result.images.shape == images.shape and torch.isfinite(result.images).all()
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert result.success.tolist() == [False, False]  # the dark row stays dark, the bright one bright
    assert result.counters["diffusion_evals"].tolist() == [2 * tau] * 2  # no x_t chain with lambda_p = 0
    # naive: the gradient at the input, once per scale; direct: one per step
    assert result.counters["classifier_gradients"].tolist() == [2 if variant == "naive" else 2 * tau] * 2


@pytest.mark.parametrize("variant", ["dime", "direct"])
def test_perceptual_term_runs_and_direct_then_needs_the_chain(variant):
    tau = 3
    perceptual = FeatureDistance(nn.AvgPool2d(4))
    m = method(tau=tau, classifier_scales=(8.0,), variant=variant, lambda_p=30.0, perceptual=perceptual)
    result = explain(m, bright_and_dark(2), torch.tensor([0, 1]))
    assert torch.isfinite(result.images).all()
    assert result.counters["diffusion_evals"].tolist() == [unet_evaluations(tau, variant, 30.0)] * 2 == [6, 6]


def test_early_stop_returns_x_t_as_soon_as_it_fools_the_classifier():
    tau = 3
    m = method(tau=tau, classifier_scales=(8.0,), variant="early_stop")
    images = bright_and_dark(2)
    result = explain(m, images, torch.tensor([1, 1]))
    # row 0 is already classified as 1, so x_t = x fools the classifier at the first step
    assert torch.allclose(result.images[0], images[0], atol=1e-6) and result.success.tolist() == [True, False]
    assert result.counters["diffusion_evals"].tolist() == [0, unet_evaluations(tau)]


def test_inputs_at_another_resolution_are_resized_to_the_ddpm_and_back():
    m = method(tau=2, classifier_scales=(8.0,))
    images = bright_and_dark(2, size=32)
    result = explain(m, images, torch.tensor([0, 1]))
    assert result.images.shape == images.shape and 0 <= result.images.min() and result.images.max() <= 1


# -- configuration -----------------------------------------------------------------------------------
def test_config_defaults_sections_datasets_and_profiles():
    cls = METHODS.get("dime")
    assert cls is DiME and cls.access == "white-box"
    config = DiMEConfig()
    assert (config.tau, config.respacing, config.classifier_scales) == (60, "200", (8.0, 10.0, 15.0))
    assert (config.lambda_p, config.perceptual_layer, config.l1_weight, config.use_logits) == (30.0, 18, 0.05, True)
    assert config.use_sampling_on_x_t and config.variant == "dime" and config.backbone == "ddpm-celeba128"
    assert all(f.metadata.get("section") for f in dataclasses.fields(DiMEConfig))
    synth = cls.resolve_config("synthfaces", None, {})
    assert synth.backbone == "synthfaces-ddpm" and synth.perceptual == "synthfaces-vgg"
    assert cls.resolve_config("synthfaces", "quick", {}).classifier_scales == (synth.classifier_scales[-1],)
    assert (cls.resolve_config("synthfaces", "quick", {}).tau, cls.resolve_config("celeba", "quick", {}).tau) == (7, 15)
    assert cls.resolve_config("synthfaces", "quick", {"tau": "12"}).tau == 12
    assert max(cls.resolve_config("celebahq", None, {}).classifier_scales) > 15
    quick = cls.resolve_config("celeba", "quick", {})
    assert (quick.respacing, quick.tau, quick.classifier_scales) == ("50", 15, (15.0,))
    assert cls.resolve_config("celeba", "quick", {"classifier_scales": "8,9"}).classifier_scales == (8.0, 9.0)
    with pytest.raises(CfbenchError, match="variant='fancy'"):
        DiME(dataclasses.replace(config, variant="fancy"), backbone=tiny_backbone())
    with pytest.raises(CfbenchError, match="tau=20 must be in 1..19"):
        DiME(dataclasses.replace(config, tau=20, lambda_p=0.0), backbone=tiny_backbone())


def test_missing_vgg19_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))
    with pytest.raises(CfbenchError, match=r"vgg19-imagenet: vgg19-dcbb9e9d.pth not found at .*download.pytorch"):
        DiME(dataclasses.replace(DiMEConfig(), tau=3), backbone=tiny_backbone())


def test_vgg19_features_load_strictly_from_a_torchvision_file(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}
    path = tmp_path / "vgg19.pth"
    torch.save({**state, "classifier.6.bias": torch.zeros(1000)}, path)
    distance = losses.vgg19_features(18, path)
    assert len(distance.trunk) == 18 and isinstance(distance.trunk[-1], nn.ReLU)  # relu3_4
    assert torch.equal(distance.trunk[16].weight, state["features.16.weight"])
    assert distance.features(torch.zeros(1, 3, 32, 32)).shape == (1, 256 * 8 * 8)
    del state["features.34.bias"]
    torch.save(state, path)
    with pytest.raises(CfbenchError, match=r"does not fit torchvision VGG19 features: missing key 'features.34.bias'"):
        losses.vgg19_features(18, path)


def test_missing_zoo_ddpm_is_one_error_line(workdir):
    missing = workdir / "synthfaces-ddpm.safetensors"  # stays missing once the zoo DDPM is trained
    result = invoke("run", "--method", "dime", "--dataset", "synthfaces", "--attr", "smile", "--n", "1",
                    "--no-progress", "--device", "cpu", "--set", f"weights_path={missing}")
    assert result.exit_code != 0
    line = assert_one_error_line(result.stderr, result.stdout)
    assert "zoo weights 'synthfaces-ddpm' not found" in line and "cfbench zoo train synthfaces-ddpm" in line
    assert not (workdir / "runs").exists(), "the run directory is created only once the method has loaded"


def test_shipped_synthfaces_config_flips_real_faces_keeping_them(workdir):
    """The tuned synthfaces config on the shipped zoo DDPM and classifier (quick profile,
    4 test images, ~40 s): the counterfactuals flip and stay the same faces."""
    result = invoke("run", "--method", "dime", "--dataset", "synthfaces", "--attr", "smile", "--n", "4",
                    "--profile", "quick", "--no-progress", "--device", "cpu", "--protocol", "cfbench-v1",
                    "--metric", "fva", "--metric", "mnac", "--out", "dime")  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((workdir / "dime" / "metrics.json").read_text())
    assert metrics["fr"]["value"] >= 75  # 3 of 4 at least (93.8% on 16 images when tuned)
    assert metrics["fva"]["value"] >= 50 and 0 < metrics["mnac"]["value"] < 6  # same person, a few attributes
    table = pd.read_csv(workdir / "dime" / "samples.csv")
    assert (table["diffusion_evals"] == unet_evaluations(7)).all()  # one pass at the last scale, τ = 7


# -- pinned outputs: DiME on the toolkit's loop gives what its own loop gave --------------------------
class GlobalNoise:
    """Noise from torch's global generator, drawn in the order the chains ask for it: the
    order DiME's own loop drew ``randn_like`` in before it ran on `cfbench.diffusion.sampling`."""

    def randn(self, shape, rows=None, device="cpu", dtype=torch.float32):
        return torch.randn(4 if rows is None else len(rows), *shape, device=device, dtype=dtype)


PINNED = {  # the cases of tests/fixtures/dime_pinned.pt, recorded with DiME's loop before the toolkit (τ = 4)
    "dime": dict(classifier_scales=(2.0, 40.0), lambda_p=30.0, perceptual=True),
    "dime_mean_chain": dict(classifier_scales=(40.0,), use_sampling_on_x_t=False),
    "early_stop": dict(variant="early_stop", classifier_scales=(40.0,)),
    "direct": dict(variant="direct", lambda_p=30.0, perceptual=True, classifier_scales=(40.0,)),
    "naive": dict(variant="naive", classifier_scales=(40.0,)),
    "unconditional": dict(variant="unconditional"),
    "resized": dict(classifier_scales=(40.0,), size=32),
}


@pytest.mark.parametrize("case", list(PINNED))
def test_outputs_are_pinned_to_those_of_dime_before_the_toolkit(case):
    expected = torch.load(Path(__file__).parent / "fixtures" / "dime_pinned.pt")[case]
    settings = dict(PINNED[case])
    size = settings.pop("size", 16)
    perceptual = FeatureDistance(nn.AvgPool2d(4)) if settings.pop("perceptual", False) else None
    m = method(tau=4, perceptual=perceptual, **settings)
    torch.manual_seed(0)
    result = m.explain(bright_and_dark(4, size), torch.tensor([0, 1, 1, 1]), make_handle("white-box", Brightness(), 4),
                       GlobalNoise())
    # to an ulp: float32 reductions round by the thread count (1.8e-7 at one thread)
    torch.testing.assert_close(result.images, expected["images"], atol=1e-6, rtol=0)
    assert result.success.tolist() == expected["success"].tolist()
    for name, counts in expected["counters"].items():
        assert result.counters[name].tolist() == counts.tolist(), name
