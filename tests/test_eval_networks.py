"""The evaluation networks (`cfbench.oracles`): the synthfaces stand-ins load and behave,
and the published networks read their files in the containers they are published in
(built here with random weights, since the real files are not shipped)."""
from __future__ import annotations

import copy
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from cfbench.datasets.synthfaces.spec import ATTRIBUTES
from cfbench.errors import CfbenchError
from cfbench.oracles import NETWORKS, load_network
from cfbench.oracles import inception, lpips_vgg, simsiam, synthfaces
from cfbench.weights import WEIGHTS
from cfbench.zoo import evaluate as ev
from cfbench.zoo.data import render_set

CPU = torch.device("cpu")


def images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomise_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Running statistics unlike their initial values, so a round trip must carry them."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


# -- synthfaces stand-ins ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, role, width",
    [("synthfaces-oracle", "oracle", len(ATTRIBUTES)), ("synthfaces-simsiam", "simsiam", 512),
     ("synthfaces-features", "features", 512)],
)  # fmt: skip
def test_synthfaces_networks_load_as_labelled_stand_ins(name, role, width):
    network = load_network(role, "synthfaces")
    assert (network.name, network.role, network.stand_in) == (name, role, True)
    assert network.label == f"{name} (stand-in)"
    assert network.attributes == (ATTRIBUTES if role == "oracle" else ())
    with torch.no_grad():
        for size in (64, 128):
            assert network.module(images(2, size, 0)).shape == (2, width)


def test_synthfaces_identity_loads():
    network = load_network("identity", "synthfaces")
    assert (network.name, network.stand_in) == ("synthfaces-identity", True)
    with torch.no_grad():
        assert network.module(images(2, 128, 0)).shape == (2, 128)


def test_missing_zoo_weights_are_the_zoos_one_line_error(tmp_path):
    with pytest.raises(CfbenchError, match="cfbench zoo train synthfaces-identity") as error:
        synthfaces.identity(tmp_path / "missing.safetensors")
    assert "\n" not in str(error.value)


def test_synthfaces_oracle_reaches_97_percent_on_fresh_images():
    fresh = render_set(64, ev.FRESH_SPLIT, ev.fresh_indices(256), workers=1)
    accuracy = ev.attribute_accuracy(load_network("oracle", "synthfaces").module, fresh, CPU)
    low = {k: v for k, v in accuracy.items() if v < 97.0}
    assert not low, f"synthfaces-oracle below 97% on {low}"


def test_synthfaces_lpips_is_a_symmetric_batch_independent_distance():
    network = load_network("perceptual", "synthfaces")
    assert (network.name, network.stand_in) == ("synthfaces-lpips", True)
    x, y = images(4, 128, 1), images(4, 128, 2)
    with torch.no_grad():
        d = network.module(x, y)
        assert d.shape == (4,) and (d > 0).all()
        assert torch.equal(network.module(x, x), torch.zeros(4))
        assert torch.allclose(network.module(y, x), d, rtol=1e-5)
        singles = torch.cat([network.module(x[i : i + 1], y[i : i + 1]) for i in range(4)])
        assert torch.allclose(singles, d, rtol=1e-4)
        assert (network.module(x, (x + 0.02).clamp(0, 1)) < d).all()


# -- published networks: round trips through their containers ---------------------------------------
def test_simsiam_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    reference = simsiam.SimSiamResNet50().eval()
    randomise_batch_norm(reference, 0)
    checkpoint = {
        "epoch": 100, "arch": "resnet50",
        "state_dict": {"module." + k: v for k, v in reference.state_dict().items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.05, "momentum": 0.9, "params": [0, 1]}]},
    }  # fmt: skip
    assert any(k.startswith("module.predictor.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "checkpoint_0099.pth.tar")
    network = NETWORKS.get("simsiam-resnet50")(tmp_path / "checkpoint_0099.pth.tar")
    assert (network.name, network.role, network.stand_in) == ("simsiam-resnet50", "simsiam", False)
    x = images(2, 64, 3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        z = network.module(x)
        assert z.shape == (2, 2048)
        assert torch.allclose(z, reference.encoder((x - mean) / std), atol=1e-5)

    torch.save({"state_dict": {"module.encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "partial.pth.tar")
    with pytest.raises(CfbenchError, match="missing key") as error:
        simsiam.simsiam_resnet50(tmp_path / "partial.pth.tar")
    assert "\n" not in str(error.value)
    torch.save({"model": {}}, tmp_path / "other.pth.tar")
    with pytest.raises(CfbenchError, match="no 'state_dict'"):
        simsiam.simsiam_resnet50(tmp_path / "other.pth.tar")


def test_inception_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    reference = inception.build_inception()
    randomise_batch_norm(reference, 1)
    path = tmp_path / WEIGHTS["inception-v3-fid"].filename
    torch.save(reference.state_dict(), path)
    network = NETWORKS.get("inception-v3-fid")(path)
    assert (network.name, network.role, network.stand_in) == ("inception-v3-fid", "features", False)
    x = images(2, 64, 4)
    with torch.no_grad():
        features = network.module(x)
        assert features.shape == (2, 2048) and torch.isfinite(features).all()
        assert torch.equal(features, reference((x * 255).round().to(torch.uint8))[0])
        assert torch.equal(network.module((x * 255).round() / 255), features)  # what the saved PNGs give


def test_vgg16_file_fills_the_lpips_trunk(tmp_path):
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # vgg16().features
    published = {f"features.{k}": v for k, v in features.state_dict().items()}
    # torchvision's file also holds the classifier, which LPIPS does not use (kept small here)
    published.update({f"classifier.{i}.{p}": torch.zeros(1) for i in (0, 3, 6) for p in ("weight", "bias")})
    torch.save(published, tmp_path / "vgg16-397923af.pth")
    network = NETWORKS.get("lpips-vgg")(tmp_path / "vgg16-397923af.pth")
    assert (network.name, network.role, network.stand_in) == ("lpips-vgg", "perceptual", False)
    shipped = torch.load(Path(lpips.__file__).parent / "weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    assert all(torch.equal(network.module.lpips.state_dict()[k], v) for k, v in shipped.items())  # calibrated lins

    reference = copy.deepcopy(network.module.lpips)  # the same lpips module, given the layers directly
    for part in reference.net.children():
        for index in list(part._modules):
            part._modules[index] = features[int(index)]
    x, y = images(2, 64, 5), images(2, 64, 6)
    with torch.no_grad():
        d = network.module(x, y)
        assert d.shape == (2,) and (d > 0).all()
        assert torch.allclose(d, reference(x * 2 - 1, y * 2 - 1).flatten(), rtol=1e-5)
        assert torch.equal(network.module(x, x), torch.zeros(2))

    published["features.31.weight"] = torch.zeros(1)
    torch.save(published, tmp_path / "extra.pth")
    with pytest.raises(CfbenchError, match="unexpected key 'features.31.weight'"):
        lpips_vgg.lpips_vgg(tmp_path / "extra.pth")


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "network, weights",
    [("simsiam-resnet50", "simsiam-resnet50"), ("inception-v3-fid", "inception-v3-fid"),
     ("lpips-vgg", "vgg16-imagenet")],
)  # fmt: skip
def test_missing_published_file_is_one_line_naming_file_location_and_url(tmp_path, monkeypatch, network, weights):
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))
    entry = WEIGHTS[weights]
    with pytest.raises(CfbenchError) as error:
        NETWORKS.get(network)(None)
    message = str(error.value)
    assert "\n" not in message
    assert entry.filename in message and str(tmp_path / "weights") in message and entry.url in message


def test_dataset_defaults_and_unknown_dataset():
    assert load_network("features", "synthfaces").name == "synthfaces-features"
    with pytest.raises(CfbenchError, match="has no default oracle network") as error:
        load_network("oracle", "no-such-dataset")
    assert "\n" not in str(error.value)
