"""The `ldce` method: LDCE, Latent Diffusion Counterfactual Explanations.

Farid, Schrodi, Argus & Brox, arXiv 2310.06668: §3.1 (counterfactuals in latent space,
eq. 9), §3.2 (consensus guidance, eqs. 10-11), §4 (implementation details) and App. D
(Table 5, prompts). Variants: ``cls`` (a class- or attribute-conditional model, LDCE-cls)
and ``txt`` (a text-conditional one, LDCE-txt).

1. **Abduction**: the input is encoded, z_0 = E(x), and noised to DDIM index
   ⌊strength·steps⌋ (eq. 2).
2. **Counterfactual generation**, every DDIM step (η = 0) from there: one UNet call on
   [z_t, z_t] with the unconditional and the target's condition gives ε_u and ε_c;
   x̂_0 = D((z_t − √(1−ᾱ_t) ε_u)/√ᾱ_t) (eq. 4, decoded differentiably); the gradients
   with respect to z_t, through decoder and UNet, of log p(target | x̂_0) (the
   classifier) and of the L1 distance between x̂_0 (clamped to [0, 1]) and the input;
   the classifier score −√(1−ᾱ_t)∇ zeroed at every latent position where its angle
   with the implicit classifier's ε_c − ε_u exceeds γ (the consensus mask, eqs. 10-11);
   both scores rescaled to ‖ε_c − ε_u‖ per sample; the step takes
   ε = ε_u + η·(λ_c·classifier score − λ_d·distance score) (eq. 6).

Conventions of the official code (lmb-freiburg/ldce ``ldm/models/diffusion/cc_ddim.py``
``conditional_score``, ``p_sample_ddim``, ``stochastic_encode``, ``decode``;
``sampling_helpers.py`` ``cone_project_chuncked_zero``, ``_renormalize_gradient``),
followed here: x̂_0 comes from ε_u; ε_c − ε_u sets the mask and the norm but is not
added; the angle is taken per latent pixel across channels (regions of 1×1, §4); the
noise is added at DDIM index ⌊strength·steps⌋ and denoising starts one index lower (as
Stable Diffusion's img2img does); the binary classifier's log-probability is −BCE of its
logit against the target; the DDIM step takes x̂_0 from the guided ε, unclipped.

Where cfbench differs, and why: the target is the opposite of the classifier's
prediction, as for every method here (the official code flips the ground-truth label:
``cfbench run --target label``);
the noise of each sample comes from its own generator (the official code gives every
sample of a batch the same draw); the first stage encodes to its posterior mean (the
official code samples a KL posterior). The official CelebA-HQ config runs with
``guidance: "free"``, which returns plain classifier-free guidance before any classifier
gradient is taken: here that is ``--set guidance=free`` (PROTOCOL.md §7); the default
runs the method as the paper describes it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfbench.chunks import pad_rows
from cfbench.diffusion.backbones import BACKBONES, create_latent_backbone
from cfbench.diffusion.latent import LatentBackbone
from cfbench.diffusion.sampling import Denoiser, denoise
from cfbench.errors import CfbenchError
from cfbench.handles import ClassifierHandle
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig, hparam
from cfbench.randomness import SampleRNG

VARIANTS = ("cls", "txt")
GUIDANCES = ("projected", "free", "none")
CONDITIONING = {"cls": ("attributes", "class"), "txt": ("text",)}


@dataclass
class LDCEConfig(MethodConfig):
    backbone: str = hparam(
        "cin256-v2", "LDCE §4 (implementation details), App. B",
        "the latent diffusion model, a name of cfbench.diffusion.backbones (cin256-v2, minisd, synthfaces-ldm)",
    )  # fmt: skip
    weights_path: str = hparam("", "cfbench", "read the backbone from this checkpoint instead of the weights cache")
    text_encoder: str = hparam("", "lmb-freiburg/ldce `configs/stable-diffusion/v1-inference.yaml` (FrozenCLIPEmbedder)",
                               "folder of the CLIP ViT-L/14 tokenizer and config (LDCE-txt; default: the weights cache)")
    variant: str = hparam("cls", "LDCE §3.2 (LDCE-cls, LDCE-txt)", "cls: class/attribute-conditional backbone; "
                          "txt: text-conditional", choices=VARIANTS)
    query: str = hparam("", "cfbench", "the query the condition asks for (set from --attr)")
    ddim_steps: int = hparam(500, "LDCE §4 (respacing by a factor of 2); lmb-freiburg/ldce `configs/ldce/*.yaml` "
                             "(ddim_steps)", "DDIM steps of the whole chain", low=1)
    strength: float = hparam(0.382, "LDCE App. D, Table 5 (T = 191 of 500 for ImageNet)",
                             "abduction depth: the chain starts at DDIM index floor(strength * ddim_steps)",
                             low=0.0, high=0.999)  # fmt: skip
    scale: float = hparam(2.0, "LDCE §4 (η = 2; the official configs use 3)", "η of eq. 6", low=0.0)
    lambda_c: float = hparam(2.3, "LDCE App. D, Table 5", "λ_c, the classifier score's weight", low=0.0)
    lambda_d: float = hparam(0.3, "LDCE App. D, Table 5", "λ_d, the distance score's weight", low=0.0)
    gamma: float = hparam(45.0, "LDCE §3.2 eq. 11, App. D Table 5", "consensus threshold γ in degrees",
                          low=0.0, high=180.0)  # fmt: skip
    consensus: bool = hparam(True, "LDCE §3.2, Table 1 (w/o consensus)", "filter the classifier score (eq. 11)")
    guidance: str = hparam(
        "projected", "LDCE §3; lmb-freiburg/ldce `cc_ddim.py` (guidance)",
        "projected: the method; free: classifier-free guidance towards the target condition, no classifier "
        "(the official CelebA-HQ config); none: the unconditional chain (the null edit)", choices=GUIDANCES,
    )  # fmt: skip
    backprop_diffusion: bool = hparam(True, "lmb-freiburg/ldce `configs/ldce/*.yaml` (backprop_diffusion)",
                                      "differentiate through the UNet (false: through the decoder only)")
    same_norms: bool = hparam(True, "lmb-freiburg/ldce `configs/ldce/*.yaml` (enforce_same_norms)",
                              "rescale both scores to ‖ε_c − ε_u‖ per sample")
    network_batch: int = hparam(
        4, "LDCE README (batch size 4)",
        "the chain runs on chunks of exactly this many images (padded): a network's arithmetic per image depends "
        "on the batch it runs in and the consensus mask thresholds it, so fixed chunks keep a result independent "
        "of the run's batch", low=1,
    )  # fmt: skip


@METHODS.register("ldce")
class LDCE(Method):
    """LDCE: classifier guidance in a latent diffusion model, filtered by consensus with its implicit classifier"""

    Config = LDCEConfig
    access = "white-box"
    paper = "Farid et al., arXiv 2310.06668"
    row_settings = ("variant", "consensus", "guidance")
    dataset_configs = {
        # App. D, Table 5, LDCE-txt on CelebA-HQ: miniSD, T = 160 of 500, λ_c 3.95, λ_d 3.5, γ 90°
        "celebahq": {"backbone": "minisd", "variant": "txt", "strength": 0.32, "lambda_c": 3.95, "lambda_d": 3.5,
                     "gamma": 90.0},
        # not in the paper: CelebA's 128 px images through the CelebA-HQ setting (miniSD works at 256 px)
        "celeba": {"backbone": "minisd", "variant": "txt", "strength": 0.32, "lambda_c": 3.95, "lambda_d": 3.5,
                   "gamma": 90.0},
        # the zoo's attribute-conditional latent model, LDCE-cls's ImageNet values (Table 5) but λ_c = 40: on 32 test
        # images (quick; `benchmarks/tune_method.py --method ldce --profile quick --n 32 --attr smile|age --grid
        # "lambda_c=20|40|80" --grid "strength=0.382|0.45"`) λ_c 2.3 / 20 / 40 / 80 at strength 0.382 flip smile on
        # 38 / 81 / 94 / 97 % (16 images for 2.3) and age on – / 94 / 100 / – %, the null edit 9.4 % / 6.3 %;
        # strength 0.45 adds to the null edit (15.6 % smile), not to the flips
        "synthfaces": {"backbone": "synthfaces-ldm", "variant": "cls", "lambda_c": 40.0},
    }  # fmt: skip
    # quick: 50 DDIM steps (the zoo model's card is measured at 50), the same abduction depth; official: the
    # official code's recipe where it differs from the paper's (CelebA-HQ: `configs/ldce/v1_celebAHQ.yaml` with the
    # README's overrides, guidance "free" included)
    profiles = {"paper": {}, "quick": {"ddim_steps": 50}, "official": {}}
    dataset_profiles = {("celebahq", "official"): {"guidance": "free", "strength": 0.502, "scale": 3.0,
                                                   "lambda_c": 4.0, "lambda_d": 3.3, "gamma": 55.0}}

    def __init__(self, config: LDCEConfig, device: torch.device | str = "cpu", backbone: LatentBackbone | None = None):
        super().__init__(config, device)
        record = BACKBONES.get(config.backbone)
        if record.kind != "ldm":
            raise CfbenchError(f"ldce: backbone {config.backbone} is not a latent diffusion model.")
        if record.conditioning not in CONDITIONING[config.variant]:
            raise CfbenchError(f"ldce: variant {config.variant} needs a {' or '.join(CONDITIONING[config.variant])}-"
                               f"conditional backbone; {config.backbone} is {record.conditioning}-conditional.")
        self.backbone = backbone or create_latent_backbone(config.backbone, f"ddim{config.ddim_steps}",
                                                           config.weights_path or None, config.text_encoder or None)
        for module in self.backbone.modules.values():
            module.to(self.device).eval().requires_grad_(False)
        self.start = int(config.strength * config.ddim_steps)  # lmb-freiburg/ldce `scripts/ldce.py` (t_enc)
        if not 1 <= self.start < self.backbone.process.num_timesteps:
            raise CfbenchError(f"ldce: strength {config.strength} × {config.ddim_steps} steps starts at DDIM index "
                               f"{self.start}; it must be in 1..{self.backbone.process.num_timesteps - 1}.")

    @classmethod
    def resolve_config(cls, dataset: str, profile: str | None, overrides: dict[str, str],
                       query: str | None = None) -> MethodConfig:
        """As `Method.resolve_config`, with the condition's query taken from ``--attr``."""
        config = super().resolve_config(dataset, profile, overrides, query)
        if "query" not in overrides and query:
            config = dataclasses.replace(config, query=query)
        return config.validate()

    def null_edit(self) -> LDCE:
        """The abduction and the unconditional chain at the same strength: no guidance."""
        return LDCE(dataclasses.replace(self.config, guidance="none"), self.device, backbone=self.backbone)

    def networks(self) -> dict[str, nn.Module]:
        return dict(self.backbone.modules)

    # -- the method -----------------------------------------------------------------------
    def explain(self, images: Tensor, targets: Tensor, classifier: ClassifierHandle, rng: SampleRNG) -> Counterfactuals:
        n, size = images.shape[0], self.config.network_batch
        rows = torch.arange(n)
        padded = [pad_rows(t, size, t[:1]) for t in (images.to(self.device), targets.to(self.device).long(), rows)]
        evals, grads, out = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), []
        for i in range(0, padded[0].shape[0], size):
            chunk_rows = padded[2][i : i + size].clone()
            real = torch.arange(i, i + size) < n
            cf, e, g = self.chain(padded[0][i : i + size], padded[1][i : i + size], classifier,
                                  rng, chunk_rows, torch.where(real, chunk_rows, torch.tensor(-1)))
            out.append(cf)
            evals.index_add_(0, chunk_rows[real], e[real])
            grads.index_add_(0, chunk_rows[real], g[real])
        cf = torch.cat(out)[:n]
        with torch.no_grad():
            success = classifier.predict(cf, rows) == targets.cpu().long()
        return Counterfactuals(images=cf, success=success,
                               counters={"diffusion_evals": evals, "diffusion_gradients": grads, **classifier.counters()})

    def chain(self, x: Tensor, targets: Tensor, classifier: ClassifierHandle, rng: SampleRNG, rows: Tensor,
              counted: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Abduction and guided generation for one chunk; returns the counterfactuals in
        [0, 1] and per row the UNet evaluations and backward passes (each also a backward
        pass through the decoder). ``counted`` maps each
        row to its sample (−1: padding, not counted by the classifier handle)."""
        cfg, bb = self.config, self.backbone
        process, size = bb.process, tuple(x.shape[-2:])
        with torch.no_grad():
            z0 = bb.encode(bb.space.encode(x))
            noise = rng.randn(z0.shape[1:], rows, device=z0.device, dtype=z0.dtype)
            z = process.q_sample(z0, torch.full((len(x),), self.start, device=z0.device), noise)  # eq. 2
        unconditional = bb.null_context(len(x))
        condition = bb.context(targets, cfg.query) if cfg.guidance != "none" else None
        contexts = unconditional if condition is None else torch.cat([unconditional.to(condition.device), condition])
        calls = 1 if condition is None else 2

        def network(z_t: Tensor, t: Tensor) -> Tensor:  # [ε_u | ε_c] on the channels, from one UNet call
            if condition is None:
                return bb.network(z_t, t, contexts)
            return torch.cat(bb.network(torch.cat([z_t, z_t]), torch.cat([t, t]), contexts).chunk(2), dim=1)

        def guided(z_t: Tensor, i: int, at: Tensor, evaluate) -> Tensor:
            if condition is None:
                return evaluate(z_t)
            return self.guided_eps(z_t, i, evaluate, x, targets, classifier, counted)

        denoiser = Denoiser(network, process, len(x))
        z = denoise(denoiser, z, self.start, rows=torch.arange(len(x)), sampler="ddim", eps_guidance=guided)
        with torch.no_grad():
            cf = bb.space.decode(bb.decode(z), size)
        # two backward passes a guided step through the UNet (and the decoder): ∇ log p and ∇ L1
        backward = 2 * int(cfg.guidance == "projected" and cfg.backprop_diffusion)
        return cf, denoiser.evals * calls, denoiser.evals * backward

    def guided_eps(self, z: Tensor, i: int, evaluate, x: Tensor, targets: Tensor, classifier: ClassifierHandle,
                   counted: Tensor) -> Tensor:
        """ε of one guided step (eqs. 4, 6, 10-11; official ``conditional_score``)."""
        cfg, bb = self.config, self.backbone
        channels = z.shape[1]
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            if cfg.guidance == "projected" and cfg.backprop_diffusion:
                both = evaluate(leaf)
            else:
                with torch.no_grad():
                    both = evaluate(leaf)
            eps_u, eps_c = both[:, :channels], both[:, channels:]
            delta = (eps_c - eps_u).detach()  # the implicit classifier (eq. 7)
            if cfg.guidance == "free":  # classifier-free guidance (eq. 8)
                return (eps_u + cfg.scale * delta).detach()
            ac = float(bb.process.alphas_cumprod[i])
            x0 = (leaf - math.sqrt(1 - ac) * eps_u) / math.sqrt(ac)  # eq. 4, from ε_u
            image = bb.space.decode(bb.decode(x0), tuple(x.shape[-2:]), clamp=False)
            logits = classifier.logits(image, counted)
            log_p = -F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
            distance = (image.clamp(0, 1) - x).abs().flatten(1).sum(1)  # L1 (lp_custom 1, reduction sum)
            (g_c,) = torch.autograd.grad(log_p.sum(), leaf, retain_graph=True)
            (g_d,) = torch.autograd.grad(distance.sum(), leaf)
        sigma = math.sqrt(1 - ac)
        classifier_score = -sigma * g_c  # eq. 6
        if cfg.consensus:
            classifier_score = classifier_score * consensus_mask(delta, classifier_score, cfg.gamma)  # eq. 11
        distance_score = -sigma * g_d
        if cfg.same_norms:
            classifier_score, distance_score = same_norm(classifier_score, delta), same_norm(distance_score, delta)
        return (eps_u + cfg.scale * (cfg.lambda_c * classifier_score - cfg.lambda_d * distance_score)).detach()


def consensus_mask(implicit: Tensor, score: Tensor, gamma: float) -> Tensor:
    """1 at the latent positions where the angle between the two scores' channel vectors
    is at most ``gamma`` degrees, else 0 (LDCE eqs. 10-11, regions of 1×1); (N, 1, H, W).
    A position where either vector is zero (no angle) is kept, as in the official code."""
    cos = (implicit * score).sum(1, keepdim=True) / (implicit.norm(dim=1, keepdim=True) * score.norm(dim=1, keepdim=True))
    angle = torch.acos(cos.clamp(-1, 1))
    return (~(angle > math.radians(gamma))).to(score.dtype)


def same_norm(score: Tensor, reference: Tensor) -> Tensor:
    """``score`` rescaled to the L2 norm of ``reference`` per sample (official
    ``_renormalize_gradient``; a zero score stays zero)."""
    dims = tuple(range(1, score.ndim))
    norm = torch.linalg.vector_norm(score, dim=dims, keepdim=True)
    target = torch.linalg.vector_norm(reference, dim=dims, keepdim=True)
    return score * target / torch.where(norm < 1e-22, norm + 1e-22, norm)
