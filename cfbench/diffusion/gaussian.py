"""The Gaussian diffusion process with guided-diffusion semantics (math only: every step
takes the network's output, as diffusers' schedulers do; the loop that calls the network
is `cfbench.diffusion.sampling`).

This is the "scheduler" the DiME/ACE checkpoints (openai/guided-diffusion, ε-prediction,
optionally ``learn_sigma``) were trained and sampled with:

* forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I)  (Ho et al. 2020, eq. 4) and the
  posterior q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)  (Ho et al. 2020, eqs. 6-7);
* schedules ``linear`` (Ho et al. 2020, rescaled by 1000/T), ``cosine`` (Nichol &
  Dhariwal 2021, eq. 17, β capped at 0.999) and ``scaled_linear``, the one the latent
  diffusion code calls "linear" (Rombach et al. 2022; CompVis/latent-diffusion
  `ldm/modules/diffusionmodules/util.py`: β = (linspace(√β_start, √β_end, T))²);
* respacing (Nichol & Dhariwal 2021, §4): keep ᾱ at a subset of timesteps and recompute
  β_i = 1 - ᾱ_{k_i}/ᾱ_{k_{i-1}}; loops run over respaced indices i, and the network is
  always called with the *original* timestep k_i (``timestep_map``, no rescaling). As in
  guided-diffusion, betas are always recomputed this way, even without respacing;
* variance ``learned_range`` (Nichol & Dhariwal 2021, eq. 15), ``fixed_large``, ``fixed_small``;
* ancestral DDPM steps (Ho et al. 2020, Alg. 2), DDIM steps and deterministic DDIM
  inversion (Song et al. 2021, eq. 12), and the L_hybrid training loss (Nichol & Dhariwal
  2021, §3.1: L_simple + λ L_vlb with a stop-gradient on the mean, λ = T/1000).

All schedule buffers are float64 numpy arrays; per-timestep values are gathered and cast
to the input's dtype (guided-diffusion casts them to float32).

Relation to diffusers' schedulers (checked against diffusers 0.42 in
tests/test_diffusion_process.py):

* matches: ``DDPMScheduler(beta_schedule="linear")`` (T = 1000) and ``"squaredcos_cap_v2"``
  betas; ``add_noise`` == :meth:`q_sample`; ``DDPMScheduler.step`` with custom (respaced)
  ``timesteps`` recomputes β from ᾱ of consecutive kept steps exactly like respacing, so
  :meth:`p_step` matches it for ``learned_range``/``fixed_large``/``fixed_small`` at every
  respaced index > 0; ``DDIMScheduler.step(..., use_clipped_model_output=True)`` with
  ``set_alpha_to_one=True`` == :meth:`ddim_step` for ``"ddimN"`` respacing ("leading"
  spacing gives the same timesteps); the latent diffusion models' DDIM, whose timesteps
  are shifted by one and whose last step lands on ᾱ_0 rather than 1 (CompVis
  `ldm/models/diffusion/ddim.py`), is ``DDIMScheduler(beta_schedule="scaled_linear",
  steps_offset=1, set_alpha_to_one=False)`` and here ``from_config(schedule=
  "scaled_linear", steps_offset=1, set_alpha_to_one=False)``.
* differs: at respaced index 0 diffusers' ``learned_range`` and ``fixed_small`` use
  log(max(β̃_0, 1e-20)) and ``fixed_large`` uses β_0, where guided-diffusion uses the
  clipped β̃_1 (this only changes the log-variance / decoder NLL, not samples, since no
  noise is added at index 0); diffusers' linear schedule is not rescaled by 1000/T for
  T ≠ 1000; diffusers computes ᾱ in float32; ``DDIMInverseScheduler.step`` (``clip_sample=False``)
  has the formula of :meth:`ddim_reverse_step` for a given ε, but its pipelines call the
  network at the *target* timestep, start from ᾱ = 1 and stop at the last kept step, whereas
  guided-diffusion/DiffAE (and `sampling.ddim_invert`) take x_0 as the state at index 0, call
  the network at the current step and go on to ᾱ_next = 0 after the last index; when
  clipping, diffusers keeps the unclipped ε there; diffusers has no section-wise
  ``space_timesteps`` and no L_hybrid.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

Model = Callable[[Tensor, Tensor], Tensor]
VARIANCES = ("learned_range", "fixed_large", "fixed_small")


def beta_schedule(name: str, num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> np.ndarray:
    """β_1..β_T (float64): ``linear`` (Ho et al. 2020, from 1e-4 to 0.02 for T = 1000,
    both scaled by 1000/T), ``cosine`` (Nichol & Dhariwal 2021, eq. 17, s = 0.008) or
    ``scaled_linear`` from ``beta_start`` to ``beta_end`` (the latent diffusion models';
    Stable Diffusion v1's values by default)."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if name == "scaled_linear":
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=np.float64) ** 2
    if name == "linear":
        scale = 1000 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
                         for i in range(num_timesteps)], dtype=np.float64)
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear', 'cosine' or 'scaled_linear'")


def space_timesteps(num_timesteps: int, section_counts: str | int | Sequence[int]) -> set[int]:
    """The original timesteps kept by a respacing (guided-diffusion's rule).

    ``"ddimN"``: the integer stride s with ``len(range(0, T, s)) == N`` (DDIM's striding).
    Otherwise ``"K1,K2,..."`` (or an int): [0, T) is cut into equal sections (the first
    ``T % n`` one step longer) and K_j steps are taken from section j at positions
    ``round(c)`` where c starts at 0 and grows by (L-1)/(K_j-1) (Python's round, half to even).
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            try:
                desired = int(spec[len("ddim"):])
            except ValueError:
                raise ValueError(f"bad respacing {section_counts!r}; expected 'ddimN' with an integer N") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {desired} of {num_timesteps} timesteps with an integer stride "
                             f"({section_counts!r})")
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad respacing {section_counts!r}; expected 'ddimN' or comma-separated "
                             "integers") from None
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        counts = [int(c) for c in section_counts]
    if not counts or min(counts) < 1:
        raise ValueError(f"respacing {section_counts!r}: every section needs at least one step")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for j, count in enumerate(counts):
        size = size_per + (1 if j < extra else 0)
        if count > size:
            raise ValueError(f"respacing {section_counts!r}: cannot take {count} steps from a section of {size} "
                             f"(of {num_timesteps} timesteps)")
        frac_stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += frac_stride
        start += size
    return set(steps)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715x³))), the tanh approximation that
    guided-diffusion (after Ho et al. 2020's code) uses; not torch.erf."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log p(x) in nats for x in [-1, 1] from 256 bins of width 2/255 under N(means, e^{2 log_scales})
    (Ho et al. 2020, eq. 13); the edge bins extend to ±∞."""
    centered, inv_std = x - means, torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: Tensor) -> Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


class GaussianDiffusion:
    """Diffusion process over respaced indices 0..num_timesteps-1 (see the module docstring).

    ``betas`` is the original (training) schedule; ``use_timesteps`` the original timesteps to
    keep (None: all). ``variance`` is ``learned_range`` (the model returns 2C channels: ε, v),
    ``fixed_large`` or ``fixed_small`` (C channels: ε). ``clip_denoised`` clips x̂_0 to [-1, 1]
    when sampling (never in :meth:`training_losses`). ``final_alpha_cumprod`` is ᾱ before
    the first kept step, where the last step lands (1; the latent diffusion DDIM's ᾱ_0).
    A model is any callable ``model(x_t, t_original) -> Tensor``.
    """

    def __init__(self, betas: Sequence[float] | np.ndarray, *, use_timesteps: Sequence[int] | set[int] | None = None,
                 variance: str = "learned_range", clip_denoised: bool = True, final_alpha_cumprod: float = 1.0) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a non-empty 1-D array with values in (0, 1]")
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; expected one of {', '.join(VARIANCES)}")
        self.variance, self.clip_denoised = variance, clip_denoised
        self.original_num_timesteps = len(betas)
        keep = sorted({int(k) for k in (range(len(betas)) if use_timesteps is None else use_timesteps)})
        if not keep or keep[0] < 0 or keep[-1] >= len(betas):
            raise ValueError(f"use_timesteps must be a non-empty subset of 0..{len(betas) - 1}")
        self.timestep_map = torch.tensor(keep, dtype=torch.long)
        ac = np.cumprod(1.0 - betas)[keep]
        self.num_timesteps = len(keep)
        self.alphas_cumprod = ac
        self.alphas_cumprod_prev = np.append(final_alpha_cumprod, ac[:-1])
        self.alphas_cumprod_next = np.append(ac[1:], 0.0)
        self.betas = 1.0 - ac / self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1.0)
        # Ho et al. 2020, eq. 7: β̃_t and the coefficients of x_0 and x_t in μ̃_t
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - ac)
        pv1 = self.posterior_variance[1] if self.num_timesteps > 1 else self.betas[0]  # β̃_0 = 0: clip to β̃_1
        self.posterior_log_variance_clipped = np.log(np.append(pv1, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - ac)
        self.fixed_large_variance = np.append(pv1, self.betas[1:])
        self.log_betas, self.log_fixed_large_variance = np.log(self.betas), np.log(self.fixed_large_variance)
        self._on_device: dict[tuple, Tensor] = {}  # (array, device, dtype) -> the array as a tensor there

    @classmethod
    def from_config(cls, num_timesteps: int = 1000, schedule: str = "linear", respacing: str | int | None = None,
                    variance: str = "learned_range", clip_denoised: bool = True, beta_start: float = 0.00085,
                    beta_end: float = 0.012, steps_offset: int = 0, set_alpha_to_one: bool = True) -> GaussianDiffusion:
        """guided-diffusion's ``create_gaussian_diffusion``: a named schedule, optionally
        respaced (``respacing`` as in :func:`space_timesteps`; None or "" keeps all steps).
        ``steps_offset`` shifts the kept timesteps and ``set_alpha_to_one=False`` lands the
        last step on ᾱ_0, as diffusers' `DDIMScheduler` arguments of those names."""
        betas = beta_schedule(schedule, num_timesteps, beta_start, beta_end)
        use = None
        if respacing not in (None, ""):
            use = {k + steps_offset for k in space_timesteps(num_timesteps, respacing)}
            if max(use) >= num_timesteps:
                raise ValueError(f"respacing {respacing!r} with steps_offset {steps_offset} passes timestep "
                                 f"{num_timesteps - 1}")
        final = 1.0 if set_alpha_to_one or use is None else float(np.cumprod(1.0 - betas)[0])
        return cls(betas, use_timesteps=use, variance=variance, clip_denoised=clip_denoised, final_alpha_cumprod=final)

    def _tensor(self, arr: np.ndarray | Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
        """One of the process's arrays as a tensor on ``device``, copied there once (a
        copy per call would make every sampling and training step wait for the GPU)."""
        key = (id(arr), device, dtype)
        if key not in self._on_device:
            self._on_device[key] = torch.as_tensor(arr, dtype=dtype).to(device)
        return self._on_device[key]

    def _at(self, arr: np.ndarray, t: Tensor, x: Tensor) -> Tensor:
        """arr[t] in x's dtype and device, shaped (B, 1, ..., 1) to broadcast against x;
        ``arr`` is one of the process's own arrays."""
        vals = self._tensor(arr, x.device, x.dtype)[t.to(x.device)]
        return vals.view(-1, *([1] * (x.ndim - 1)))

    def model_timesteps(self, t: Tensor) -> Tensor:
        """Respaced indices -> the original timesteps the network is called with."""
        return self._tensor(self.timestep_map, t.device, torch.long)[t]

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0) = √ᾱ_t x_0 + √(1-ᾱ_t) ε (Ho et al. 2020, eq. 4)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return (self._at(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7)."""
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x0 + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_variance, t, x_t), self._at(self.posterior_log_variance_clipped, t, x_t)

    def _check(self, out: Tensor, x: Tensor) -> int:
        channels = x.shape[1]
        expected = 2 * channels if self.variance == "learned_range" else channels
        if out.shape != (x.shape[0], expected, *x.shape[2:]):
            raise ValueError(f"variance={self.variance!r} needs a model output of {expected} channels shaped like x "
                             f"{tuple(x.shape)}; got {tuple(out.shape)}")
        return channels

    def predict(self, output: Tensor, t: Tensor, x: Tensor, clip: bool | None = None) -> dict[str, Tensor]:
        """What the model output says about p(x_{t-1} | x_t): x̂_0 = (x_t - √(1-ᾱ_t) ε)/√ᾱ_t,
        the posterior mean μ̃(x̂_0, x_t) (Ho et al. 2020, eqs. 7, 15), the variance and
        log-variance (learned range: Nichol & Dhariwal 2021, eq. 15) and ε itself.
        ``clip`` (default ``clip_denoised``) clips x̂_0 to [-1, 1]."""
        channels = self._check(output, x)
        if self.variance == "learned_range":  # Nichol & Dhariwal 2021, eq. 15: v in [-1, 1] interpolates logs
            eps, v = output[:, :channels], output[:, channels:]
            frac = (v + 1) / 2
            log_var = frac * self._at(self.log_betas, t, x) + (1 - frac) * self._at(
                self.posterior_log_variance_clipped, t, x)
        else:
            eps = output
            log_arr = self.log_fixed_large_variance if self.variance == "fixed_large" \
                else self.posterior_log_variance_clipped
            log_var = self._at(log_arr, t, x).expand_as(x)
        pred_x0 = (self._at(self.sqrt_recip_alphas_cumprod, t, x) * x
                   - self._at(self.sqrt_recipm1_alphas_cumprod, t, x) * eps)
        if self.clip_denoised if clip is None else clip:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean = self.q_posterior(pred_x0, x, t)[0]
        return {"mean": mean, "variance": torch.exp(log_var), "log_variance": log_var, "pred_x0": pred_x0, "eps": eps}

    def p_mean_variance(self, model: Model, x: Tensor, t: Tensor) -> dict[str, Tensor]:
        """:meth:`predict` on the output of ``model(x, original timestep)``."""
        return self.predict(model(x, self.model_timesteps(t)), t, x)

    @staticmethod
    def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
        if generator is None:
            return torch.randn_like(x)
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)

    @staticmethod
    def _nonzero(t: Tensor, x: Tensor) -> Tensor:
        """1 where the step adds noise (every index but 0), shaped to broadcast against x."""
        return (t != 0).to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def p_step(self, output: Tensor, t: Tensor, x: Tensor, noise: Tensor | None = None,
               generator: torch.Generator | None = None, shift: Tensor | float | None = None) -> dict[str, Tensor]:
        """Ancestral step x_{t-1} = μ + σ z (Ho et al. 2020, Alg. 2); no noise at index 0.
        ``shift`` g moves the mean by the variance times g, μ − Σ·g (DiME eq. 4); the
        unshifted mean is returned as ``unguided_mean``."""
        out = self.predict(output, t, x)
        mean = out["mean"] if shift is None else out["mean"] - out["variance"] * shift  # DiME eq. 4
        noise = self._noise(x, generator) if noise is None else noise
        sample = mean + self._nonzero(t, x) * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "mean": mean, "unguided_mean": out["mean"],
                **{k: out[k] for k in ("pred_x0", "log_variance", "variance", "eps")}}

    def _eps_from_x0(self, x: Tensor, t: Tensor, pred_x0: Tensor) -> Tensor:
        return (self._at(self.sqrt_recip_alphas_cumprod, t, x) * x - pred_x0) / self._at(
            self.sqrt_recipm1_alphas_cumprod, t, x)

    def ddim_step(self, output: Tensor, t: Tensor, x: Tensor, eta: float = 0.0, noise: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """DDIM step (Song et al. 2021, eq. 12, σ from eq. 16 scaled by η) with ε re-derived
        from the (clipped) x̂_0; η = 1 is the ancestral posterior variance, η = 0 deterministic."""
        pred_x0 = self.predict(output, t, x)["pred_x0"]
        eps = self._eps_from_x0(x, t, pred_x0)
        ac, ac_prev = self._at(self.alphas_cumprod, t, x), self._at(self.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - ac_prev) / (1 - ac)) * torch.sqrt(1 - ac / ac_prev)  # Song et al. eq. 16
        sample = pred_x0 * torch.sqrt(ac_prev) + torch.sqrt(1 - ac_prev - sigma ** 2) * eps  # Song et al. eq. 12
        if eta != 0:
            noise = self._noise(x, generator) if noise is None else noise
            sample = sample + self._nonzero(t, x) * sigma * noise
        return {"sample": sample, "pred_x0": pred_x0, "eps": eps}

    def ddim_reverse_step(self, output: Tensor, t: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Deterministic DDIM inversion step, index t -> t+1 (Song et al. 2021, eq. 12 with
        σ = 0 run forward); ᾱ_next = 0 after the last index, as in guided-diffusion."""
        pred_x0 = self.predict(output, t, x)["pred_x0"]
        eps = self._eps_from_x0(x, t, pred_x0)
        ac_next = self._at(self.alphas_cumprod_next, t, x)
        return {"sample": pred_x0 * torch.sqrt(ac_next) + torch.sqrt(1 - ac_next) * eps, "pred_x0": pred_x0}

    def _vb_terms_bpd(self, out: Tensor, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """L_{t-1} = KL(q(x_{t-1}|x_t,x_0) ‖ p(x_{t-1}|x_t)) for t > 0 and the decoder NLL
        -log p(x_0|x_1) at t = 0 (Ho et al. 2020, eq. 5), per sample, in bits per dimension."""
        true_mean, _, true_log_var = self.q_posterior(x0, x_t, t)
        p = self.predict(out, t, x_t, clip=False)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])) / math.log(2.0)
        return torch.where(t.to(x0.device) == 0, nll, kl)

    def training_losses(self, model: Model, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Per-sample loss (B,): L_simple = mean ‖ε - ε_θ(x_t, t)‖² (Ho et al. 2020, eq. 14) and,
        for ``learned_range``, + (T/1000)·L_vlb with the mean's ε detached, so that L_vlb only
        trains the variance (L_hybrid, Nichol & Dhariwal 2021, §3.1; guided-diffusion's RESCALED_MSE)."""
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, self.model_timesteps(t))
        channels = self._check(out, x0)
        eps = out[:, :channels] if self.variance == "learned_range" else out
        loss = _mean_flat((noise - eps) ** 2)
        if self.variance == "learned_range":
            frozen = torch.cat([eps.detach(), out[:, channels:]], dim=1)
            loss = loss + self._vb_terms_bpd(frozen, x0, x_t, t) * (self.num_timesteps / 1000.0)
        return loss
