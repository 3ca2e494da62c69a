"""cfbench.diffusion.diffae: the DiffAE key layout of the published checkpoints, the
Lightning checkpoint loader (strict, one-line errors, no code run while unpickling), and
encode / invert / render. Parity with phizaz/diffae's own ``BeatGANsAutoencModel`` and
samplers was measured out of tree (max |diff| 0 on CPU, see the module's report)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cfbench.diffusion.diffae import (
    CELEBA_128,
    FFHQ_256,
    DiffAE,
    DiffAEConfig,
    load_diffae_checkpoint,
)
from cfbench.errors import CfbenchError

#: a 16-pixel DiffAE with every kind of block (attention at 8 px, up/down ResBlocks, skips)
TINY = DiffAEConfig(image_size=16, model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2),
                    attention_resolutions=(8,), embed_channels=64, enc_out_channels=64)
#: ᾱ_t of DiffAE's training schedule: T = 1000 linear betas from 1e-4 to 0.02
ALPHA_BAR = torch.from_numpy(np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000)))


def randomised(config: DiffAEConfig = TINY, seed: int = 0) -> DiffAE:
    """A DiffAE in eval mode with every parameter random (the zero-initialised output
    convolutions would otherwise make ε ≡ 0)."""
    model = DiffAE(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if p.dim() == 1 and name.endswith("weight") else 0.0
            p.copy_(offset + torch.randn(p.shape, generator=g) * (0.05 if p.dim() > 1 else 0.1))
    return model


def images(n: int, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


# ---------------------------------------------------------------- key layout


def layout(config: DiffAEConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in DiffAE(config).state_dict().items()}


def test_celeba128_keys_match_gcd_checkpoint_layout():
    keys = layout(CELEBA_128)
    assert len(keys) == 608
    assert sum(np.prod(s) for s in keys.values()) == 128_545_155
    assert sum(np.prod(s) for k, s in keys.items() if k.startswith("encoder.")) == 24_673_536
    expected = {  # from the constructor trace of BeatGANsAutoencModel (celeba128_autoenc)
        "time_embed.time_embed.0.weight": (512, 128),
        "input_blocks.0.0.weight": (128, 3, 3, 3),
        "input_blocks.1.0.emb_layers.1.weight": (256, 512),
        "input_blocks.1.0.cond_emb_layers.1.weight": (128, 512),
        "input_blocks.10.1.qkv.weight": (1152, 384, 1),
        "output_blocks.0.0.skip_connection.weight": (512, 1024, 1, 1),
        "output_blocks.2.1.in_layers.2.weight": (512, 512, 3, 3),
        "output_blocks.5.2.emb_layers.1.weight": (768, 512),
        "out.2.weight": (3, 128, 3, 3),
        "encoder.input_blocks.1.0.in_layers.2.weight": (128, 128, 3, 3),
        "encoder.input_blocks.15.0.in_layers.2.weight": (512, 512, 3, 3),
        "encoder.out.3.weight": (512, 512, 1, 1),
    }
    assert {k: keys.get(k) for k in expected} == expected
    # the encoder's blocks are unconditioned, down/up blocks keep their width
    for absent in ("encoder.input_blocks.1.0.out_layers.0.weight", "encoder.input_blocks.1.0.emb_layers.1.weight",
                   "input_blocks.3.0.skip_connection.weight", "time_embed.0.weight",
                   "encoder.input_blocks.18.0.in_layers.0.weight"):
        assert absent not in keys


def test_ffhq256_keys_match_diffae_checkpoint_layout():
    keys = layout(FFHQ_256)
    assert len(keys) == 706
    assert sum(np.prod(s) for s in keys.values()) == 168_492_291
    expected = {
        "time_embed.time_embed.2.weight": (512, 512),
        "input_blocks.13.1.qkv.weight": (1536, 512, 1),
        "output_blocks.5.2.cond_emb_layers.1.weight": (512, 512),
        "output_blocks.17.0.skip_connection.weight": (128, 256, 1, 1),
        "encoder.input_blocks.20.0.in_layers.2.weight": (512, 512, 3, 3),
        "encoder.middle_block.1.qkv.weight": (1536, 512, 1),
    }
    assert {k: keys.get(k) for k in expected} == expected
    assert not any(k.startswith("encoder.input_blocks.21.") for k in keys)


# ---------------------------------------------------------------- checkpoint loading


class FakeModelCheckpoint:
    """Stands for a Lightning callback class: Lightning 1.4 keys callback states by class."""


def _touch(path: str) -> None:
    Path(path).touch()


class RunsCodeWhenUnpickled:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return _touch, (self.path,)


def lightning_checkpoint(path: Path, state: dict[str, torch.Tensor], tmp_path: Path) -> Path:
    """A file shaped like DiffAE's ``last.ckpt``: raw and EMA weights, the x_T buffer, and
    non-tensor entries that plain ``weights_only`` loading refuses."""
    torch.save({
        "epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.4.5",
        "state_dict": {**{f"ema_model.{k}": v for k, v in state.items()},
                       **{f"model.{k}": torch.zeros_like(v) for k, v in state.items()},
                       "x_T": torch.randn(4, 3, 16, 16)},
        "callbacks": {FakeModelCheckpoint: {"best_model_score": torch.tensor(0.5), "dirpath": "checkpoints"}},
        "hparams_name": "kwargs", "hyper_parameters": {"name": "tiny", "T": 1000, "fp16": True},
        "untrusted": RunsCodeWhenUnpickled(tmp_path / "code-ran"),
    }, path)
    return path


def test_lightning_checkpoint_round_trip_without_running_code(tmp_path: Path):
    source = randomised(seed=3)
    path = lightning_checkpoint(tmp_path / "last.ckpt", source.state_dict(), tmp_path)
    loaded = load_diffae_checkpoint(path, TINY)
    assert not (tmp_path / "code-ran").exists()
    assert not loaded.training
    x, t = images(2), torch.tensor([3, 700])
    with torch.no_grad():
        z = source.encode(x)
        assert torch.equal(loaded.encode(x), z)
        assert torch.equal(loaded(x, t, z), source(x, t, z))


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_checkpoint_key_problems_are_one_line_errors(tmp_path: Path, change: str):
    state = DiffAE(TINY).state_dict()
    key = "output_blocks.2.0.cond_emb_layers.1.weight"
    if change == "missing":
        del state[key]
    elif change == "extra":
        key = "latent_net.layers.0.weight"
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(5, 64)
    path = lightning_checkpoint(tmp_path / "last.ckpt", state, tmp_path)
    with pytest.raises(CfbenchError, match=key.replace(".", r"\.")) as err:
        load_diffae_checkpoint(path, TINY)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_checkpoint_without_ema_weights(tmp_path: Path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"model.out.2.weight": torch.zeros(3)}}, path)
    with pytest.raises(CfbenchError, match="ema_model"):
        load_diffae_checkpoint(path, TINY)


@pytest.mark.parametrize("preset, where", [
    ("celeba128", "drive.google.com/drive/folders/1-HraJKbEI8wNIKWh5YS3RzVyAYmP9-Yd"),
    ("ffhq256", "github.com/phizaz/diffae"),
])
def test_missing_checkpoint_names_path_and_source(tmp_path: Path, preset: str, where: str):
    path = tmp_path / "nowhere" / "last.ckpt"
    with pytest.raises(CfbenchError) as err:
        load_diffae_checkpoint(path, preset)
    assert str(path) in str(err.value) and where in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset():
    with pytest.raises(CfbenchError, match="celeba128"):
        load_diffae_checkpoint("last.ckpt", "celeba256")


# ---------------------------------------------------------------- encode / invert / render


def test_encode_and_denoiser_are_batch_independent():
    model, x = randomised(), images(3)
    t = torch.tensor([0, 250, 999])
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (3, 64)
        one_by_one = torch.cat([model.encode(x[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(one_by_one, z, rtol=0, atol=1e-5)
        eps = model(x, t, z)
        assert eps.shape == x.shape
        torch.testing.assert_close(torch.cat([model(x[i:i + 1], t[i:i + 1], z[i:i + 1]) for i in range(3)]), eps,
                                   rtol=0, atol=1e-5)
        assert (model(x, t, z.flip(0)) - eps).abs().max() > 1e-3  # z_sem matters


def test_invert_and_render_call_the_network_on_the_ddim_timesteps():
    model, x = randomised(), images(2)
    calls: list[tuple[list[int], torch.Tensor]] = []
    model.register_forward_hook(lambda module, args, out: calls.append((args[1].tolist(), args[2])))
    with torch.no_grad():
        z = model.encode(x)
    x_T = model.invert(x, z, steps=5)
    out = model.render(z, x_T, steps=5)
    assert x_T.shape == out.shape == x.shape
    assert [t for t, _ in calls] == [[s, s] for s in (0, 200, 400, 600, 800, 800, 600, 400, 200, 0)]
    assert all(cond is z for _, cond in calls)
    assert out.abs().max() <= 1  # the last step returns the clipped x̂_0
    with pytest.raises(ValueError, match="z_sem"):
        model.invert(x, z[:1], steps=5)


class OracleDiffAE(DiffAE):
    """ε_θ(x_t, t, z) = the exact noise of x_t for the images x0 (DDIM inversion and
    sampling are then exact, up to float32 rounding); checks it gets the right z_sem."""

    def __init__(self, x0: torch.Tensor, z: torch.Tensor):
        super().__init__(TINY)
        self.x0, self.z = x0, z

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        assert cond is self.z
        a = ALPHA_BAR[t].to(x.dtype).view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


def test_render_of_invert_reconstructs_with_an_exact_denoiser():
    x, z = images(2), torch.randn(2, 64)
    model = OracleDiffAE(x, z)
    x_T = model.invert(x, z, steps=250)
    # x_T is the ε of x's trajectory; for x_0 ∈ [-1, 1] it is small, not unit noise
    torch.testing.assert_close(x_T, (x - ALPHA_BAR[0].float().sqrt() * x) / (1 - ALPHA_BAR[0].float()).sqrt(),
                               rtol=0, atol=1e-4)
    # tolerance: measured max |error| 6e-8 (float32 rounding); 1e-5 leaves margin
    for steps in (100, 20):
        torch.testing.assert_close(model.render(z, x_T, steps=steps), x, rtol=0, atol=1e-5)
