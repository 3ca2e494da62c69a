"""The ε-prediction UNet of guided-diffusion (Dhariwal & Nichol, NeurIPS 2021, §3 and
App. A), the network behind the DiME and ACE DDPMs, written so that the published
checkpoints load *as they are*: parameter names, shapes and the order of operations
follow the original module tree (``time_embed``, ``input_blocks``, ``middle_block``,
``output_blocks``, ``out``).

The number of attention heads is a setting that the weights cannot tell: the CelebA-128
DDPM of DiME/ACE uses ``num_heads=4``, the CelebA-HQ-256 DDPM of ACE
``num_head_channels=64`` (DiME `main.py`/`test.sh` flags; ACE `scripts/celebahq-attack.sh`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cfbench.checkpoints import load_strict, read_torch
from cfbench.errors import CfbenchError


@dataclass(frozen=True)
class UNetConfig:
    """guided-diffusion's ``create_model`` arguments; ``attention_resolutions`` are in
    pixels (as on its command line), ``channel_mult`` is one entry per resolution level."""

    image_size: int
    model_channels: int
    channel_mult: tuple[float, ...]
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    learn_sigma: bool = True
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_new_attention_order: bool = False
    in_channels: int = 3
    dropout: float = 0.0
    #: width of the timestep embedding; None: 4 × model_channels (guided-diffusion)
    embed_channels: int | None = None
    #: groups of every GroupNorm; guided-diffusion's 32 (the published checkpoints). At 32
    #: channels that is one channel a group, which erases each channel's spatial mean, so
    #: the network cannot carry the input's mean colour to ε: narrow models need fewer
    norm_groups: int = 32

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def emb_channels(self) -> int:
        return self.embed_channels or 4 * self.model_channels

    @property
    def attention_ds(self) -> set[int]:
        """The downsampling factors at which blocks are followed by self-attention."""
        return {self.image_size // r for r in self.attention_resolutions}

    def heads(self, channels: int, upsample: bool = False) -> int:
        if self.num_head_channels != -1:
            return channels // self.num_head_channels
        return self.num_heads_upsample if upsample and self.num_heads_upsample != -1 else self.num_heads


#: The CelebA 128×128 DDPM shared by DiME and ACE (DiME `test.sh` flags, ``--num_heads 4``): 500 linear steps.
CELEBA_128 = UNetConfig(image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4))
#: ACE's CelebA-HQ 256×256 DDPM (ACE `scripts/celebahq-attack.sh`, ``--num_head_channels 64``).
CELEBAHQ_256 = UNetConfig(image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_head_channels=64)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cosines first
    (Vaswani et al. 2017 §3.5, in guided-diffusion's layout)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class GroupNorm32(nn.GroupNorm):
    """Group normalisation (32 groups unless told) computed in float32 (as the original,
    for fp16 inference)."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 convolution when ``use_conv`` (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class Downsample(nn.Module):
    """Strided 3×3 convolution when ``use_conv`` (key ``op``), else 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding; with scale-shift norm the
    embedding gives (scale, shift) applied as GN(h)·(1 + scale) + shift (Dhariwal &
    Nichol §3, "AdaGN"; :meth:`adagn`). ``up``/``down`` resample inside the block (BigGAN
    style). ``emb_channels=None`` is the unconditioned block of DiffAE's semantic encoder:
    it ends after ``in_layers`` (no ``emb_layers``, no ``out_layers``)."""

    def __init__(self, channels: int, emb_channels: int | None, out_channels: int | None = None, dropout: float = 0.0,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False,
                 norm_groups: int = 32):  # fmt: skip
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(channels, norm_groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.resample = (Upsample(channels, False) if up else Downsample(channels, False)) if up or down else None
        self.conditioned = emb_channels is not None
        if self.conditioned:
            self.emb_layers = nn.Sequential(
                nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
            )
            self.out_layers = nn.Sequential(
                GroupNorm32(out_channels, norm_groups), nn.SiLU(), nn.Dropout(dropout),
                zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
            )  # fmt: skip
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """``cond`` is handed to :meth:`adagn` (unused here; DiffAE's blocks take z_sem)."""
        if self.resample is not None:
            h = self.resample(self.in_layers[:-1](x))
            x = self.resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        if self.conditioned:
            emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
            if self.use_scale_shift_norm:
                h = self.out_layers[1:](self.adagn(self.out_layers[0](h), emb_out, cond))
            else:
                h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h

    def adagn(self, h: torch.Tensor, emb_out: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """GN(h)·(1 + scale) + shift, (scale, shift) = ``emb_out`` split on channels; ``h`` is
        already normalised."""
        scale, shift = emb_out.chunk(2, dim=1)
        return h * (1 + scale) + shift


class AttentionBlock(nn.Module):
    """Spatial self-attention. The "legacy" order splits the qkv channels per head first
    and then into q, k, v; the new order splits into q, k, v first."""

    def __init__(self, channels: int, num_heads: int, new_order: bool = False, norm_groups: int = 32):
        super().__init__()
        self.num_heads, self.new_order = num_heads, new_order
        self.norm = GroupNorm32(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, head = qkv.shape[-1], c // self.num_heads
        if self.new_order:
            q, k, v = (t.reshape(b * self.num_heads, head, length) for t in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.num_heads, 3 * head, length).split(head, dim=1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.proj_out(a.transpose(1, 2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """Runs its layers in order, passing the embedding (and an extra condition) to those that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,  # type: ignore[override]
                cond: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, cond) if isinstance(layer, ResBlock) else layer(x)
        return x


def attention_block(c: UNetConfig, channels: int, upsample: bool = False) -> AttentionBlock:
    return AttentionBlock(channels, c.heads(channels, upsample), c.use_new_attention_order, c.norm_groups)


def downsampling_blocks(c: UNetConfig, channel_mult: tuple[float, ...],
                        res: Callable[..., ResBlock]) -> tuple[nn.ModuleList, list[int]]:
    """The encoding half of the UNet: a 3×3 convolution, then per level ``num_res_blocks``
    ResBlocks ``res(cin, cout)`` (each followed by attention at ``attention_resolutions``)
    and, between levels, ``res(ch, ch, down=True)`` or a strided convolution. Also returns
    the output channels of every block (the skip connections), in order."""
    ch = int(channel_mult[0] * c.model_channels)
    blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(c.in_channels, ch, 3, padding=1))])
    skips, ds = [ch], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(c.num_res_blocks):
            layers: list[nn.Module] = [res(ch, int(mult * c.model_channels))]
            ch = int(mult * c.model_channels)
            if ds in c.attention_ds:
                layers.append(attention_block(c, ch))
            blocks.append(TimestepSequential(*layers))
            skips.append(ch)
        if level != len(channel_mult) - 1:
            blocks.append(TimestepSequential(res(ch, ch, down=True) if c.resblock_updown else Downsample(ch, True)))
            skips.append(ch)
            ds *= 2
    return blocks, skips


class UNet(nn.Module):
    """``UNet(config)(x, t) -> (ε, v)`` stacked on channels (learned σ) or ε alone; ``t``
    holds the original (not respaced) timesteps. Subclasses change the blocks through
    :meth:`res_block` and may pass every ResBlock an extra ``cond`` (DiffAE)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        emb = c.emb_channels
        self.time_embed = nn.Sequential(nn.Linear(c.model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        res = self.res_block
        self.input_blocks, skips = downsampling_blocks(c, c.channel_mult, res)
        ch, ds = skips[-1], 2 ** (len(c.channel_mult) - 1)
        self.middle_block = TimestepSequential(res(ch, ch), attention_block(c, ch), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers: list[nn.Module] = [res(ch + skips.pop(), int(mult * c.model_channels))]
                ch = int(mult * c.model_channels)
                if ds in c.attention_ds:
                    layers.append(attention_block(c, ch, upsample=True))
                if level and i == c.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if c.resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(
            GroupNorm32(ch, c.norm_groups), nn.SiLU(), zero_module(nn.Conv2d(ch, c.out_channels, 3, padding=1))
        )

    def res_block(self, channels: int, out_channels: int, up: bool = False, down: bool = False) -> ResBlock:
        c = self.config
        return ResBlock(channels, c.emb_channels, out_channels, c.dropout, c.use_scale_shift_norm, up=up, down=down,
                        norm_groups=c.norm_groups)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        h, hs = x, []
        for block in self.input_blocks:
            h = block(h, emb, cond)
            hs.append(h)
        h = self.middle_block(h, emb, cond)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, cond)
        return self.out(h)


def load_guided_diffusion(path: Path | str, config: UNetConfig, what: str = "guided-diffusion UNet") -> UNet:
    """A published guided-diffusion ``.pt`` (a raw fp32 state dict, no wrapper), loaded
    strictly into the architecture ``config`` describes."""
    state = read_torch(Path(path), what)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CfbenchError(f"{path} is not a guided-diffusion state dict (expected a dict of tensors).")
    return load_strict(UNet(config), state, path, f"the {what} ({config.image_size} px)").eval()
