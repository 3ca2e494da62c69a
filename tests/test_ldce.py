"""LDCE (methods/ldce.py): the consensus mask and the norms on constructed scores with
known answers, classifier-free guidance at scale 1, the step counts, what guidance does
to the classifier on a tiny random latent model, and batch independence."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from cfbench.diffusion.backbones import LDM_PROCESS
from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.latent import UNKNOWN, AttributeLatentUNet, KLAutoencoder, LatentBackbone
from cfbench.diffusion.spaces import PixelSpace
from cfbench.errors import CfbenchError
from cfbench.handles import WhiteBoxClassifier
from cfbench.randomness import SampleRNG
from methods.ldce import LDCE, LDCEConfig, consensus_mask, same_norm


def vectors_at(angles_deg: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (1, 4, 1, P) score maps whose channel vectors at position p are at angles_deg[p]."""
    reference = torch.zeros(1, 4, 1, len(angles_deg))
    score = torch.zeros_like(reference)
    for p, a in enumerate(angles_deg):
        reference[0, 0, 0, p] = 2.0
        score[0, 0, 0, p], score[0, 1, 0, p] = 3 * math.cos(math.radians(a)), 3 * math.sin(math.radians(a))
    return reference, score


def test_consensus_mask_keeps_the_positions_within_gamma():
    reference, score = vectors_at([0, 30, 44, 46, 90, 135, 180])
    assert consensus_mask(reference, score, 45).flatten().tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert consensus_mask(reference, score, 90).flatten().tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert consensus_mask(reference, score, 180).flatten().tolist() == [1] * 7
    # a position without an angle (a zero vector) is kept, as the official code keeps NaN angles
    score[..., 2] = 0
    assert consensus_mask(reference, score, 45).flatten()[2] == 1


def test_same_norm_rescales_each_sample_to_the_reference_norm():
    score = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    score[2] = 0
    reference = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 7.0, 3.0]).view(3, 1, 1, 1)
    out = same_norm(score, reference)
    torch.testing.assert_close(out[:2].flatten(1).norm(dim=1), reference[:2].flatten(1).norm(dim=1))
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    cos = nn.functional.cosine_similarity(out[:2].flatten(1), score[:2].flatten(1))
    torch.testing.assert_close(cos, torch.ones(2))


def tiny_latent_backbone(seed: int = 0, steps: int = 10) -> LatentBackbone:
    """A random attribute-conditional latent model on 16 px images (f = 2, 8×8×4 latents,
    two attributes; the query is attribute 0)."""
    torch.manual_seed(seed)
    vae = KLAutoencoder({"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 2,
                         "up_block_types": ("UpDecoderBlock2D",) * 2, "block_out_channels": (8, 8),
                         "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4, "sample_size": 16})
    unet = AttributeLatentUNet(2, 8, {"sample_size": 8, "in_channels": 4, "out_channels": 4,
                                      "block_out_channels": (8, 16), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                                      "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "layers_per_block": 1,
                                      "attention_head_dim": 2, "norm_num_groups": 4})
    for module in (vae, unet):
        module.eval()
    process = GaussianDiffusion.from_config(**LDM_PROCESS, beta_start=0.00085, beta_end=0.012, respacing=f"ddim{steps}")

    def states(targets: torch.Tensor, query: str) -> torch.Tensor:
        return torch.stack([targets.long(), torch.full_like(targets.long(), UNKNOWN)], dim=1)

    return LatentBackbone("tiny", unet, vae, process, PixelSpace(16), states,
                          lambda n: torch.full((n, 2), UNKNOWN, dtype=torch.long), {"unet": unet, "vae": vae})


class Redness(nn.Module):
    """A differentiable toy classifier: the logit is how much redder than green the image is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[:, 0] - x[:, 1]).mean(dim=(1, 2))


def make(backbone: LatentBackbone, **settings) -> LDCE:
    config = dataclasses.replace(LDCEConfig(), **{"backbone": "synthfaces-ldm", "ddim_steps": 10, "strength": 0.6,
                                                  "query": "smile", **settings})
    return LDCE(config, backbone=backbone)


def images(n: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def explain(method: LDCE, x: torch.Tensor, targets: torch.Tensor, ids=None):
    handle = WhiteBoxClassifier(Redness(), len(x))
    return method.explain(x, targets, handle, SampleRNG(0, ids or [f"s{i}" for i in range(len(x))])), handle


def test_classifier_free_guidance_at_scale_1_is_the_conditional_prediction():
    backbone = tiny_latent_backbone()
    method = make(backbone, guidance="free", scale=1.0)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 0])
    condition = backbone.context(targets, "smile")
    t = backbone.process.model_timesteps(torch.full((2,), 4))

    def evaluate(y):
        contexts = torch.cat([backbone.null_context(2), condition])
        return torch.cat(backbone.network(torch.cat([y, y]), torch.cat([t, t]), contexts).chunk(2), dim=1)

    eps = method.guided_eps(z, 4, evaluate, images(2), targets, WhiteBoxClassifier(Redness(), 2), torch.arange(2))
    with torch.no_grad():
        torch.testing.assert_close(eps, backbone.network(z, t, condition), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(eps, backbone.network(z, t, backbone.null_context(2)), atol=1e-4)


def test_counts_and_the_null_edit():
    """Projected guidance: two UNet evaluations (ε_u, ε_c) and two backward passes (∇ log p,
    ∇ L1) per step, one classifier gradient per step; the null edit evaluates ε_u once per step and queries nothing."""
    backbone = tiny_latent_backbone()
    method = make(backbone)
    steps = method.start  # floor(0.6 * 10) = 6 steps, DDIM indices 5 … 0
    assert steps == 6
    result, handle = explain(method, images(3), torch.tensor([1, 1, 0]))
    assert result.counters["diffusion_evals"].tolist() == [2 * steps] * 3
    assert result.counters["diffusion_gradients"].tolist() == [2 * steps] * 3
    assert handle.gradients.tolist() == [steps] * 3
    null, handle = explain(method.null_edit(), images(3), torch.tensor([1, 1, 0]))
    assert null.counters["diffusion_evals"].tolist() == [steps] * 3
    assert null.counters["diffusion_gradients"].tolist() == [0] * 3 and handle.gradients.tolist() == [0] * 3
    assert result.images.shape == (3, 3, 16, 16) and 0 <= float(result.images.min()) <= float(result.images.max()) <= 1


def test_guidance_moves_the_classifier_towards_the_target():
    """On a random latent model, the classifier's logit moves towards each image's target
    from the null edit's, in both directions, by more with a larger λ_c."""
    backbone = tiny_latent_backbone()
    x, targets = images(4), torch.tensor([1, 0, 1, 0])
    sign = targets.float() * 2 - 1
    null, _ = explain(make(backbone).null_edit(), x, targets)
    shifts = []
    for lambda_c in (1.0, 4.0):
        guided, _ = explain(make(backbone, lambda_c=lambda_c, lambda_d=0.1, gamma=180.0, scale=3.0), x, targets)
        with torch.no_grad():
            shifts.append(sign * (Redness()(guided.images) - Redness()(null.images)))
    assert (shifts[0] > 0).all(), shifts[0]
    assert (shifts[1] > shifts[0]).all(), shifts


def test_without_consensus_differs_and_a_zero_threshold_filters_everything():
    """γ = 0 zeroes the classifier score almost everywhere, so the result is close to the
    λ_c = 0 chain; ``consensus=false`` uses the whole score."""
    backbone = tiny_latent_backbone()
    x, targets = images(2), torch.tensor([1, 0])
    filtered, _ = explain(make(backbone, gamma=0.0, lambda_d=0.0), x, targets)
    no_classifier, _ = explain(make(backbone, lambda_c=0.0, lambda_d=0.0), x, targets)
    unfiltered, _ = explain(make(backbone, consensus=False, lambda_d=0.0), x, targets)
    torch.testing.assert_close(filtered.images, no_classifier.images, atol=1e-4, rtol=0)
    assert (unfiltered.images - no_classifier.images).abs().max() > 1e-2


def test_a_result_does_not_depend_on_the_batch():
    backbone = tiny_latent_backbone()
    method = make(backbone, network_batch=2)
    x, targets = images(3), torch.tensor([1, 0, 1])
    together, _ = explain(method, x, targets)
    alone, _ = explain(method, x[1:2], targets[1:2], ids=["s1"])
    torch.testing.assert_close(together.images[1:2], alone.images, rtol=0, atol=1e-6)


def test_settings_that_cannot_run_are_one_line():
    backbone = tiny_latent_backbone()
    with pytest.raises(CfbenchError, match="variant txt needs a text-conditional backbone"):
        make(backbone, variant="txt")
    with pytest.raises(CfbenchError, match="starts at DDIM index 0"):
        make(backbone, strength=0.05)
    with pytest.raises(CfbenchError, match="not a latent diffusion model"):
        LDCE(dataclasses.replace(LDCEConfig(), backbone="synthfaces-ddpm"))
    config = LDCE.resolve_config("synthfaces", "quick", {}, "smile")
    assert (config.backbone, config.variant, config.query, config.ddim_steps) == ("synthfaces-ldm", "cls", "smile", 50)
    official = LDCE.resolve_config("celebahq", "official", {}, "age")
    assert (official.guidance, official.strength, official.backbone, official.variant) == ("free", 0.502, "minisd", "txt")
