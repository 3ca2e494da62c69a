"""Strict loaders for the CompVis latent-diffusion checkpoints that LDCE runs
(lmb-freiburg/ldce `sampling_helpers.py` ``get_model``, configs in `configs/ldce/*.yaml`),
built on diffusers' `UNet2DConditionModel`, `AutoencoderKL` and `VQModel`.

A checkpoint is a PyTorch Lightning ``.ckpt`` of ``LatentDiffusion`` (CompVis/latent-diffusion
`ldm/models/diffusion/ddpm.py`) whose ``state_dict`` holds three networks under three prefixes:

* ``model.diffusion_model.``: the ε-network, openaimodel's ``UNetModel`` with spatial transformers;
* ``first_stage_model.``: the autoencoder (``AutoencoderKL`` or ``VQModelInterface``);
* ``cond_stage_model.``: the conditioner (``FrozenCLIPEmbedder`` or ``ClassEmbedder``).

Two architectures are published: `SD_V1` (CompVis/stable-diffusion
`configs/stable-diffusion/v1-inference.yaml`; `MINI_SD` is the same network fine-tuned at
256 px, the one LDCE uses, lmb-freiburg/ldce `configs/ldce/v1_stable_diffusion.yaml`) and
`CIN256_V2` (CompVis/latent-diffusion `configs/latent-diffusion/cin256-v2.yaml`, the
checkpoint of its `scripts/latent_imagenet_diffusion.ipynb`).

Strictness: the official code loads with ``strict=False``; here every key under the three
prefixes must be placed in a module and every parameter and buffer of the modules must come
from the file, with the published shape, or `load_ldm_checkpoint` raises one `CfbenchError`
line naming the file and the first offending keys. Outside the prefixes only LatentDiffusion's
own extras are allowed: its schedule buffers (``betas``, ``alphas_cumprod``, …), of which
``betas`` must be the architecture's schedule, and ``model_ema.*`` (the EMA copy of the
UNet, ignored on purpose: LDCE's configs set ``use_ema: False``). Any other key is an error.

The UNet's and the autoencoder's keys are converted by diffusers' own converters
(`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`), checked to place each tensor
where the published layout says; the VQ codebook, the class embedding and CLIP's text model
(whose transformers 5 module drops the ``text_model.`` level of the published names) are
mapped here. `save_ldm_checkpoint` writes the published layout back.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, VQModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from torch import Tensor, nn

from cfbench.checkpoints import _keys, read_torch
from cfbench.errors import CfbenchError

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

UNET, FIRST_STAGE, CONDITIONER = "model.diffusion_model.", "first_stage_model.", "cond_stage_model."
#: the Hugging Face repository whose tokenizer and config FrozenCLIPEmbedder loads
CLIP = "openai/clip-vit-large-patch14"
CLIP_FILES = ("vocab.json", "merges.txt", "config.json")


@dataclass(frozen=True)
class LDMArchitecture:
    """One published LatentDiffusion configuration, in its yaml's terms. The diffusers
    configurations (`unet_config`, `first_stage_config`) follow from these fields, so
    ``dataclasses.replace`` makes the same key layout at other sizes (tests)."""

    name: str
    #: image side in pixels
    resolution: int
    #: where the checkpoint is published
    published: str
    #: LatentDiffusion's "linear" schedule: β = linspace(√linear_start, √linear_end, T)²
    linear_start: float
    linear_end: float
    num_timesteps: int
    #: latents are multiplied by it before diffusion
    scale_factor: float
    conditioning: Literal["text", "class"]
    #: width of the cross-attention context (CLIP's hidden size, the class embedding's)
    context_dim: int
    #: rows of the class embedding, the last one being "no class"; None for text
    num_classes: int | None
    #: z_channels = embed_dim of the first stage = in/out channels of the UNet
    latent_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    #: downsampling factors whose levels have spatial transformers
    attention_resolutions: tuple[int, ...]
    #: heads of every transformer, each ``channels // num_heads`` wide
    num_heads: int
    first_stage: Literal["kl", "vq"]
    #: the first stage's ``ddconfig``: ``ch``, ``ch_mult`` (``attn_resolutions`` is empty)
    first_stage_channels: int
    first_stage_mult: tuple[int, ...]
    #: codebook size of a VQ first stage
    n_embed: int | None = None
    num_res_blocks: int = 2
    first_stage_res_blocks: int = 2
    transformer_depth: int = 1

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.first_stage_mult) - 1)

    @property
    def unet_config(self) -> dict:
        """`UNet2DConditionModel` arguments (its ``attention_head_dim`` is the number of heads)."""
        attention = [2**level in self.attention_resolutions for level in range(len(self.channel_mult))]
        return dict(
            sample_size=self.latent_size, in_channels=self.latent_channels, out_channels=self.latent_channels,
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
            block_out_channels=tuple(self.model_channels * m for m in self.channel_mult),
            layers_per_block=self.num_res_blocks, cross_attention_dim=self.context_dim,
            attention_head_dim=self.num_heads, transformer_layers_per_block=self.transformer_depth,
            use_linear_projection=False,
        )  # fmt: skip

    @property
    def first_stage_config(self) -> dict:
        """`AutoencoderKL` or `VQModel` arguments."""
        levels = len(self.first_stage_mult)
        config = dict(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(self.first_stage_channels * m for m in self.first_stage_mult),
            layers_per_block=self.first_stage_res_blocks, latent_channels=self.latent_channels,
            sample_size=self.resolution, scaling_factor=self.scale_factor,
        )  # fmt: skip
        if self.first_stage == "vq":
            config.update(num_vq_embeddings=self.n_embed, vq_embed_dim=self.latent_channels)
        return config

    @property
    def betas(self) -> Tensor:
        """β_1..β_T in float64 (LatentDiffusion's ``make_beta_schedule("linear")``, diffusers'
        "scaled_linear")."""
        return torch.linspace(self.linear_start**0.5, self.linear_end**0.5, self.num_timesteps,
                              dtype=torch.float64) ** 2  # fmt: skip


SD_V1 = LDMArchitecture(
    name="Stable Diffusion v1", resolution=512,
    published="https://huggingface.co/CompVis/stable-diffusion-v-1-4-original",
    linear_start=0.00085, linear_end=0.012, num_timesteps=1000, scale_factor=0.18215, conditioning="text",
    context_dim=768, num_classes=None, latent_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4),
    attention_resolutions=(4, 2, 1), num_heads=8, first_stage="kl", first_stage_channels=128,
    first_stage_mult=(1, 2, 4, 4),
)  # fmt: skip
#: Stable Diffusion v1 fine-tuned at 256 px (lmb-freiburg/ldce README), latents 32×32
MINI_SD = replace(SD_V1, name="miniSD", resolution=256, published="https://huggingface.co/justinpinkney/miniSD")
#: ``num_heads: 1`` with openaimodel's ``legacy`` default: one head as wide as the channels
CIN256_V2 = LDMArchitecture(
    name="LDM cin256-v2", resolution=256,
    published="https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt",
    linear_start=0.0015, linear_end=0.0195, num_timesteps=1000, scale_factor=1.0, conditioning="class",
    context_dim=512, num_classes=1001, latent_channels=3, model_channels=192, channel_mult=(1, 2, 3, 5),
    attention_resolutions=(8, 4, 2), num_heads=1, first_stage="vq", first_stage_channels=128,
    first_stage_mult=(1, 2, 4), n_embed=8192,
)  # fmt: skip


class ClassConditioner(nn.Module):
    """LDM's ``ClassEmbedder``: class indices (B,) -> context (B, 1, dim). The last class
    is the unconditional one (1000 for cin256-v2, as LDCE uses it)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, dim)

    def forward(self, classes: Tensor) -> Tensor:
        return self.embedding(classes)[:, None, :]


class TextConditioner(nn.Module):
    """LDM's ``FrozenCLIPEmbedder``: prompts -> context (B, 77, dim), the last hidden state
    of CLIP's text transformer on the prompts padded (and truncated) to 77 tokens, without
    an attention mask."""

    max_length = 77

    def __init__(self, tokenizer: CLIPTokenizer, transformer: CLIPTextModel):
        super().__init__()
        self.tokenizer, self.transformer = tokenizer, transformer

    def forward(self, prompts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(list(prompts), truncation=True, max_length=self.max_length, padding="max_length",
                                return_tensors="pt")["input_ids"]  # fmt: skip
        return self.transformer(input_ids=tokens.to(self.transformer.device)).last_hidden_state


@dataclass(frozen=True)
class LDMParts:
    """The three networks of a LatentDiffusion checkpoint, in eval mode."""

    unet: UNet2DConditionModel
    first_stage: AutoencoderKL | VQModel
    conditioner: TextConditioner | ClassConditioner
    scale_factor: float
    arch: LDMArchitecture


def build_ldm_parts(arch: LDMArchitecture, text_encoder: Path | str | None = None) -> LDMParts:
    """Freshly initialised networks of ``arch``; ``text_encoder`` is the directory with the
    tokenizer and config of `CLIP` (`CLIP_FILES`), needed for text conditioning."""
    if arch.conditioning == "text":
        conditioner: nn.Module = _text_conditioner(arch, text_encoder)
    else:
        conditioner = ClassConditioner(arch.num_classes, arch.context_dim)
    unet, first_stage = build_unet_and_first_stage(arch)
    return LDMParts(unet, first_stage, conditioner.eval(), arch.scale_factor, arch)


def build_unet_and_first_stage(arch: LDMArchitecture) -> tuple[UNet2DConditionModel, nn.Module]:
    """Freshly initialised denoiser and first stage of ``arch`` (no conditioner), in eval mode."""
    first_stage = (AutoencoderKL if arch.first_stage == "kl" else VQModel)(**arch.first_stage_config)
    return UNet2DConditionModel(**arch.unet_config).eval(), first_stage.eval()


def _text_conditioner(arch: LDMArchitecture, directory: Path | str | None) -> TextConditioner:
    try:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise CfbenchError(f"{arch.name} is conditioned on text by CLIP, which needs transformers: "
                           "pip install 'cfbench[text]'.") from None  # fmt: skip
    where = f"(tokenizer and config of {CLIP}, from https://huggingface.co/{CLIP})"
    if directory is None:
        raise CfbenchError(f"{arch.name} is conditioned on text: give the text encoder directory with "
                           f"{', '.join(CLIP_FILES)} {where}.")  # fmt: skip
    directory = Path(directory)
    if not directory.is_dir():
        raise CfbenchError(f"text encoder directory {directory} not found; it should hold "
                           f"{', '.join(CLIP_FILES)} {where}.")  # fmt: skip
    missing = [name for name in CLIP_FILES if not (directory / name).is_file()]
    if missing:
        raise CfbenchError(f"text encoder directory {directory} lacks {', '.join(missing)} {where}.")
    try:
        config = CLIPTextConfig.from_pretrained(directory, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CfbenchError(f"text encoder directory {directory} does not hold a readable CLIP tokenizer and "
                           f"config {where}: {str(e).splitlines()[0]}") from None  # fmt: skip
    return TextConditioner(tokenizer, CLIPTextModel(config))


def load_ldm_checkpoint(path: Path | str, arch: LDMArchitecture, text_encoder: Path | str | None = None) -> LDMParts:
    """The published LatentDiffusion ``.ckpt`` at ``path``, loaded strictly (module
    docstring) into the networks of ``arch``, in float32 and eval mode; ``text_encoder``
    as in `build_ldm_parts`."""
    path = Path(path)
    parts = build_ldm_parts(arch, text_encoder)  # before reading: a missing text encoder fails fast
    checkpoint = read_torch(path, f"{arch.name} checkpoint", published=arch.published, inert_globals=True)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CfbenchError(f"{path} is not a LatentDiffusion checkpoint: it has no state_dict "
                           "(the PyTorch Lightning .ckpt the latent-diffusion code saves has one).")  # fmt: skip
    odd = next((k for k, v in state.items() if not isinstance(v, Tensor)), None)
    if odd is not None:
        raise CfbenchError(f"{path} is not a LatentDiffusion checkpoint: its state_dict entry {odd!r} "
                           "is not a tensor.")  # fmt: skip
    layout = _layout(parts)
    expected = {}
    for part in layout:
        tensors = part.tensors()
        expected |= {name: _published_shape(name, tuple(tensors[key].shape)) for key, name in part.names.items()}
    schedule = _schedule_buffers(arch)
    found = {k: v for k, v in state.items() if not (k in schedule or k.startswith("model_ema."))}
    _check_keys(found, expected, path, arch.name)
    betas = state.get("betas")
    if betas is not None and (betas.shape != schedule["betas"].shape
                              or not torch.allclose(betas.double(), arch.betas, rtol=1e-5, atol=0)):  # fmt: skip
        raise CfbenchError(
            f"{path} has the betas of another noise schedule than {arch.name}'s (linspace(√{arch.linear_start}, "
            f"√{arch.linear_end}, {arch.num_timesteps})²): {betas.numel()} steps from "
            f"{betas.flatten()[0].item():.6g} to {betas.flatten()[-1].item():.6g} in the file."
        )
    for part in layout:
        section = {k: v for k, v in state.items() if k.startswith(part.prefix)}
        _place(part, part.convert(section), section, path)
    return parts


def save_ldm_checkpoint(parts: LDMParts, path: Path | str) -> None:
    """Write ``parts`` as LatentDiffusion saves itself: ``{"state_dict": ...}`` with the
    three networks under their published names and shapes, and the schedule buffers."""
    state = {}
    for part in _layout(parts):
        tensors = part.tensors()
        for key, name in part.names.items():
            tensor = tensors[key].detach().clone()
            state[name] = tensor.reshape(_published_shape(name, tuple(tensor.shape)))
    state.update(_schedule_buffers(parts.arch))
    torch.save({"state_dict": state}, Path(path))


class _Part(NamedTuple):
    """One network of the checkpoint: its module, the published name of each of its
    tensors (keys of its parameters and buffers), and the conversion of the checkpoint's
    section (keys under ``prefix``) to module keys."""

    prefix: str
    module: nn.Module
    names: dict[str, str]
    convert: Callable[[dict[str, Tensor]], dict[str, Tensor]]

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.module.named_parameters()) | dict(self.module.named_buffers())


def _layout(parts: LDMParts) -> list[_Part]:
    """The UNet, the first stage and the conditioner of ``parts`` with their published names."""
    unet, first_stage, conditioner = parts.unet, parts.first_stage, parts.conditioner
    stage_names = _rename(first_stage, FIRST_STAGE, _first_stage_rules(len(first_stage.config.up_block_types)))

    def convert_stage(section: dict[str, Tensor]) -> dict[str, Tensor]:
        converted = convert_ldm_vae_checkpoint(section, first_stage.config)
        codebook = "quantize.embedding.weight"  # the VQ codebook, which the converter leaves out
        return converted | ({codebook: section.get(stage_names[codebook])} if codebook in stage_names else {})

    if isinstance(conditioner, TextConditioner):
        # the published names keep transformers 4's ``text_model.`` level, which transformers 5 drops
        position_ids = {name for name, _ in conditioner.named_buffers() if name.endswith("embeddings.position_ids")}
        condition_names = {key: CONDITIONER + re.sub(r"^transformer\.(?!text_model\.)", "transformer.text_model.", key)
                           for key in [*conditioner.state_dict(), *sorted(position_ids)]}  # fmt: skip
    else:
        condition_names = {key: CONDITIONER + key for key in conditioner.state_dict()}
    return [
        _Part(UNET, unet, _rename(unet, UNET, _unet_rules(unet)),
              lambda section: convert_ldm_unet_checkpoint(section, unet.config)),
        _Part(FIRST_STAGE, first_stage, stage_names, convert_stage),
        _Part(CONDITIONER, conditioner, condition_names,
              lambda section: {key: section.get(name) for key, name in condition_names.items()}),
    ]  # fmt: skip


_Rules = list[tuple[str, Callable[..., str]]]
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_rules(unet: UNet2DConditionModel) -> _Rules:
    """diffusers -> openaimodel names: each level is ``num_res_blocks`` input blocks (ResBlock,
    then SpatialTransformer where the level attends) and a downsampling block; the output
    blocks, deepest level first, have one more ResBlock and end with the upsampler, at
    index 2 after a transformer, else 1."""
    n = unet.config.layers_per_block + 1
    attends = [hasattr(block, "attentions") for block in unet.up_blocks]
    return [
        (r"(time_embedding\.linear_[12]|conv_in|conv_norm_out|conv_out)\.(\w+)", lambda m, p: f"{_UNET_TOP[m]}.{p}"),
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
         lambda b, j, layer, p: f"input_blocks.{1 + int(b) * n + int(j)}.0.{_UNET_RESNET[layer]}.{p}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
         lambda b, j, rest: f"input_blocks.{1 + int(b) * n + int(j)}.1.{rest}"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", lambda b, p: f"input_blocks.{(int(b) + 1) * n}.0.op.{p}"),
        (r"mid_block\.resnets\.(\d)\.(\w+)\.(\w+)",
         lambda j, layer, p: f"middle_block.{2 * int(j)}.{_UNET_RESNET[layer]}.{p}"),
        (r"mid_block\.attentions\.0\.(.+)", lambda rest: f"middle_block.1.{rest}"),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
         lambda b, j, layer, p: f"output_blocks.{int(b) * n + int(j)}.0.{_UNET_RESNET[layer]}.{p}"),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
         lambda b, j, rest: f"output_blocks.{int(b) * n + int(j)}.1.{rest}"),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)",
         lambda b, p: f"output_blocks.{int(b) * n + n - 1}.{2 if attends[int(b)] else 1}.conv.{p}"),
    ]  # fmt: skip


def _first_stage_rules(levels: int) -> _Rules:
    """diffusers -> taming/ldm names: the decoder's ``up`` levels count from the highest
    resolution, diffusers' ``up_blocks`` from the lowest; mid attention convs are linears."""
    nin = {"conv_shortcut": "nin_shortcut"}
    return [
        (r"(encoder|decoder)\.conv_norm_out\.(\w+)", lambda coder, p: f"{coder}.norm_out.{p}"),
        (r"((?:encoder|decoder)\.conv_(?:in|out)|quant_conv|post_quant_conv|quantize\.embedding)\.(\w+)",
         lambda module, p: f"{module}.{p}"),
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
         lambda i, j, layer, p: f"encoder.down.{i}.block.{j}.{nin.get(layer, layer)}.{p}"),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)",
         lambda i, p: f"encoder.down.{i}.downsample.conv.{p}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)",
         lambda i, j, layer, p: f"decoder.up.{levels - 1 - int(i)}.block.{j}.{nin.get(layer, layer)}.{p}"),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)",
         lambda i, p: f"decoder.up.{levels - 1 - int(i)}.upsample.conv.{p}"),
        (r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+)\.(\w+)",
         lambda coder, j, layer, p: f"{coder}.mid.block_{int(j) + 1}.{nin.get(layer, layer)}.{p}"),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_[qkv]|to_out\.0)\.(\w+)",
         lambda coder, layer, p: f"{coder}.mid.attn_1.{_VAE_ATTENTION[layer]}.{p}"),
    ]  # fmt: skip


def _rename(module: nn.Module, prefix: str, rules: _Rules) -> dict[str, str]:
    """The published name of every key of ``module``'s state dict, by the first rule that matches it."""
    names = {}
    for key in module.state_dict():
        found = next(((m, rename) for pattern, rename in rules if (m := re.fullmatch(pattern, key))), None)
        if found is None:
            raise CfbenchError(f"diffusers {diffusers.__version__}'s {type(module).__name__} has a tensor {key!r} "
                               "that the published LatentDiffusion layout has no name for.")  # fmt: skip
        match, rename = found
        names[key] = prefix + rename(*match.groups())
    return names


def _published_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The autoencoder's mid attention is 1×1 convolutions in the published layout, linears in diffusers'."""
    return shape + (1, 1) if re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", name) else shape


def _check_keys(found: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], path: Path, what: str) -> None:
    """One line naming the missing, unexpected and wrongly shaped keys, if any (as `load_strict`)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(found[k].shape) != expected[k])
    if missing or unexpected or wrong:
        shapes = [f"{k!r}: {tuple(found[k].shape)} in the file, {expected[k]} expected" for k in wrong]
        kinds = [_keys(kind, items, sep) for kind, items, sep in (
            ("missing key", [repr(k) for k in missing], ", "), ("unexpected key", [repr(k) for k in unexpected], ", "),
            ("wrongly shaped key", shapes, "; ")) if items]  # fmt: skip
        raise CfbenchError(f"{path} does not fit {what}: {', '.join(kinds)}.")


def _place(part: _Part, converted: Mapping[str, Tensor | None], section: Mapping[str, Tensor], path: Path) -> None:
    """Copy each converted tensor into ``part.module``, after checking that the conversion
    took it from the tensor the published layout names (the same storage)."""
    tensors = part.tensors()
    with torch.no_grad():
        for key, name in part.names.items():
            value = converted.get(key)
            if value is None or value.data_ptr() != section[name].data_ptr():
                raise CfbenchError(f"diffusers {diffusers.__version__} converts {path} against the published layout: "
                                   f"its {key!r} is not the file's {name!r} (cfbench was checked with diffusers "
                                   "0.42.1).")  # fmt: skip
            tensors[key].copy_(value.reshape(tensors[key].shape))


def _schedule_buffers(arch: LDMArchitecture) -> dict[str, Tensor]:
    """The schedule buffers LatentDiffusion saves (``register_schedule``, v_posterior 0),
    computed in float64 and stored in float32 as it does."""
    betas = arch.betas
    alphas = 1 - betas
    cumprod = torch.cumprod(alphas, 0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    variance = betas * (1 - previous) / (1 - cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": cumprod, "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - cumprod).log(), "sqrt_recip_alphas_cumprod": (1 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / cumprod - 1).sqrt(), "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1 - cumprod),
        "posterior_mean_coef2": (1 - previous) * alphas.sqrt() / (1 - cumprod),
    }  # fmt: skip
    return {name: value.float() for name, value in buffers.items()}
