"""cfbench.diffusion.gaussian: schedules, respacing, posterior, samplers and L_hybrid,
against closed forms, an oracle model that knows x_0, and diffusers' schedulers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

from cfbench.diffusion.gaussian import (
    GaussianDiffusion,
    beta_schedule,
    discretized_gaussian_log_likelihood,
    space_timesteps,
)
from cfbench.diffusion.sampling import Denoiser, ddim_invert, denoise


def original_alphas_cumprod(schedule: str = "linear", steps: int = 1000) -> np.ndarray:
    return np.cumprod(1.0 - beta_schedule(schedule, steps))


def oracle(diffusion: GaussianDiffusion, x0: torch.Tensor, v: float | None = 0.0):
    """A model that knows x_0: returns the exact ε of x_t (and a constant v when the
    diffusion learns the variance). It is called with original timesteps."""
    ac = torch.zeros(diffusion.original_num_timesteps, dtype=torch.float64)
    ac[diffusion.timestep_map] = torch.from_numpy(diffusion.alphas_cumprod)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ac[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        if diffusion.variance == "learned_range":
            return torch.cat([eps, torch.full_like(eps, v)], dim=1)
        return eps

    return model


def analytic(learned: bool = False):
    """A smooth fake model with outputs that depend on x and the (original) timestep."""
    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = (t.to(x.dtype) / 1000).view(-1, *([1] * (x.ndim - 1)))
        eps = 0.6 * x + 0.3 * torch.sin(3 * x + s) - 0.2 * s
        return torch.cat([eps, torch.tanh(x - s)], dim=1) if learned else eps

    return model


class TinyNet(torch.nn.Module):
    def __init__(self, out_channels: int = 6) -> None:
        super().__init__()
        with torch.random.fork_rng():  # fixed weights, global RNG untouched
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x) + (t.float() / 1000).view(-1, 1, 1, 1))


# --- schedules and respacing -------------------------------------------------------


def test_linear_schedule_is_rescaled_to_the_step_count():
    betas = beta_schedule("linear", 500)
    assert betas.dtype == np.float64 and betas.shape == (500,)
    assert betas[0] == pytest.approx(2e-4, rel=1e-12) and betas[-1] == pytest.approx(0.04, rel=1e-12)
    np.testing.assert_allclose(np.diff(betas), (0.04 - 2e-4) / 499, rtol=1e-9)


def test_cosine_schedule_follows_nichol_dhariwal_eq17():
    steps = 1000
    betas = beta_schedule("cosine", steps)
    u = np.arange(steps + 1) / steps
    alpha_bar = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(betas, np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999), rtol=1e-12)
    assert betas.max() == 0.999  # capped at the end
    uncapped = betas < 0.999
    np.testing.assert_allclose(np.cumprod(1 - betas)[uncapped], (alpha_bar[1:] / alpha_bar[0])[uncapped], rtol=1e-9)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        beta_schedule("quadratic", 10)


def test_space_timesteps():
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    kept = space_timesteps(500, "200")
    assert len(kept) == 200 and {0, 499} <= kept
    assert space_timesteps(1000, 1000) == set(range(1000)) == space_timesteps(1000, "1000")
    # 300 steps in three sections of 100: strides 99/9 = 11, 99/14 and 99/19, accumulated then rounded
    # half to even (the 8th step of the second section accumulates 7 * 99/14 to 49.49999..., hence 149)
    expected = (list(range(0, 100, 11))
                + [100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171, 178, 185, 192, 199]
                + [200, 205, 210, 216, 221, 226, 231, 236, 242, 247, 252, 257, 263, 268, 273, 278, 283, 289, 294,
                   299])
    assert sorted(space_timesteps(300, "10,15,20")) == expected
    # 10 steps in sections of 4, 3, 3 (the first takes the remainder): stride 3/2 -> 0, 2, 3
    assert sorted(space_timesteps(10, "3,3,3")) == [0, 2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("spec, message", [
    ("ddim999", "cannot take exactly 999 of 1000"),
    ("1001", "cannot take 1001 steps from a section of 1000"),
    ("300,500,10", "cannot take 500 steps from a section of 333"),
    ("0", "at least one step"),
    ("ddimx", "bad respacing"),
    ("10,abc", "bad respacing"),
])
def test_space_timesteps_rejects_impossible_requests(spec: str, message: str):
    with pytest.raises(ValueError, match=message):
        space_timesteps(1000, spec)


def test_respacing_keeps_alphas_cumprod_and_maps_timesteps():
    full = original_alphas_cumprod()
    diffusion = GaussianDiffusion.from_config(1000, "linear", respacing="ddim50")
    assert diffusion.num_timesteps == 50 and diffusion.original_num_timesteps == 1000
    assert diffusion.timestep_map.dtype == torch.long
    assert diffusion.timestep_map.tolist() == list(range(0, 1000, 20))
    np.testing.assert_allclose(diffusion.alphas_cumprod, full[::20], rtol=1e-12)
    np.testing.assert_allclose(diffusion.betas[1:], 1 - full[20::20] / full[:-20:20], rtol=1e-12)
    assert diffusion.betas[0] == pytest.approx(1e-4, rel=1e-9)
    t = torch.tensor([0, 1, 49])
    assert diffusion.model_timesteps(t).tolist() == [0, 20, 980]

    uneven = GaussianDiffusion.from_config(300, "cosine", respacing="10,15,20")
    kept = sorted(space_timesteps(300, "10,15,20"))
    np.testing.assert_allclose(uneven.alphas_cumprod, original_alphas_cumprod("cosine", 300)[kept], rtol=1e-12)
    plain = GaussianDiffusion.from_config(100, "linear")  # no respacing: betas recomputed, identical
    np.testing.assert_allclose(plain.betas, beta_schedule("linear", 100), rtol=1e-9)


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown variance"):
        GaussianDiffusion(beta_schedule("linear", 100), variance="learned")
    with pytest.raises(ValueError, match="use_timesteps"):
        GaussianDiffusion(beta_schedule("linear", 100), use_timesteps=[3, 100])
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion([0.1, 0.0])
    diffusion = GaussianDiffusion.from_config(100, variance="learned_range")
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="6 channels"):
        diffusion.p_mean_variance(lambda x, t: x, x, torch.tensor([1, 2]))


# --- forward process and posterior ----------------------------------------------------


def test_q_sample_moments():
    diffusion = GaussianDiffusion.from_config(1000, respacing="ddim50")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((40_000, 1), 0.5)
    noise = torch.randn(x0.shape, generator=gen)
    for i in (0, 10, 49):
        x_t = diffusion.q_sample(x0, torch.full((len(x0),), i), noise)
        ac = diffusion.alphas_cumprod[i]
        assert x_t.mean().item() == pytest.approx(0.5 * math.sqrt(ac), abs=0.015)
        assert x_t.std().item() == pytest.approx(math.sqrt(1 - ac), rel=0.02)


def test_posterior_matches_bayes_rule_by_hand():
    # betas 0.1, 0.2, 0.3: alpha-bar = 0.9, 0.72, 0.504
    diffusion = GaussianDiffusion([0.1, 0.2, 0.3], variance="fixed_small")
    np.testing.assert_allclose(diffusion.alphas_cumprod, [0.9, 0.72, 0.504], rtol=1e-12)
    x0, x_t = torch.tensor([[0.3], [-0.7]], dtype=torch.float64), torch.tensor([[1.1], [0.2]], dtype=torch.float64)
    mean, var, log_var = diffusion.q_posterior(x0, x_t, torch.tensor([1, 1]))
    # q(x_0|x_0) ~ N(√0.9 x0, 0.1), q(x_1|x_0') ~ N(√0.8 x_0', 0.2): precision 1/0.1 + 0.8/0.2 = 14
    assert var.flatten().tolist() == pytest.approx([1 / 14, 1 / 14], rel=1e-12)
    by_hand = (math.sqrt(0.9) * x0 / 0.1 + math.sqrt(0.8) * x_t / 0.2) / 14
    torch.testing.assert_close(mean, by_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_var, torch.full_like(log_var, math.log(1 / 14)))
    # at t = 0 the posterior variance is 0; its log is clipped to that of t = 1
    assert diffusion.posterior_variance[0] == 0.0
    assert diffusion.posterior_log_variance_clipped[0] == pytest.approx(math.log(1 / 14))
    # t = 2: β̃ = 0.3 * 0.28 / 0.496
    assert diffusion.posterior_variance[2] == pytest.approx(0.3 * 0.28 / 0.496, rel=1e-12)


def test_variance_types():
    x = torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 7, 19])
    learned = GaussianDiffusion.from_config(1000, respacing="20")
    for v, target in ((1.0, np.log(learned.betas)), (-1.0, learned.posterior_log_variance_clipped)):
        out = learned.p_mean_variance(oracle(learned, torch.zeros_like(x), v), x, t)
        expected = torch.from_numpy(target[t.numpy()]).float().view(-1, 1, 1, 1).expand_as(x)
        torch.testing.assert_close(out["log_variance"], expected)
        torch.testing.assert_close(out["variance"], expected.exp())
    large = GaussianDiffusion.from_config(1000, respacing="20", variance="fixed_large")
    out = large.p_mean_variance(oracle(large, torch.zeros_like(x)), x, t)
    expected = [large.posterior_variance[1], large.betas[7], large.betas[19]]
    assert out["variance"][:, 0, 0, 0].tolist() == pytest.approx(expected, rel=1e-5)
    small = GaussianDiffusion.from_config(1000, respacing="20", variance="fixed_small")
    out = small.p_mean_variance(oracle(small, torch.zeros_like(x)), x, t)
    expected = [small.posterior_variance[1], small.posterior_variance[7], small.posterior_variance[19]]
    assert out["variance"][:, 0, 0, 0].tolist() == pytest.approx(expected, rel=1e-5)


# --- samplers with an oracle model --------------------------------------------------


@pytest.mark.parametrize("respacing", ["ddim50", "25", None])
def test_ddim_with_an_oracle_recovers_x0(respacing):
    diffusion = GaussianDiffusion.from_config(1000, respacing=respacing)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=gen) * 1.8 - 0.9
    model = oracle(diffusion, x0)
    x_T = torch.randn(x0.shape, generator=gen)
    denoiser = Denoiser(model, diffusion, 2)
    torch.testing.assert_close(denoise(denoiser, x_T, sampler="ddim"), x0, rtol=0, atol=1e-5)
    x_T = ddim_invert(denoiser, x0)
    assert not torch.allclose(x_T, x0, atol=0.1)
    torch.testing.assert_close(denoise(denoiser, x_T, sampler="ddim"), x0, rtol=0, atol=1e-5)
    # a partial run from index `start` also lands on x0
    x_mid = diffusion.q_sample(x0, torch.full((2,), diffusion.num_timesteps // 2))
    torch.testing.assert_close(denoise(denoiser, x_mid, diffusion.num_timesteps // 2, sampler="ddim"),
                               x0, rtol=0, atol=1e-5)


def test_sampling_loops_call_the_model_with_original_timesteps():
    diffusion = GaussianDiffusion.from_config(1000, respacing="ddim50", variance="fixed_small")
    seen: list[list[int]] = []

    def model(x, t):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    denoise(Denoiser(model, diffusion, 2), torch.zeros(2, 1, 2, 2), 3, sampler="ddim")
    assert seen == [[40, 40], [20, 20], [0, 0]]
    seen.clear()
    ddim_invert(Denoiser(model, diffusion, 1), torch.zeros(1, 1, 2, 2))
    assert [s[0] for s in seen] == list(range(0, 1000, 20))
    with pytest.raises(ValueError, match="start"):
        denoise(Denoiser(model, diffusion, 1), torch.zeros(1, 1, 2, 2), 51)


def test_ancestral_loop_is_deterministic_with_a_seeded_generator():
    diffusion = GaussianDiffusion.from_config(100, respacing="10")
    model = TinyNet()

    def run(seed: int, x_T: torch.Tensor | None = None, start: int | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        x_T = torch.randn((2, 3, 8, 8), generator=generator) if x_T is None else x_T
        return denoise(Denoiser(model, diffusion, 2), x_T, start, noise=generator)

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (2, 3, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(run(0, x_T, 4), run(0, x_T, 4)) and not torch.equal(run(0, x_T, 4), run(0, x_T, 5))


# --- training loss ------------------------------------------------------------------


def test_training_losses_oracle_and_shapes():
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 1, 30, 49])
    fixed = GaussianDiffusion.from_config(1000, respacing="ddim50", variance="fixed_small")
    loss = fixed.training_losses(oracle(fixed, x0), x0, t, noise)
    assert loss.shape == (4,) and loss.abs().max() < 1e-8  # MSE only, and ε is exact

    learned = GaussianDiffusion.from_config(1000, respacing="ddim50")
    loss = learned.training_losses(oracle(learned, x0, v=-1.0), x0, t, noise)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    # exact mean and v = -1 (the true posterior variance): KL = 0 for t > 0; decoder NLL at t = 0
    assert loss[1:].abs().max() < 1e-5 and loss[0] > 1e-3
    # the λ = T/1000 rescaling of the vb term
    x_t = learned.q_sample(x0, t, noise)
    vb = learned._vb_terms_bpd(oracle(learned, x0, v=0.3)(x_t, learned.model_timesteps(t)), x0, x_t, t)
    loss = learned.training_losses(oracle(learned, x0, v=0.3), x0, t, noise)
    torch.testing.assert_close(loss, vb * 50 / 1000, rtol=1e-4, atol=1e-6)

    model = TinyNet()
    loss = learned.training_losses(model, x0, t)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0


def test_vb_term_does_not_train_the_mean():
    diffusion = GaussianDiffusion.from_config(1000, respacing="ddim50")
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(3, 3, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 20, 45])
    eps_out = noise.clone().requires_grad_()  # ε = noise exactly: the MSE gradient vanishes
    v_out = (0.2 * torch.randn(x0.shape, generator=gen)).requires_grad_()
    loss = diffusion.training_losses(lambda x, s: torch.cat([eps_out, v_out], 1), x0, t, noise)
    loss.sum().backward()
    assert torch.count_nonzero(eps_out.grad) == 0
    assert v_out.grad.abs().sum() > 0
    # without the stop-gradient the vb term would reach ε
    eps_out.grad = None
    x_t = diffusion.q_sample(x0, t, noise)
    diffusion._vb_terms_bpd(torch.cat([eps_out, v_out], 1), x0, x_t, t).sum().backward()
    assert eps_out.grad.abs().sum() > 0


def test_discretized_gaussian_log_likelihood_is_close_to_the_exact_bin_mass():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0], dtype=torch.float64)
    means = torch.tensor([-0.9, -0.45, 0.02, 0.3, 0.95], dtype=torch.float64)
    exact = []
    for xi, mi in zip(x.tolist(), means.tolist()):
        cdf = torch.distributions.Normal(torch.tensor(mi, dtype=torch.float64), 0.05).cdf
        upper = cdf(torch.tensor(xi + 1 / 255)) if xi < 1 else torch.tensor(1.0)  # the edge bins reach ±∞
        lower = cdf(torch.tensor(xi - 1 / 255)) if xi > -1 else torch.tensor(0.0)
        exact.append(torch.log(upper - lower))
    got = discretized_gaussian_log_likelihood(x, means, torch.full_like(x, math.log(0.05)))
    torch.testing.assert_close(got, torch.stack(exact).double(), rtol=2e-3, atol=2e-3)  # tanh approximation of Φ


# --- cross-checks against diffusers ---------------------------------------------------


@pytest.mark.parametrize("ours, theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_betas_match_diffusers(ours, theirs):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    np.testing.assert_allclose(beta_schedule(ours, 1000), sched.betas.double().numpy(), rtol=1e-6)


def test_q_sample_matches_diffusers_add_noise():
    diffusion = GaussianDiffusion.from_config(1000, respacing="25")
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0, noise = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    t = torch.tensor([0, 11, 24])
    ours = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(ours, sched.add_noise(x0, noise, diffusion.model_timesteps(t)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers(eta):
    diffusion = GaussianDiffusion.from_config(1000, respacing="ddim50", variance="fixed_small")
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, set_alpha_to_one=True)
    sched.set_timesteps(50)  # "leading" spacing: 980, 960, ..., 0, the same steps as "ddim50"
    assert sorted(sched.timesteps.tolist()) == diffusion.timestep_map.tolist()
    sched.alphas_cumprod = torch.from_numpy(original_alphas_cumprod())  # compare in float64
    model = analytic()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64) * 1.5
    for i in (49, 30, 1, 0):
        t = torch.full((2,), i)
        t_orig = int(diffusion.timestep_map[i])
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        ours = diffusion.ddim_step(model(x, diffusion.model_timesteps(t)), t, x, eta=eta, noise=noise)
        theirs = sched.step(model(x, diffusion.model_timesteps(t)), t_orig, x, eta=eta,
                            use_clipped_model_output=True, variance_noise=noise)
        if i == 49:
            assert (ours["pred_x0"].abs() == 1).any()  # clipping is exercised
        torch.testing.assert_close(ours["pred_x0"], theirs.pred_original_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours["sample"], theirs.prev_sample, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variance", ["learned_range", "fixed_large", "fixed_small"])
def test_respaced_p_step_matches_diffusers_ddpm_step(variance):
    diffusion = GaussianDiffusion.from_config(1000, respacing="25", variance=variance)  # uneven gaps of 41/42
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type=variance, clip_sample=True)
    sched.set_timesteps(timesteps=diffusion.timestep_map.flip(0).tolist())
    sched.alphas_cumprod = torch.from_numpy(original_alphas_cumprod())  # compare in float64
    model = analytic(learned=variance == "learned_range")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1.5
    for i in (24, 12, 1, 0):
        t = torch.full((2,), i)
        t_orig = int(diffusion.timestep_map[i])
        output = model(x, diffusion.model_timesteps(t))
        ours = diffusion.p_step(output, t, x, generator=torch.Generator().manual_seed(i))
        theirs = sched.step(output, t_orig, x, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(ours["pred_x0"], theirs.pred_original_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours["sample"], theirs.prev_sample, rtol=1e-10, atol=1e-10)
        if variance == "learned_range":
            their_log_var = sched._get_variance(t_orig, predicted_variance=output[:, 3:])
            if i > 0:
                torch.testing.assert_close(ours["log_variance"], their_log_var, rtol=1e-10, atol=1e-10)
            else:  # diffusers interpolates towards log(max(β̃_0, 1e-20)); guided-diffusion towards log β̃_1
                frac = (output[:, 3:] + 1) / 2
                min_log = torch.full_like(frac, diffusion.posterior_log_variance_clipped[0])
                max_log = math.log(diffusion.betas[0])
                torch.testing.assert_close(ours["log_variance"], frac * max_log + (1 - frac) * min_log)
                torch.testing.assert_close(their_log_var, frac * max_log + (1 - frac) * math.log(1e-20))


def test_ddim_reverse_step_matches_diffusers_inverse_step_formula():
    # same ε (evaluated at the current step k_i), from ᾱ_{k_i} to ᾱ_{k_{i+1}}; diffusers is told the target k_{i+1}
    diffusion = GaussianDiffusion.from_config(1000, respacing="ddim50", variance="fixed_small", clip_denoised=False)
    sched = DDIMInverseScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == diffusion.timestep_map.tolist()
    sched.alphas_cumprod = torch.from_numpy(original_alphas_cumprod())  # compare in float64
    model = analytic()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for i in (0, 1, 25, 48):
        t = torch.full((2,), i)
        ours = diffusion.ddim_reverse_step(model(x, diffusion.model_timesteps(t)), t, x)
        theirs = sched.step(model(x, diffusion.model_timesteps(t)), int(diffusion.timestep_map[i + 1]), x)
        torch.testing.assert_close(ours["sample"], theirs.prev_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours["pred_x0"], theirs.pred_original_sample, rtol=1e-10, atol=1e-10)
    last = diffusion.ddim_reverse_step(model(x, torch.full((2,), 980)), torch.full((2,), 49), x)  # ᾱ_next = 0: the sample is ε
    eps = model(x, torch.full((2,), 980))
    torch.testing.assert_close(last["sample"], eps, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("start", "end"), [(0.00085, 0.012), (0.0015, 0.0195)])  # SD v1 / cin256-v2
def test_latent_diffusion_ddim_matches_diffusers(start, end):
    """The LDM code's "linear" schedule is diffusers' scaled_linear, its DDIM timesteps are
    shifted by one and its last step lands on ᾱ_0 (steps_offset=1, set_alpha_to_one=False)."""
    diffusion = GaussianDiffusion.from_config(1000, "scaled_linear", "ddim50", variance="fixed_small",
                                              clip_denoised=False, beta_start=start, beta_end=end,
                                              steps_offset=1, set_alpha_to_one=False)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=start, beta_end=end, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    np.testing.assert_allclose(beta_schedule("scaled_linear", 1000, start, end), sched.betas.double().numpy(),
                               rtol=1e-6)
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(981, 0, -20))
    assert diffusion.timestep_map.flip(0).tolist() == sched.timesteps.tolist()
    ac = np.cumprod(1.0 - beta_schedule("scaled_linear", 1000, start, end))
    sched.alphas_cumprod, sched.final_alpha_cumprod = torch.from_numpy(ac), torch.tensor(ac[0])  # float64
    assert diffusion.alphas_cumprod_prev[0] == ac[0]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64) * 3
    for i in (49, 20, 0):
        eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        ours = diffusion.ddim_step(eps, torch.full((2,), i), x)
        theirs = sched.step(eps, int(diffusion.timestep_map[i]), x)
        torch.testing.assert_close(ours["sample"], theirs.prev_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours["pred_x0"], theirs.pred_original_sample, rtol=1e-10, atol=1e-10)
