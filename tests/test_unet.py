"""The guided-diffusion-compatible UNet: published key layout, strict loading of the
published `.pt` format, and clear errors for wrong checkpoints."""
from __future__ import annotations

import pytest
import torch

from cfbench.diffusion.unet import CELEBA_128, CELEBAHQ_256, UNet, UNetConfig, load_guided_diffusion
from cfbench.errors import CfbenchError
from cfbench.weights import locate

SMALL = UNetConfig(image_size=32, model_channels=32, channel_mult=(1, 2), attention_resolutions=(16,), num_heads=2)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values everywhere (the zero-initialised output convs would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (0.05 if p.dim() > 1 else 0.3))
    return model.eval()


# Key counts and shapes of the official guided-diffusion `UNetModel` at these settings
# (counted by building it from openai/guided-diffusion).
@pytest.mark.parametrize(
    "config, keys, shapes",
    [
        (CELEBA_128, 492, {"time_embed.0.weight": (512, 128), "input_blocks.0.0.weight": (128, 3, 3, 3),
                           "input_blocks.10.1.qkv.weight": (1152, 384, 1), "middle_block.1.qkv.weight": (1536, 512, 1),
                           "output_blocks.2.2.in_layers.2.weight": (512, 512, 3, 3), "out.2.weight": (6, 128, 3, 3)}),
        (CELEBAHQ_256, 566, {"input_blocks.0.0.weight": (128, 3, 3, 3), "middle_block.1.proj_out.weight": (512, 512, 1),
                             "out.2.weight": (6, 128, 3, 3)}),
    ],
)  # fmt: skip
def test_published_key_layout(config, keys, shapes):
    with torch.device("meta"):
        state = UNet(config).state_dict()
    assert len(state) == keys
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("config", [CELEBA_128, CELEBAHQ_256], ids=["celeba128", "celebahq256"])
def test_round_trip_through_published_format(config, tmp_path):
    torch.manual_seed(0)
    model = randomised(UNet(config))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)  # guided-diffusion's format: the raw state dict
    loaded = load_guided_diffusion(path, config)
    x, t = torch.randn(1, 3, 64, 64), torch.tensor([123])  # fully convolutional: a small input checks every weight
    with torch.no_grad():
        assert torch.equal(model(x, t), loaded(x, t))


def test_head_configuration_is_an_explicit_setting():
    """Same weights, 4 heads vs 64-channel heads: the forward passes differ (DiME's README trains with 64-channel heads, its scripts sample with 4)."""
    four = randomised(UNet(SMALL))
    per_channels = UNet(UNetConfig(**{**SMALL.__dict__, "num_head_channels": 8}))
    per_channels.load_state_dict(four.state_dict())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 400])
    with torch.no_grad():
        out = four(x, t)
        assert out.shape == (2, 6, 32, 32)
        assert not torch.allclose(out, per_channels.eval()(x, t), atol=1e-4)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("out.2.bias"), "missing key 'out.2.bias'"),
        (lambda s: s.__setitem__("label_emb.weight", torch.zeros(3, 128)), "unexpected key 'label_emb.weight'"),
        (lambda s: s.__setitem__("out.2.weight", torch.zeros(3, 32, 3, 3)), "wrongly shaped key 'out.2.weight'"),
    ],
)
def test_wrong_checkpoint_names_the_key(edit, message, tmp_path):
    state = UNet(SMALL).state_dict()
    edit(state)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CfbenchError, match=message.replace("(", r"\(")):
        load_guided_diffusion(tmp_path / "bad.pt", SMALL)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CfbenchError, match="is not a readable"):
        load_guided_diffusion(tmp_path / "junk.pt", SMALL)
    torch.save({"model": UNet(SMALL).state_dict()}, tmp_path / "wrapped.pt")
    with pytest.raises(CfbenchError, match="not a guided-diffusion state dict"):
        load_guided_diffusion(tmp_path / "wrapped.pt", SMALL)


def test_missing_published_file_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))
    with pytest.raises(CfbenchError, match=r"ddpm-celeba\.pt not found at .*huggingface\.co/guillaumejs2403/DiME"):
        locate("ddpm-celeba128")
    with pytest.raises(CfbenchError, match="Unknown published weights"):
        locate("ddpm-imagenet")


def test_norm_groups_keep_the_layout_and_let_the_mean_colour_through():
    """``norm_groups`` changes no key or shape (a checkpoint loads either way); at one
    channel a group (32 groups of 32 channels) the network barely sees a shift of the
    input's mean colour, with 8 groups it does (why the synthfaces DDPM uses 8)."""
    configs = {groups: UNetConfig(**{**SMALL.__dict__, "norm_groups": groups}) for groups in (32, 8)}
    with torch.device("meta"):
        shapes = [{k: v.shape for k, v in UNet(c).state_dict().items()} for c in configs.values()]
    assert shapes[0] == shapes[1]
    shift = torch.tensor([0.5, 0.0, -0.5]).view(1, 3, 1, 1)
    x, t = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.full((4,), 400)
    response = {}
    for groups, config in configs.items():
        model = randomised(UNet(config))
        assert {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)} == {groups}
        with torch.no_grad():
            response[groups] = float((model(x + shift, t) - model(x, t))[:, :3].mean((2, 3)).abs().mean())
    assert response[8] > 5 * response[32], response
