"""The one denoising loop every diffusion method runs on.

The process (`cfbench.diffusion.gaussian`) holds the math of one step and takes the
model's output, as diffusers' schedulers do; this module calls the network, counts
its evaluations per sample, draws each sample's noise from its own generator and lets
a method change the chain at three places:

* ``before_step(x, i, rows) -> x``: replace the state before step i (ACE's RePaint
  refinement keeps the original outside the mask);
* ``eps_guidance(x, i, rows, network) -> output``: make the output the step takes from
  ``network(x)``, the step's one (counted) evaluation, which the hook calls itself, with
  gradients if it needs them (LDCE's classifier-free and consensus guidance of ε);
* ``mean_guidance(x, i, rows) -> g | Guidance``: shift the ancestral mean to μ − Σ·g
  (DiME eq. 4); a `Guidance` may also retire rows that are done (DiME's early stop).

``rows`` are the positions, in the batch the method explains, of the rows of ``x``:
counters and noise are per sample, so a result does not depend on the batch.
``grad=True`` keeps the graph through the chain (ACE's PGD through the filter), with
``checkpoint_every=k`` recomputing k steps at a time in the backward pass (the hooks
then run again there, on the same noise); otherwise the loop runs under ``no_grad``
and a hook that differentiates enables gradients itself.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from cfbench.diffusion.gaussian import GaussianDiffusion

SAMPLERS = ("ancestral", "mean", "ddim")


class Noise(Protocol):
    """A source of per-sample noise (`cfbench.randomness.SampleRNG`, or a caller's own)."""

    def randn(self, shape: Sequence[int], rows: Tensor | None = None, device: Any = "cpu",
              dtype: torch.dtype = torch.float32) -> Tensor: ...


class Denoiser:
    """A diffusion network as the loop calls it, ``model(x, original timestep)``, on the
    respaced indices of ``process``; ``evals[k]`` counts its evaluations of batch sample k."""

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor], process: GaussianDiffusion, n: int):
        self.model, self.process = model, process
        self.evals = torch.zeros(n, dtype=torch.long)

    def count(self, rows: Tensor) -> None:
        self.evals.index_add_(0, rows.cpu(), torch.ones(len(rows), dtype=torch.long))

    def output(self, x: Tensor, i: int) -> Tensor:
        """The network's output at respaced index ``i`` (not counted: see `count`)."""
        return self.model(x, self.process.model_timesteps(_index(i, x)))

    def __call__(self, x: Tensor, i: int, rows: Tensor) -> Tensor:
        self.count(rows)
        return self.output(x, i)


@dataclass
class Guidance:
    """What ``mean_guidance`` may return instead of the shift: the shift g (DiME eq. 4) of
    the rows it was given, and the rows that are ``finished`` (bool) with their ``final``
    values; finished rows leave the chain before the step."""

    shift: Tensor | float
    finished: Tensor | None = None
    final: Tensor | None = None


def _index(i: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)


def _draw(noise: Noise | torch.Generator | None, x: Tensor, rows: Tensor) -> Tensor:
    """Noise for the rows of x: from each sample's generator, a batch generator, or torch's."""
    if noise is None:
        return torch.randn_like(x)
    if isinstance(noise, torch.Generator):
        return torch.randn(x.shape, generator=noise, dtype=x.dtype, device=noise.device).to(x.device)
    return noise.randn(x.shape[1:], rows, device=x.device, dtype=x.dtype)


def _step(process: GaussianDiffusion, sampler: str, eta: float, output: Tensor, i: int, x: Tensor,
          noise: Tensor | None, shift: Tensor | float | None) -> Tensor:
    t = _index(i, x)
    if sampler == "ancestral":
        return process.p_step(output, t, x, noise=noise, shift=shift)["sample"]
    if sampler == "mean":  # the posterior mean, no noise (DiME's use_sampling_on_x_t=False)
        return process.p_step(output, t, x, noise=torch.zeros_like(x), shift=shift)["mean"]
    return process.ddim_step(output, t, x, eta=eta, noise=noise)["sample"]


def denoise(
    denoiser: Denoiser, x: Tensor, start: int | None = None, *, stop: int = 0, rows: Tensor | None = None,
    noise: Noise | torch.Generator | None = None, sampler: str = "ancestral", eta: float = 0.0,
    before_step: Callable[[Tensor, int, Tensor], Tensor] | None = None,
    eps_guidance: Callable[[Tensor, int, Tensor, Callable[[Tensor], Tensor]], Tensor] | None = None,
    mean_guidance: Callable[[Tensor, int, Tensor], Tensor | Guidance | float | None] | None = None,
    grad: bool = False, checkpoint_every: int = 0, progress: bool = False,
) -> Tensor:
    """Run ``x``, the state at respaced index ``start − 1`` (default: the last index),
    down the respaced indices start−1 … ``stop``; returns the state after index ``stop``
    (x̂ at 0 when ``stop`` = 0), finished rows holding their ``final`` values.

    ``sampler``: ``ancestral`` (Ho et al. 2020, Alg. 2), ``mean`` (posterior means) or
    ``ddim`` (Song et al. 2021, eq. 12, with ``eta``). Stochastic steps draw their noise
    from ``noise`` for the rows' samples at every index, 0 included (where it is not
    added), so the draws of a sample do not depend on the chain's length.
    """
    process = denoiser.process
    n = process.num_timesteps
    start = n if start is None else int(start)
    if not 1 <= start <= n or not 0 <= stop < start:
        raise ValueError(f"denoise: need 0 <= stop < start <= {n}, got start={start}, stop={stop}")
    if sampler not in SAMPLERS:
        raise ValueError(f"denoise: unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    rows = torch.arange(x.shape[0]) if rows is None else torch.as_tensor(rows).cpu()
    stochastic = sampler == "ancestral" or (sampler == "ddim" and eta != 0)
    indices = list(range(stop, start))[::-1]
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, leave=False)
    if checkpoint_every and (not grad or mean_guidance is not None):
        raise ValueError("denoise: checkpoint_every needs grad=True and no mean_guidance")

    def one_step(x: Tensor, i: int, rows: Tensor, step_noise: Tensor | None, shift: Any) -> Tensor:
        if before_step is not None:
            x = before_step(x, i, rows)
        if eps_guidance is not None:
            output = eps_guidance(x, i, rows, lambda y: denoiser.output(y, i))
        else:
            output = denoiser.output(x, i)
        return _step(process, sampler, eta, output, i, x, step_noise, shift)

    def run() -> Tensor:
        nonlocal x, rows
        result, active = None, torch.arange(x.shape[0])
        segment: list[tuple[int, Tensor | None]] = []
        for i in indices:
            shift = None
            if mean_guidance is not None:
                guidance = mean_guidance(x, i, rows)
                if isinstance(guidance, Guidance):
                    shift = guidance.shift
                    if guidance.finished is not None and bool(guidance.finished.any()):
                        done = guidance.finished.to(x.device)
                        result = x.detach().clone() if result is None else result
                        result[active[done.cpu()].to(x.device)] = guidance.final[done].to(result.dtype)
                        keep = ~done
                        x, rows, active = x[keep], rows[keep.cpu()], active[keep.cpu()]
                        shift = shift[keep] if isinstance(shift, Tensor) else shift
                        if len(rows) == 0:
                            return result
                else:
                    shift = guidance
            step_noise = _draw(noise, x, rows) if stochastic else None
            denoiser.count(rows)
            if checkpoint_every:
                segment.append((i, step_noise))
                if len(segment) == checkpoint_every or i == stop:
                    x = checkpoint(_segment, x, segment, rows, one_step, use_reentrant=False)
                    segment = []
            else:
                x = one_step(x, i, rows, step_noise, shift)
        if result is None:
            return x
        result[active.to(x.device)] = x
        return result

    if grad:
        with torch.enable_grad():
            return run()
    with torch.no_grad():
        return run()


def _segment(x: Tensor, steps: list[tuple[int, Tensor | None]], rows: Tensor, one_step: Callable) -> Tensor:
    """Consecutive steps recomputed together in the backward pass (gradient checkpointing)."""
    for i, step_noise in steps:
        x = one_step(x, i, rows, step_noise, None)
    return x


def ddim_invert(denoiser: Denoiser, x0: Tensor, *, rows: Tensor | None = None, progress: bool = False) -> Tensor:
    """x_0 -> x_T by deterministic DDIM inversion over indices 0 … N−1 (Song et al. 2021,
    eq. 12 run forward; x_0 is the state at index 0, as guided-diffusion and DiffAE take it)."""
    rows = torch.arange(x0.shape[0]) if rows is None else torch.as_tensor(rows).cpu()
    indices = range(denoiser.process.num_timesteps)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, leave=False)
    x = x0
    with torch.no_grad():
        for i in indices:
            x = denoiser.process.ddim_reverse_step(denoiser(x, i, rows), _index(i, x), x)["sample"]
    return x
