"""The denoising loop (`cfbench.diffusion.sampling`): what it calls, counts and draws, its
hooks, gradient mode with checkpointing, and per-sample noise."""
from __future__ import annotations

import pytest
import torch

from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.sampling import Denoiser, Guidance, denoise
from cfbench.randomness import SampleRNG


class Shrink(torch.nn.Module):
    """ε = w·x: a differentiable stand-in network with one parameter."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t):
        return self.w * x


def process(variance: str = "fixed_small") -> GaussianDiffusion:
    return GaussianDiffusion.from_config(100, "linear", "10", variance=variance)


def test_calls_the_network_at_original_timesteps_and_counts_per_sample():
    seen = []
    denoiser = Denoiser(lambda x, t: seen.append(t.tolist()) or torch.zeros_like(x), process(), 5)
    rows = torch.tensor([4, 1])
    out = denoise(denoiser, torch.zeros(2, 1, 2, 2), 3, rows=rows, noise=SampleRNG(0, list("abcde")))
    assert seen == [[22, 22], [11, 11], [0, 0]]  # respaced 2, 1, 0 of "10" over 100 steps
    assert denoiser.evals.tolist() == [0, 3, 0, 0, 3] and out.shape == (2, 1, 2, 2)
    denoise(denoiser, torch.zeros(2, 1, 2, 2), 3, stop=1, rows=rows, sampler="mean")
    assert denoiser.evals.tolist() == [0, 5, 0, 0, 5]  # indices 2 and 1 only


def test_each_sample_gets_its_own_noise_whatever_the_batch():
    denoiser = Denoiser(lambda x, t: torch.zeros_like(x), process(), 3)
    rng = SampleRNG(7, ["x", "y", "z"])
    together = denoise(denoiser, torch.zeros(3, 1, 2, 2), 4, noise=rng)
    rng = SampleRNG(7, ["x", "y", "z"])
    alone = torch.cat([denoise(denoiser, torch.zeros(1, 1, 2, 2), 4, rows=torch.tensor([k]), noise=rng)
                       for k in (2, 0, 1)])  # fmt: skip
    assert torch.equal(together, alone[[1, 2, 0]])
    assert not torch.equal(together[0], together[1])


def test_mean_guidance_shifts_the_mean_by_the_variance_times_g():
    p = process()
    x = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    g = torch.full_like(x, 0.5)
    denoiser = Denoiser(lambda x, t: 0.1 * x, p, 2)
    guided = denoise(denoiser, x, 1, sampler="mean", mean_guidance=lambda z, i, rows: g)
    plain = denoise(denoiser, x, 1, sampler="mean")
    variance = p.predict(0.1 * x, torch.zeros(2, dtype=torch.long), x)["variance"]
    torch.testing.assert_close(guided, plain - variance * g)  # DiME eq. 4


def test_finished_rows_leave_the_chain_with_their_final_value():
    denoiser = Denoiser(lambda x, t: torch.zeros_like(x), process(), 3)
    x = torch.ones(3, 1, 2, 2)

    def guidance(z, i, rows):
        done = (rows == 1).to(z.device) if i == 2 else torch.zeros(len(rows), dtype=torch.bool)
        return Guidance(0.0, finished=done, final=torch.full_like(z, 9.0))

    out = denoise(denoiser, x, 3, sampler="mean", mean_guidance=guidance)
    assert (out[1] == 9).all() and not (out[0] == 9).any() and not (out[2] == 9).any()
    assert denoiser.evals.tolist() == [3, 0, 3]


def test_before_step_and_eps_hooks_see_every_step():
    calls = []
    denoiser = Denoiser(lambda x, t: torch.zeros_like(x), process(), 1)

    def before(x, i, rows):
        calls.append(("before", i))
        return torch.zeros_like(x)  # RePaint-style replacement

    def eps(x, i, rows, network):
        calls.append(("eps", i))
        return network(x) + 1

    denoise(denoiser, torch.ones(1, 1, 2, 2), 2, sampler="ddim", before_step=before, eps_guidance=eps)
    assert calls == [("before", 1), ("eps", 1), ("before", 0), ("eps", 0)]


@pytest.mark.parametrize("every", [0, 1, 3])
def test_grad_mode_differentiates_through_the_chain_with_or_without_checkpointing(every):
    model = Shrink()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    denoiser = Denoiser(model, process(), 2)
    out = denoise(denoiser, x, 5, noise=SampleRNG(0, ["a", "b"]), grad=True, checkpoint_every=every)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    reference_x = x.detach().clone().requires_grad_(True)
    reference = denoise(Denoiser(model, process(), 2), reference_x, 5, noise=SampleRNG(0, ["a", "b"]), grad=True)
    (gr,) = torch.autograd.grad(reference.square().sum(), reference_x)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(gx, gr)
    assert denoiser.evals.tolist() == [5, 5]  # the recomputation in the backward pass is not counted again
    assert not denoise(Denoiser(model, process(), 2), x, 5, noise=SampleRNG(0, ["a", "b"])).requires_grad


def test_bad_arguments_are_errors():
    denoiser = Denoiser(lambda x, t: x, process(), 1)
    for kwargs in ({"start": 11}, {"start": 2, "stop": 2}, {"sampler": "euler"}, {"checkpoint_every": 2},
                   {"grad": True, "checkpoint_every": 2, "mean_guidance": lambda z, i, r: 0.0}):
        with pytest.raises(ValueError, match="denoise"):
            denoise(denoiser, torch.zeros(1, 1, 2, 2), **kwargs)
