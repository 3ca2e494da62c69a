"""The Diffusion Autoencoder (Preechakul et al., "Diffusion Autoencoders: Toward a
Meaningful and Decodable Representation", CVPR 2022), the generative model behind GCD,
written so that the published Lightning checkpoints load *as they are*: parameter names,
shapes and the order of operations follow ``BeatGANsAutoencModel`` of phizaz/diffae
(``time_embed.time_embed``, ``input_blocks``, ``middle_block``, ``output_blocks``, ``out``,
``encoder.*``).

An image x_0 is represented by two codes (paper §3, cited below by its section titles):

* the *semantic subcode* z_sem = Enc_φ(x_0) ∈ R^512 ("Semantic encoder"): a half UNet —
  the encoding half of the decoder plus one more level, with unconditioned residual blocks
  — ending in GroupNorm, SiLU, global average pooling and a 1×1 convolution
  (:class:`SemanticEncoder`);
* the *stochastic subcode* x_T ("Stochastic encoder"): x_0 run through the deterministic
  DDIM generative process backwards, conditioned on z_sem,
  x_{t+1} = √ᾱ_{t+1} f_θ(x_t, t, z_sem) + √(1-ᾱ_{t+1}) ε_θ(x_t, t, z_sem), with f_θ the
  predicted x_0 (:meth:`DiffAE.invert`); :meth:`DiffAE.render` runs it forwards again.

The decoder ("Diffusion-based decoder") is guided-diffusion's UNet
(:mod:`cfbench.diffusion.unet`) whose residual blocks are conditioned on both the timestep
and z_sem by adaptive group normalisation, written in the paper as
AdaGN(h, t, z_sem) = z_s (t_s GroupNorm(h) + t_b); the code, and so this module, applies
``(GN(h)·(1 + t_s) + t_b)·(1 + z_s)`` with (t_s, t_b) = Linear(SiLU(temb)) and
z_s = Linear(SiLU(z_sem)) (:class:`CondResBlock`).

Sampling follows DiffAE's code (T = 1000 linear betas, ε prediction, DDIM with η = 0 on
"ddimN" respacing, x̂_0 clipped to [-1, 1] in both directions). The original runs the UNet
under CUDA fp16 autocast inside its samplers; this module computes in the caller's dtype.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from cfbench.checkpoints import load_strict, read_torch
from cfbench.diffusion.gaussian import GaussianDiffusion
from cfbench.diffusion.sampling import Denoiser, ddim_invert, denoise
from cfbench.diffusion.unet import (
    GroupNorm32,
    ResBlock,
    TimestepSequential,
    UNet,
    UNetConfig,
    attention_block,
    downsampling_blocks,
)
from cfbench.errors import CfbenchError
from cfbench.weights import WEIGHTS


@dataclass(frozen=True)
class DiffAEConfig(UNetConfig):
    """``BeatGANsAutoencConfig`` as DiffAE's autoencoder templates resolve it: ε only,
    scale-shift norm, ResBlock up/down-sampling, one attention head, attention at 16 px,
    a 512-d timestep embedding independent of ``model_channels``. ``enc_channel_mult``
    (None: ``channel_mult``) sets the semantic encoder's levels, ``enc_out_channels`` the
    size of z_sem. ``dropout`` is the training value (inactive in eval mode)."""

    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    learn_sigma: bool = False
    dropout: float = 0.1
    embed_channels: int | None = 512
    enc_channel_mult: tuple[float, ...] | None = None
    enc_out_channels: int = 512

    def __post_init__(self) -> None:
        if not self.use_scale_shift_norm or self.learn_sigma:
            raise ValueError("DiffAE uses scale-shift norm and predicts ε only (use_scale_shift_norm=True, "
                             "learn_sigma=False)")


#: GCD's ``celeba128_autoenc``: 128,545,155 parameters. The same network as DiffAE's
#: ``ffhq128_autoenc_base``, so it also reads DiffAE's FFHQ128 autoencoder checkpoints (the
#: "72M" and "130M" in its README count training images, not parameters).
CELEBA_128 = DiffAEConfig(image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4),
                          enc_channel_mult=(1, 1, 2, 3, 4, 4))
#: DiffAE's ``ffhq256_autoenc``: 168,492,291 parameters.
FFHQ_256 = DiffAEConfig(image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4),
                        enc_channel_mult=(1, 1, 2, 2, 4, 4, 4))

PRESETS = {"celeba128": CELEBA_128, "ffhq256": FFHQ_256}
#: where each preset's ``last.ckpt`` is published (cfbench.weights)
PUBLISHED = {"celeba128": WEIGHTS["diffae-celeba128"].url, "ffhq256": WEIGHTS["diffae-ffhq256"].url}


class CondResBlock(ResBlock):
    """The decoder's residual block: guided-diffusion's scale-shift AdaGN on the timestep
    embedding, then a per-channel scale from z_sem (``cond_emb_layers``; no shift):
    ``(GN(h)·(1 + t_s) + t_b)·(1 + z_s)`` (AdaGN of the paper's §3 "Diffusion-based decoder",
    as implemented)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float, cond_channels: int,
                 up: bool = False, down: bool = False, norm_groups: int = 32):  # fmt: skip
        super().__init__(channels, emb_channels, out_channels, dropout, True, up=up, down=down, norm_groups=norm_groups)
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels, out_channels))

    def adagn(self, h: torch.Tensor, emb_out: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is None:
            raise ValueError("a DiffAE decoder block needs the semantic code z_sem (cond)")
        h = super().adagn(h, emb_out, cond)
        return h * (1 + self.cond_emb_layers(cond).type(h.dtype)[..., None, None])


class SemanticEncoder(nn.Module):
    """Enc_φ (paper §3 "Semantic encoder"): x_0 in [-1, 1] (N, 3, H, W) -> z_sem
    (N, ``enc_out_channels``), the raw output (no normalisation). Keys ``input_blocks``,
    ``middle_block``, ``out.{0,3}``."""

    def __init__(self, config: DiffAEConfig):
        super().__init__()
        c = config

        def res(channels: int, out_channels: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(channels, None, out_channels, up=up, down=down, norm_groups=c.norm_groups)

        self.input_blocks, skips = downsampling_blocks(c, c.enc_channel_mult or c.channel_mult, res)
        ch = skips[-1]
        self.middle_block = TimestepSequential(res(ch, ch), attention_block(c, ch), res(ch, ch))
        self.out = nn.Sequential(GroupNorm32(ch, c.norm_groups), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Conv2d(ch, c.enc_out_channels, 1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.input_blocks:
            h = block(h)
        return self.out(self.middle_block(h))


class _TimeEmbed(nn.Module):
    """DiffAE's ``TimeStyleSeperateEmbed``: the timestep MLP one level deeper
    (``time_embed.time_embed``); its z_sem "style" branch is the identity."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.time_embed = mlp

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.time_embed(emb)


@lru_cache(maxsize=8)
def ddim_process(steps: int) -> GaussianDiffusion:
    """DiffAE's DDIM sampler for ``steps`` steps: its training process (the DiffAE records of
    `cfbench.diffusion.backbones`: T = 1000 linear betas, ε) on "ddim{steps}" respacing,
    x̂_0 clipped."""
    from cfbench.diffusion.backbones import BACKBONES

    return BACKBONES.get("diffae-celeba128").make_process(f"ddim{steps}")


class DiffAE(UNet):
    """The conditional denoiser ε_θ(x_t, t, z_sem) with its semantic encoder (``encoder``).

    ``model(x_t, t, z_sem) -> ε`` with ``t`` the original timesteps (0..999). High level,
    batched, images in [-1, 1]: :meth:`encode` (x_0 -> z_sem), :meth:`invert` (x_0, z_sem ->
    x_T) and :meth:`render` (z_sem, x_T -> x_0). :meth:`invert` and :meth:`render` run
    under ``no_grad``; :meth:`encode` does not."""

    config: DiffAEConfig

    def __init__(self, config: DiffAEConfig):
        super().__init__(config)
        self.time_embed = _TimeEmbed(self.time_embed)
        self.encoder = SemanticEncoder(config)

    def res_block(self, channels: int, out_channels: int, up: bool = False, down: bool = False) -> ResBlock:
        c = self.config
        return CondResBlock(channels, c.emb_channels, out_channels, c.dropout, c.enc_out_channels, up=up, down=down,
                            norm_groups=c.norm_groups)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_sem = Enc_φ(x) for images x in [-1, 1], (N, 3, H, W) -> (N, 512)."""
        return self.encoder(x)

    def _eps(self, z_sem: torch.Tensor, x: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The ε-model the samplers call, (x_t, t) -> ε_θ(x_t, t, z_sem)."""
        if z_sem.shape[0] != x.shape[0]:
            raise ValueError(f"z_sem has {z_sem.shape[0]} rows for a batch of {x.shape[0]} images")
        return lambda x_t, t: self(x_t, t, z_sem)

    def invert(self, x: torch.Tensor, z_sem: torch.Tensor, steps: int = 250, progress: bool = False) -> torch.Tensor:
        """The stochastic subcode x_T (paper §3 "Stochastic encoder"): deterministic DDIM
        inversion of x (in [-1, 1]) conditioned on z_sem over the ``steps`` timesteps
        {0, s, 2s, ...} of T = 1000 (DiffAE's ``encode_stochastic``; GCD uses 250 steps)."""
        return ddim_invert(Denoiser(self._eps(z_sem, x), ddim_process(steps), len(x)), x, progress=progress)

    def render(self, z_sem: torch.Tensor, x_T: torch.Tensor, steps: int = 100, progress: bool = False) -> torch.Tensor:
        """Decode (z_sem, x_T) to an image in [-1, 1] by deterministic DDIM sampling (η = 0)
        over ``steps`` steps (GCD uses 100). DiffAE's ``render`` returns (x + 1)/2 instead."""
        return denoise(Denoiser(self._eps(z_sem, x_T), ddim_process(steps), len(x_T)), x_T, sampler="ddim",
                       progress=progress)


def _preset_name(config: DiffAEConfig) -> str | None:
    return next((name for name, preset in PRESETS.items() if preset == config), None)


def load_diffae_checkpoint(path: Path | str, config: DiffAEConfig | str = CELEBA_128) -> DiffAE:
    """A DiffAE in eval mode with the EMA weights (``ema_model.*``, as DiffAE and GCD use)
    of a Lightning ``last.ckpt``; ``config`` is a :class:`DiffAEConfig` or a preset name
    (``celeba128``, ``ffhq256``). Every problem is one :class:`CfbenchError`."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise CfbenchError(f"unknown DiffAE configuration {config!r}; expected one of {', '.join(PRESETS)}.")
        config = PRESETS[config]
    name = _preset_name(config)
    path = Path(path)
    ckpt = read_torch(path, f"DiffAE checkpoint{f' ({name})' if name else ''}",
                      published=PUBLISHED.get(name or ""), inert_globals=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CfbenchError(f"{path} is not a DiffAE Lightning checkpoint (no 'state_dict' dict).")
    prefix = "ema_model."
    ema = {k[len(prefix):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
    if not ema:
        raise CfbenchError(f"{path} holds no '{prefix}*' weights (not a DiffAE Lightning checkpoint).")
    what = f"the DiffAE {name or f'{config.image_size}px custom'} architecture"
    return load_strict(DiffAE(config), ema, path, what).eval()
