"""The `ace` method: ACE, Adversarial Counterfactual Visual Explanations.

Jeanneret, Simon & Jurie, CVPR 2023: §3 (eq. 3), §4.6 (ablations, Table 5; other
attacks), supplementary A (settings per dataset) and B (Algorithms 1 and 2).

1. **Pre-explanation** (§3.1, Algorithm 1): an adversarial attack on the classifier
   behind a diffusion filter, ``argmin_x′ L_class(C(F_τ(x′)), y′) + λ_d·d(x′, x)`` (eq. 3),
   where F_τ noises x′ to level τ and denoises it in τ steps; the gradient flows through
   every UNet call of F_τ, with fresh noise at every iteration.
2. **Refinement** (§3.2, Algorithm 2): a mask from the channel-summed |x − x′|, normalised
   by its maximum, dilated by a max-pool and thresholded; the pre-explanation is noised
   to τ again and denoised RePaint-style, the region outside the mask replaced by the
   noised input before every step, and the input pasted outside the mask at the end.

Conventions of the official code (guillaumejs2403/ACE: ``main.py`` ``filter_fn``,
``core/attacks_and_models.py`` ``JointClassifierDDPM``, ``PGD``, ``GradientDescent``,
``CW``, ``BinaryCW``; ``core/utils.py`` ``generate_mask``), followed here:

* F_τ noises with ``q_sample`` at respaced index τ−1 and denoises over τ−1 … 0; every
  step but the last adds noise (the last returns the posterior mean), x̂_0 is clipped;
* the attack works on [0, 1] images: PGD ``x′ ← x′ − step·sign(∇)`` (GD without the
  sign), projected on the ε ball around x (ε = 255/255: no bound) and clamped to [0, 1];
  C&W moves w, x′ = (tanh w + 1)(c + 1/2), c = 1e-5, w clamped to [−3, 3];
* the class loss is binary cross-entropy with logits on the target (C&W: ReLU(−2·s), s
  the logit signed towards the target), *averaged over the batch*, while the distance is
  summed: λ_d·Σ|x − x′| (ℓ1) or λ_d·‖x − x′‖₂ per image (ℓ2). Each sample's class loss
  therefore weighs 1/batch (3 in the CelebA script, 1 for CelebA-HQ); here that weight
  is the setting ``loss_batch``, so a result does not depend on the batch it runs in;
* the mask is computed on [0, 1] images, the final paste in [0, 1] at the input's
  resolution, so pixels outside the mask are the input's exactly.

The chains run on the toolkit's denoising loop (`cfbench.diffusion.sampling.denoise`):
F_τ with ``grad=True`` (``checkpoint_every`` recomputes steps in the backward pass), the
refinement with a ``before_step`` hook.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfbench.chunks import fixed_chunk_logits, fixed_chunks
from cfbench.diffusion.backbones import Backbone, create_backbone
from cfbench.diffusion.sampling import Denoiser, denoise
from cfbench.diffusion.spaces import resize
from cfbench.errors import CfbenchError
from cfbench.handles import ClassifierHandle
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig, hparam
from cfbench.randomness import SampleRNG

ATTACKS = ("pgd", "gd", "cw")
DISTANCES = ("l1", "l2")
#: Table 5: ace; pre_explanation (Pre-CE, the attacked x′ itself); filtered (FR-CE, x′ through
#: the respaced filter, no inpainting); filtered_full (F-CE, the same noise level through every
#: training step); unconditional (the null edit: F_τ(x), no attack)
VARIANTS = ("ace", "pre_explanation", "filtered", "filtered_full", "unconditional")
CW_C = 1e-5  # ACE `core/attacks_and_models.py` CW: keeps tanh away from ±1


@dataclass
class ACEConfig(MethodConfig):
    backbone: str = hparam(
        "ddpm-celeba128", "ACE §4 (implementation details); ACE `scripts/celeba-attack.sh`",
        "the unconditional DDPM, a name of cfbench.diffusion.backbones (ddpm-celeba128, ddpm-celebahq256, "
        "synthfaces-ddpm)",
    )  # fmt: skip
    weights_path: str = hparam("", "cfbench", "read the DDPM weights from this file instead of the weights cache / zoo")
    respacing: str = hparam("50", "ACE supp. A; ACE `main.py` (--timestep_respacing)", "steps kept at test time")
    tau: int = hparam(
        5, "ACE §4 (implementation details), supp. A; ACE `main.py` (--sampling_time_fraction × respacing)",
        "respaced noise level of the filter: q_sample at index tau-1, tau denoising steps", low=1,
    )  # fmt: skip
    attack: str = hparam("pgd", "ACE §4.6 (other attacks); ACE `main.py` (--attack_method)",
                         "pgd (sign of the gradient), gd (the gradient) or cw (Carlini-Wagner)", choices=ATTACKS)
    attack_iterations: int = hparam(50, "ACE §4 (implementation details); ACE `main.py` (--attack_iterations)",
                                    "attack iterations", low=0)  # fmt: skip
    attack_step: float = hparam(1.0, "ACE `main.py` (--attack_step)", "step per iteration, in 1/255", low=0.0)
    attack_epsilon: float = hparam(255.0, "ACE §4 (PGD without any bound); ACE `main.py` (--attack_epsilon)",
                                   "ℓ∞ bound around the input, in 1/255 (255: none)", low=0.0)  # fmt: skip
    distance: str = hparam("l1", "ACE §3.1 eq. 3, supp. A", "d(x′, x): l1 or l2", choices=DISTANCES)
    lambda_d: float = hparam(
        0.001, "ACE supp. A (ℓ1: 0.001, ℓ2: 0.1); ACE `main.py` (--dist_l1, --dist_l2)",
        "λ_d of eq. 3; when not set, the paper's value for the distance", low=0.0,
    )  # fmt: skip
    loss_batch: int = hparam(
        3, "ACE `scripts/celeba-attack.sh` (--batch_size 3) with the batch-averaged loss of `core/attacks_and_models.py`",
        "each sample's class loss is divided by this (the official batch size)", low=1,
    )  # fmt: skip
    stochastic: bool = hparam(True, "ACE `main.py` (--sampling_stochastic)", "the filter's steps add noise")
    mask_threshold: float = hparam(0.15, "ACE supp. A; ACE `main.py` (--sampling_inpaint)",
                                   "the dilated, max-normalised |x − x′| above which a pixel is edited", low=0.0)
    dilation: int = hparam(15, "ACE supp. A; ACE `main.py` (--sampling_dilation)",
                           "side of the square max-pool that dilates the mask (odd)", low=1)  # fmt: skip
    checkpoint_every: int = hparam(
        0, "ACE README (--attack_joint_checkpoint, --attack_checkpoint_backward_steps)",
        "recompute this many filter steps at a time in the backward pass (0: keep every activation)", low=0,
    )  # fmt: skip
    network_batch: int = hparam(
        8, "cfbench",
        "the UNet and the classifier are called on chunks of exactly this many images (zero-padded): a network's "
        "arithmetic per image depends on the batch size it runs in, and the sign of PGD turns those last-bit "
        "differences into other counterfactuals, so fixed chunks keep a result independent of the run's batch",
        low=1,
    )  # fmt: skip
    variant: str = hparam("ace", "ACE §4.6, Table 5", "; ".join(VARIANTS), choices=VARIANTS)


def unet_calls(config: ACEConfig, full_tau: int | None = None) -> tuple[int, int]:
    """UNet (forward, backward) calls per counterfactual: τ per attack iteration forward and
    back, then τ for the refinement (F-CE: ``full_tau``, every training step from the same
    level; the unconditional null edit: F_τ once). Checkpointing's recomputation in the
    backward pass is not counted (`cfbench.diffusion.sampling.denoise`)."""
    attack = 0 if config.variant == "unconditional" else config.attack_iterations * config.tau
    refine = {"pre_explanation": 0, "filtered_full": full_tau}.get(config.variant, config.tau)
    return attack + refine, attack


@METHODS.register("ace")
class ACE(Method):
    """ACE: an attack through a diffusion filter, then a masked RePaint refinement"""

    Config = ACEConfig
    access = "white-box"
    paper = "Jeanneret et al., CVPR 2023"
    row_settings = ("distance", "variant")  # ℓ1 and ℓ2 are rows of their own, as are the Table 5 ablations
    dataset_configs = {
        # supp. A: the DiME CelebA 128 px DDPM, τ = 5 of 50, threshold 0.15 (ℓ1 and ℓ2); script batch 3
        "celeba": {"backbone": "ddpm-celeba128", "respacing": "50", "tau": 5, "loss_batch": 3},
        # supp. A: τ = 5 of 25; `scripts/celebahq-attack.sh` batch 1. Thresholds per query in THRESHOLDS
        "celebahq": {"backbone": "ddpm-celebahq256", "respacing": "25", "tau": 5, "loss_batch": 1},
        # the 64 px zoo DDPM at the CelebA setting (τ = 5 of 50: timestep 41 of 500); the 15 px dilation of
        # 128 px CelebA faces covers the same share of a 64 px face at 7 px
        "synthfaces": {"backbone": "synthfaces-ddpm", "respacing": "50", "tau": 5, "loss_batch": 3, "dilation": 7},
    }  # fmt: skip
    # quick: the paper's attack budget (50 × 1/255 = 20 × 2.5/255) in 2.5× fewer iterations
    profiles = {"paper": {}, "quick": {"attack_iterations": 20, "attack_step": 2.5}}
    # synthfaces quick: 30 attack iterations; TUNED_LAMBDA_D is the largest λ_d whose FR on the first 48
    # validation images is ≥ 95% on both smile and age. The sweeps (`benchmarks/tune_method.py --split val`) are
    # recorded in benchmarks/results/ace-tuning-ATTR-val[-l2].json and tabulated in the README
    dataset_profiles = {("synthfaces", "quick"): {"attack_iterations": 30}}
    #: supp. A: mask thresholds that are not 0.15, by (dataset, distance, query)
    THRESHOLDS = {("celebahq", "l2", "smile"): 0.1, ("celebahq", "l2", "age"): 0.05}
    #: supp. A: λ_d by distance
    LAMBDA_D = {"l1": 0.001, "l2": 0.1}
    #: λ_d tuned on a dataset's validation images, by (dataset, distance)
    TUNED_LAMBDA_D = {("synthfaces", "l1"): 0.00003, ("synthfaces", "l2"): 0.001}

    def __init__(self, config: ACEConfig, device: torch.device | str = "cpu", backbone: Backbone | None = None):
        super().__init__(config, device)
        if config.dilation % 2 != 1:
            raise CfbenchError(f"ace: dilation={config.dilation} must be odd (a centred max-pool).")
        self.backbone = backbone or create_backbone(config.backbone, config.respacing, config.weights_path or None)
        self.backbone.model.to(self.device).eval().requires_grad_(False)
        n = self.backbone.process.num_timesteps
        if not 1 <= config.tau <= n:
            raise CfbenchError(f"ace: tau={config.tau} must be in 1..{n} for {n} respaced steps.")

    @classmethod
    def resolve_config(cls, dataset: str, profile: str | None, overrides: dict[str, str],
                       query: str | None = None) -> MethodConfig:
        """As `Method.resolve_config`, with λ_d of the distance (supp. A, or the dataset's
        tuned value) and the mask threshold of (dataset, distance, query) from supp. A
        unless ``--set`` gives them."""
        config = super().resolve_config(dataset, profile, overrides, query)
        defaults = {}
        if "lambda_d" not in overrides:
            defaults["lambda_d"] = cls.TUNED_LAMBDA_D.get((dataset, config.distance), cls.LAMBDA_D[config.distance])
        if "mask_threshold" not in overrides and (dataset, config.distance, query) in cls.THRESHOLDS:
            defaults["mask_threshold"] = cls.THRESHOLDS[(dataset, config.distance, query)]
        return dataclasses.replace(config, **defaults).validate()

    def null_edit(self) -> ACE:
        """F_τ(x): the filter on the input, no attack (Algorithm 1 with no iteration)."""
        return ACE(dataclasses.replace(self.config, variant="unconditional"), self.device, backbone=self.backbone)

    def networks(self) -> dict[str, nn.Module]:
        return {f"backbone {self.backbone.name}": self.backbone.model}

    # -- the method -----------------------------------------------------------------------
    def explain(self, images: Tensor, targets: Tensor, classifier: ClassifierHandle, rng: SampleRNG) -> Counterfactuals:
        cfg = self.config
        n = images.shape[0]
        x = images.to(self.device).detach()
        targets = targets.to(self.device).long()
        rows = torch.arange(n)
        denoiser = Denoiser(self._chunked, self.backbone.process, n)
        unet_backward = torch.zeros(n, dtype=torch.long)
        masks = None
        if cfg.variant == "unconditional":
            pre, cf = x, self.filter(x, denoiser, rng, rows)
        else:
            pre = self.pre_explanation(x, targets, classifier, denoiser, rng)
            unet_backward += cfg.attack_iterations * cfg.tau
            if cfg.variant == "pre_explanation":
                cf = pre
            elif cfg.variant == "ace":
                masks = self.mask(x, pre)
                cf = self.refine(x, pre, masks, denoiser, rng)
            else:  # FR-CE / F-CE: x′ through the filter, no inpainting
                filtering = self._full_denoiser(n) if cfg.variant == "filtered_full" else denoiser
                cf = self.filter(pre, filtering, rng, rows)
                if filtering is not denoiser:
                    denoiser.evals += filtering.evals
        with torch.no_grad():
            success = (self._logits(classifier, cf, rows) > 0).long().cpu() == targets.cpu()
        return Counterfactuals(
            images=cf, success=success, masks=masks, pre_explanations=pre,
            counters={"diffusion_evals": denoiser.evals, "diffusion_gradients": unet_backward, **classifier.counters()},
        )  # fmt: skip

    def filter(self, images: Tensor, denoiser: Denoiser, rng: SampleRNG, rows: Tensor, grad: bool = False,
               before_step: Callable[[Tensor, int, Tensor], Tensor] | None = None) -> Tensor:
        """F_τ: [0, 1] images noised to respaced index τ−1 and denoised over τ−1 … 0 (the
        last step returns the posterior mean), back in [0, 1] (with ``grad``, unclamped: the
        gradient of the classifier's loss reaches every pixel). Algorithm 1, lines 5-13;
        ``before_step`` changes the state before every step (the refinement's RePaint)."""
        tau, process, space = self._tau(denoiser), denoiser.process, self.backbone.space
        z = space.encode(images)
        t = torch.full((z.shape[0],), tau - 1, dtype=torch.long, device=z.device)
        z = process.q_sample(z, t, self._noise(rng, z, rows))
        out = denoise(denoiser, z, tau, rows=rows, noise=rng if self.config.stochastic else None,
                      sampler="ancestral" if self.config.stochastic else "mean", before_step=before_step,
                      grad=grad, checkpoint_every=self.config.checkpoint_every if grad else 0)
        return space.decode(out, tuple(images.shape[-2:]), clamp=not grad)

    def pre_explanation(self, x: Tensor, targets: Tensor, classifier: ClassifierHandle, denoiser: Denoiser,
                        rng: SampleRNG) -> Tensor:
        """x′ of eq. 3 by the attack of ``attack`` (Algorithm 1)."""
        cfg = self.config
        rows = torch.arange(x.shape[0])
        step, eps = cfg.attack_step / 255, cfg.attack_epsilon / 255
        adv = x.clone()
        w = torch.atanh(2 * x / (1 + CW_C) - 1) if cfg.attack == "cw" else None
        for _ in range(cfg.attack_iterations):
            if w is not None:
                adv = (torch.tanh(w) + 1) * (CW_C + 0.5)
            grad = self.loss_gradient(adv, x, targets, classifier, denoiser, rng, rows)
            with torch.no_grad():
                if cfg.attack == "cw":  # the chain rule through x′ = (tanh w + 1)(c + 1/2)
                    w = (w - step * grad * (CW_C + 0.5) * (1 - torch.tanh(w) ** 2)).clamp(-3, 3)
                    continue
                adv = adv - step * (grad.sign() if cfg.attack == "pgd" else grad)
                adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0, 1)
        return adv.detach()

    def loss_gradient(self, adv: Tensor, x: Tensor, targets: Tensor, classifier: ClassifierHandle,
                      denoiser: Denoiser, rng: SampleRNG, rows: Tensor) -> Tensor:
        """∇_x′ of L_class(C(F_τ(x′)), y′)/loss_batch + λ_d·d(x′, x), eq. 3, per sample."""
        cfg = self.config
        leaf = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self._logits(classifier, self.filter(leaf, denoiser, rng, rows, grad=True), rows)
            if cfg.attack == "cw":  # ACE `BinaryCW`
                signed = torch.where(targets == 1, logits, -logits)
                class_loss = F.relu(-2 * signed)
            else:
                class_loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
            (grad,) = torch.autograd.grad(class_loss.sum() / cfg.loss_batch, leaf)
        diff = (adv - x).flatten(1)
        if cfg.distance == "l1":
            dist_grad = torch.sign(diff)  # ∇ Σ|x′ − x|
        else:  # ∇ ‖x′ − x‖₂, 0 where x′ = x
            dist_grad = diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return grad + cfg.lambda_d * dist_grad.view_as(adv)

    def mask(self, x: Tensor, pre: Tensor) -> Tensor:
        """Algorithm 2, lines 7-9 (ACE `core/utils.py` generate_mask): 1 where the dilated,
        max-normalised channel sum of |x − x′| reaches the threshold, (N, 1, H, W)."""
        cfg = self.config
        m = (x - pre).abs().sum(dim=1, keepdim=True)
        m = m / m.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)  # an unchanged image: no mask
        m = F.max_pool2d(m, cfg.dilation, stride=1, padding=(cfg.dilation - 1) // 2)
        return (m >= cfg.mask_threshold).to(x.dtype) * (m > 0).to(x.dtype)

    def refine(self, x: Tensor, pre: Tensor, mask: Tensor, denoiser: Denoiser, rng: SampleRNG) -> Tensor:
        """Algorithm 2, lines 10-18: x′ noised to τ−1 and denoised, the region outside the
        mask replaced by the noised input before every step; then x pasted outside."""
        process, space = denoiser.process, self.backbone.space
        x_enc = space.encode(x)
        m = resize(mask, space.resolution, antialias=False).round()

        def keep_outside(state: Tensor, i: int, at: Tensor) -> Tensor:  # RePaint: the known region at level i
            t = torch.full((state.shape[0],), i, dtype=torch.long, device=state.device)
            known = process.q_sample(x_enc[at.to(x.device)], t, self._noise(rng, state, at))
            return m[at.to(x.device)] * state + (1 - m[at.to(x.device)]) * known

        refined = self.filter(pre, denoiser, rng, torch.arange(x.shape[0]), before_step=keep_outside)
        return mask * refined + (1 - mask) * x  # Algorithm 2, after the loop

    def _noise(self, rng: SampleRNG, like: Tensor, rows: Tensor) -> Tensor:
        if not self.config.stochastic:
            return torch.zeros_like(like)
        return rng.randn(like.shape[1:], rows, device=like.device, dtype=like.dtype)

    def _tau(self, denoiser: Denoiser) -> int:
        """τ on the denoiser's process: the respaced τ, or (F-CE) every training step from
        the same noise level."""
        if denoiser.process is self.backbone.process:
            return self.config.tau
        return int(self.backbone.process.timestep_map[self.config.tau - 1]) + 1

    def _full_denoiser(self, n: int) -> Denoiser:
        """The backbone's network on its training process, no respacing (Table 5's F-CE)."""
        return Denoiser(self._chunked, self.backbone.record.make_process(None), n)

    def _chunked(self, x: Tensor, t: Tensor) -> Tensor:
        """The UNet on chunks of exactly ``network_batch`` rows, the last one zero-padded."""
        return fixed_chunks(self.backbone.model, self.config.network_batch, x, t, fills=(None, t[:1]))

    def _logits(self, classifier: ClassifierHandle, x: Tensor, rows: Tensor) -> Tensor:
        """The classifier's logits on chunks of exactly ``network_batch`` rows (padding rows
        are evaluated, not counted)."""
        return fixed_chunk_logits(classifier, x, rows, self.config.network_batch)

