"""Strict loading of the CompVis LatentDiffusion checkpoints (Stable Diffusion v1 / miniSD,
cin256-v2) into diffusers' networks: round trips of tiny versions through the published
layout, the published key names, and one-line errors for files that do not fit."""
from __future__ import annotations

import json
import string
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cfbench.diffusion.ldm import CIN256_V2, SD_V1, LDMParts, build_ldm_parts, load_ldm_checkpoint, save_ldm_checkpoint
from cfbench.errors import CfbenchError

# the published architectures 32 channels wide (UNet, first stage, context): the same key layout
TINY_SD = replace(SD_V1, model_channels=32, context_dim=32, first_stage_channels=32)
TINY_CIN = replace(CIN256_V2, model_channels=32, context_dim=32, first_stage_channels=32)

# Names in the published checkpoints (checked against the modules of lmb-freiburg/ldce's `ldm` code
# built at these settings); the tiny configurations keep them.
SD_KEYS = [
    *(f"model.diffusion_model.{k}" for k in [
        "time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.0.weight",
        "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.0.emb_layers.1.weight", "input_blocks.1.0.out_layers.0.bias",
        "input_blocks.1.0.out_layers.3.weight", "input_blocks.1.1.norm.weight", "input_blocks.1.1.proj_in.weight",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.bias",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",
        "input_blocks.1.1.transformer_blocks.0.ff.net.2.weight", "input_blocks.1.1.transformer_blocks.0.norm3.bias",
        "input_blocks.1.1.proj_out.weight", "input_blocks.3.0.op.weight", "input_blocks.4.0.skip_connection.weight",
        "input_blocks.11.0.out_layers.3.bias", "middle_block.0.in_layers.0.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_v.weight", "middle_block.2.out_layers.3.weight",
        "output_blocks.0.0.skip_connection.weight", "output_blocks.2.1.conv.weight", "output_blocks.3.1.proj_in.weight",
        "output_blocks.5.2.conv.bias", "output_blocks.8.2.conv.weight",
        "output_blocks.11.1.transformer_blocks.0.norm1.weight", "out.0.weight", "out.2.bias"]),
    *(f"first_stage_model.{k}" for k in [
        "encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
        "encoder.down.1.block.0.nin_shortcut.weight", "encoder.down.3.block.1.conv2.bias", "encoder.mid.block_1.norm1.weight",
        "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.proj_out.weight", "encoder.mid.block_2.conv2.weight",
        "encoder.norm_out.weight", "encoder.conv_out.bias", "quant_conv.weight", "post_quant_conv.bias",
        "decoder.conv_in.weight", "decoder.mid.attn_1.norm.bias", "decoder.up.3.upsample.conv.weight",
        "decoder.up.1.block.0.nin_shortcut.weight", "decoder.up.0.block.2.conv2.weight", "decoder.norm_out.weight",
        "decoder.conv_out.weight"]),
    *(f"cond_stage_model.transformer.text_model.{k}" for k in [
        "embeddings.token_embedding.weight", "embeddings.position_embedding.weight", "embeddings.position_ids",
        "encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.0.self_attn.out_proj.bias",
        "encoder.layers.0.layer_norm1.weight", "encoder.layers.0.mlp.fc1.weight", "encoder.layers.0.mlp.fc2.bias",
        "encoder.layers.0.layer_norm2.bias", "final_layer_norm.weight"]),
    "betas", "alphas_cumprod", "posterior_mean_coef2",
]  # fmt: skip
CIN_KEYS = [
    *(f"model.diffusion_model.{k}" for k in [
        "input_blocks.1.0.in_layers.0.weight", "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
        "input_blocks.9.0.op.weight", "input_blocks.11.1.proj_out.bias", "middle_block.1.proj_in.weight",
        "output_blocks.2.2.conv.weight", "output_blocks.8.2.conv.bias", "output_blocks.9.0.skip_connection.weight",
        "output_blocks.11.0.out_layers.3.weight"]),
    *(f"first_stage_model.{k}" for k in [
        "quantize.embedding.weight", "encoder.down.1.downsample.conv.weight", "encoder.down.2.block.1.norm2.weight",
        "decoder.up.2.upsample.conv.weight", "decoder.up.0.block.0.nin_shortcut.weight", "post_quant_conv.weight"]),
    "cond_stage_model.embedding.weight",
]  # fmt: skip
#: not in cin256-v2: its first level has no transformer, its deepest level has one (upsampler at .2)
NOT_CIN_KEYS = ["model.diffusion_model.input_blocks.1.1.norm.weight", "model.diffusion_model.output_blocks.2.1.conv.weight"]


def write_clip(directory: Path) -> Path:
    """A tiny CLIP text encoder in the Hugging Face layout of openai/clip-vit-large-patch14:
    a BPE vocabulary of single letters, no merges, a one-layer text config (77 positions)."""
    from transformers import CLIPTextConfig

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in string.ascii_lowercase:
        vocab[letter], vocab[f"{letter}</w>"] = len(vocab), len(vocab) + 1
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                   max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1).save_pretrained(directory)  # fmt: skip
    return directory


def randomised(parts: LDMParts) -> LDMParts:
    """Random values in every parameter (diffusers zero-initialises none, but the check must not rely on it)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in (parts.unet, parts.first_stage, parts.conditioner):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * (0.05 if p.dim() > 1 else 0.3))
    return parts


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Networks this small run faster on one intra-op thread than on two that wait for each
    other on a busy machine (hundredfold with another job on both cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[LDMParts, Path, Path | None]]:
    """Each tiny architecture, randomised and saved in the published layout: (parts, file, text encoder)."""
    root = tmp_path_factory.mktemp("ldm")
    clip = write_clip(root / "clip")
    result = {}
    for key, arch, text in (("sd", TINY_SD, clip), ("cin", TINY_CIN, None)):
        parts = randomised(build_ldm_parts(arch, text))
        save_ldm_checkpoint(parts, root / f"{key}.ckpt")
        result[key] = parts, root / f"{key}.ckpt", text
    return result


def tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | dict(module.named_buffers())


def message(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("key", ["sd", "cin"])
def test_round_trip_through_published_layout(saved, key):
    parts, path, text = saved[key]
    loaded = load_ldm_checkpoint(path, parts.arch, text)
    assert loaded.scale_factor == parts.arch.scale_factor and loaded.arch == parts.arch
    for name in ("unet", "first_stage", "conditioner"):
        mine, theirs = tensors(getattr(parts, name)), tensors(getattr(loaded, name))
        assert mine.keys() == theirs.keys()
        for k, v in mine.items():
            assert theirs[k].dtype == v.dtype and torch.equal(theirs[k], v), (name, k)
        assert not any(m.training for m in getattr(loaded, name).modules())
    torch.manual_seed(1)
    latents, image = torch.randn(2, parts.arch.latent_channels, 8, 8), torch.randn(2, 3, 16, 16)
    condition = ["a cat", "zebra"] if key == "sd" else torch.tensor([3, 1000])
    with torch.no_grad():
        context = parts.conditioner(condition)
        assert context.shape == ((2, 77, 32) if key == "sd" else (2, 1, 32))
        assert torch.equal(loaded.conditioner(condition), context)
        t = torch.tensor([10, 900])
        assert torch.equal(loaded.unet(latents, t, context).sample, parts.unet(latents, t, context).sample)
        if key == "sd":
            encode = [m.encode(image).latent_dist.mean for m in (parts.first_stage, loaded.first_stage)]
        else:
            encode = [m.encode(image).latents for m in (parts.first_stage, loaded.first_stage)]
        assert torch.equal(*encode)
        z = torch.randn(2, parts.arch.latent_channels, 4, 4)
        assert torch.equal(loaded.first_stage.decode(z).sample, parts.first_stage.decode(z).sample)


def test_published_key_names(saved):
    sd = torch.load(saved["sd"][1])["state_dict"]
    cin = torch.load(saved["cin"][1])["state_dict"]
    assert not [k for k in SD_KEYS if k not in sd]
    assert not [k for k in CIN_KEYS if k not in cin]
    assert not [k for k in NOT_CIN_KEYS if k in cin]
    # published shapes: 1×1 convolutions where diffusers has linears; the codebook, class table, position ids
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (128, 128, 1, 1)
    assert sd["model.diffusion_model.input_blocks.1.1.proj_in.weight"].shape == (32, 32, 1, 1)
    assert torch.equal(sd["cond_stage_model.transformer.text_model.embeddings.position_ids"], torch.arange(77)[None])
    assert cin["first_stage_model.quantize.embedding.weight"].shape == (8192, 3)
    assert cin["cond_stage_model.embedding.weight"].shape == (1001, 32)


def test_ema_weights_and_schedule_buffers_are_allowed(saved, tmp_path):
    parts, path, _ = saved["cin"]
    state = torch.load(path)["state_dict"]
    state |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7),
              "model_ema.out2bias": torch.zeros(3)}  # fmt: skip
    torch.save({"state_dict": state, "global_step": 7}, tmp_path / "ema.ckpt")
    loaded = load_ldm_checkpoint(tmp_path / "ema.ckpt", TINY_CIN)
    assert torch.equal(loaded.unet.conv_out.bias, parts.unet.conv_out.bias)


def changed(saved, tmp_path: Path, change) -> Path:
    """The tiny cin256-v2 checkpoint with ``change(state)`` applied, saved at a new path."""
    state = torch.load(saved["cin"][1])["state_dict"]
    change(state)
    path = tmp_path / "changed.ckpt"
    torch.save({"state_dict": state}, path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(tmp_path / "model.ckpt", TINY_CIN)
    assert str(tmp_path / "model.ckpt") in message(error) and "not found" in message(error)


def test_file_without_state_dict(tmp_path):
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "model.ckpt")
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(tmp_path / "model.ckpt", TINY_CIN)
    assert str(tmp_path / "model.ckpt") in message(error) and "no state_dict" in message(error)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda s: s.update({"model.diffusion_model.input_blocks.1.0.extra.weight": torch.zeros(2)}),
         "unexpected key 'model.diffusion_model.input_blocks.1.0.extra.weight'"),
        (lambda s: s.pop("model.diffusion_model.out.2.bias"), "missing key 'model.diffusion_model.out.2.bias'"),
        (lambda s: s.update({"first_stage_model.quant_conv.weight": torch.zeros(3, 3, 3, 3)}),
         "wrongly shaped key 'first_stage_model.quant_conv.weight': (3, 3, 3, 3) in the file, (3, 3, 1, 1) expected"),
        (lambda s: s.update({"first_stage_model.decoder.mid.attn_1.v.weight": torch.zeros(128, 128)}),
         "wrongly shaped key 'first_stage_model.decoder.mid.attn_1.v.weight': (128, 128) in the file, (128, 128, 1, 1)"),
        (lambda s: s.update({"cond_stage_model.embedding.weight": torch.zeros(1000, 32)}),
         "'cond_stage_model.embedding.weight': (1000, 32) in the file, (1001, 32) expected"),
        (lambda s: s.update({"logvar": torch.zeros(1000)}), "unexpected key 'logvar'"),
        (lambda s: s.update({"betas": SD_V1.betas.float()}), "betas of another noise schedule"),
    ],
    ids=["extra-unet-key", "missing-key", "wrong-shape", "attention-as-linear", "class-table", "unknown-key", "betas"],
)  # fmt: skip
def test_checkpoint_that_does_not_fit(saved, tmp_path, change, expected):
    path = changed(saved, tmp_path, change)
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(path, TINY_CIN)
    assert str(path) in message(error) and expected in message(error)


def test_checkpoint_of_another_architecture(saved):
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(saved["cin"][1], TINY_SD, saved["sd"][2])
    assert "does not fit Stable Diffusion v1: " in message(error) and "missing keys" in message(error)


def test_text_encoder_files(saved, tmp_path):
    clip = write_clip(tmp_path / "clip")
    (clip / "merges.txt").unlink()
    path = saved["sd"][1]
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(path, TINY_SD, clip)
    assert f"{clip} lacks merges.txt" in message(error) and "openai/clip-vit-large-patch14" in message(error)
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(path, TINY_SD)
    assert "conditioned on text" in message(error) and "vocab.json, merges.txt, config.json" in message(error)
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(path, TINY_SD, tmp_path / "nowhere")
    assert f"{tmp_path / 'nowhere'} not found" in message(error)


def test_conversion_that_misplaces_a_tensor(saved, monkeypatch):
    """diffusers' converter is checked against the published layout on every load."""
    from cfbench.diffusion import ldm

    convert = ldm.convert_ldm_unet_checkpoint

    def swapped(section, config):
        converted = convert(section, config)
        converted["conv_in.bias"], converted["conv_out.bias"] = converted["conv_out.bias"], converted["conv_in.bias"]
        return converted

    monkeypatch.setattr(ldm, "convert_ldm_unet_checkpoint", swapped)
    with pytest.raises(CfbenchError) as error:
        load_ldm_checkpoint(saved["cin"][1], TINY_CIN)
    assert "'conv_in.bias' is not the file's 'model.diffusion_model.input_blocks.0.0.bias'" in message(error)
