"""The loaders of the published VGGFace2-family evaluation networks (cfbench.oracles
vggface2 / celeba_oracle): each format round-trips through its registry factory, the
pickle reader runs no code, and every problem is one CfbenchError line."""
from __future__ import annotations

import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cfbench.errors import CfbenchError
from cfbench.oracles import DEFAULTS, NETWORKS, load_network
from cfbench.oracles.celeba_oracle import (
    CELEBA_ATTRIBUTES, DIVE_MEAN, dive_input, dive_oracle, steex_input, steex_oracle,
)  # fmt: skip
from cfbench.oracles.vggface2 import (
    VGGFACE2_MEAN_BGR, VGGFace2ResNet50, build_facenet, dag_key, facenet_input, read_numpy_pickle,
    resize_like_pil, vggface2_input,
)  # fmt: skip
from cfbench.weights import WEIGHTS

RGB = (0.2, 0.5, 0.8)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with random weights *and* BatchNorm statistics, so that a
    misplaced buffer changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.05 if t.dim() > 1 else 0.2))
    return model.eval()


def images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def constant(size: int = 64) -> torch.Tensor:
    return torch.tensor(RGB).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def assert_same_output(loaded: nn.Module, direct: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = loaded(x)
        torch.testing.assert_close(out, direct(x), rtol=0, atol=1e-5)
    return out


# -- a Python 2 pickle, as cydonia999's resnet50_ft_weight.pkl was written ---------------------
def _int(n: int) -> bytes:
    return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)


def _str(s: str | bytes) -> bytes:
    b = s if isinstance(s, bytes) else s.encode("latin1")
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b


def python2_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """Protocol 2 as Python 2 + numpy 1 write a dict of float32 arrays: ``str`` payloads
    (BINSTRING) and ``numpy.core.multiarray._reconstruct``."""
    out = [b"\x80\x02}("]
    for key, a in arrays.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        out += [
            _str(key),  # the value: _reconstruct(ndarray, (0,), "b")
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n", _int(0), b"\x85", _str("b"), b"\x87R",
            b"(", _int(1), b"(", *(_int(d) for d in a.shape), b"t",  # state: (1, shape,
            b"cnumpy\ndtype\n", _str("f4"), _int(0), _int(1), b"\x87R",  # dtype('f4', 0, 1)
            b"(", _int(3), _str("<"), b"NNN", _int(-1), _int(-1), _int(0), b"tb",  # with its state
            b"\x89", _str(a.tobytes()), b"tb",  # False, the raw data), then BUILD
        ]  # fmt: skip
    return b"".join(out) + b"u."


# -- round trips through the registry ----------------------------------------------------------
def test_vggface2_pickle_round_trip(tmp_path: Path) -> None:
    model = randomized(VGGFace2ResNet50())
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    arrays["fc.weight"] = np.zeros((8631, 2048), np.float32)  # the identity classifier, unused
    arrays["fc.bias"] = np.zeros(8631, np.float32)
    path = tmp_path / "resnet50_ft_weight.pkl"
    path.write_bytes(python2_pickle(arrays))

    network = load_network("identity", "celeba", path=path)
    assert (network.name, network.role, network.stand_in) == ("vggface2-resnet50", "identity", False)
    assert assert_same_output(network.module, model, images()).shape == (2, 2048)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickle_protocols(tmp_path: Path, protocol: int) -> None:
    arrays = OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.ones(2, np.float64))
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    state = read_numpy_pickle(path, "weights")
    assert list(state) == ["a", "b"] and torch.equal(state["a"], torch.arange(6.0).view(2, 3))


class _Payload:
    def __init__(self, call: object, args: tuple) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple:
        return self.call, self.args


@pytest.mark.parametrize("call", [os.system, open], ids=["os.system", "open"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path: Path, call: object) -> None:
    marker = tmp_path / "ran"
    args = (f"touch {marker}",) if call is os.system else (str(marker), "w")
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": _Payload(call, args)}, protocol=2))
    with pytest.raises(CfbenchError, match=r"refuses to load") as info:
        NETWORKS.get("vggface2-resnet50")(path)
    # named as pickled: posix.system, io.open
    assert "\n" not in str(info.value) and f"{call.__module__}.{call.__name__}" in str(info.value)
    assert not marker.exists()


def dive_oracle_container(model: nn.Module) -> dict[str, OrderedDict]:
    """DiVE's ``oracle.pth`` of ``model``: its state under the published DAG names, split
    into ``{'feat_extract', 'classifier'}``."""
    names = model.file_names()
    published = {names.get(k, k): v for k, v in model.state_dict().items()}
    return {
        p: OrderedDict((k[len(p) + 1:], v) for k, v in published.items() if k.startswith(p + "."))
        for p in ("feat_extract", "classifier")
    }


def test_dive_oracle_round_trip_and_wrong_key(tmp_path: Path) -> None:
    model = randomized(dive_oracle())
    part = dive_oracle_container(model)
    assert "feat_extract.weight" in part["feat_extract"] and "conv5_3_1x1_proj.weight" not in part["feat_extract"]
    path = tmp_path / "oracle.pth"
    torch.save(part, path)

    network = NETWORKS.get("celeba-oracle")(path)
    assert network.role == "oracle" and network.attributes == CELEBA_ATTRIBUTES
    assert assert_same_output(network.module, model, images()).shape == (2, 40)

    part["feat_extract"]["conv2_1_3x3x.weight"] = part["feat_extract"].pop("conv2_1_3x3.weight")
    torch.save(part, path)
    with pytest.raises(CfbenchError, match=r"missing key 'feat_extract\.conv2_1_3x3\.weight', "
                       r"unexpected key 'feat_extract\.conv2_1_3x3x\.weight'\.$"):
        NETWORKS.get("celeba-oracle")(path)
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CfbenchError, match=r"not the DiVE CelebA oracle: expected \{'feat_extract'"):
        NETWORKS.get("celeba-oracle")(path)


def test_steex_checkpoint_round_trip(tmp_path: Path) -> None:
    model = randomized(steex_oracle())
    names = model.file_names()
    # the optimizer state as train_vggface2_oracle.py saves it (Adam; here over the head only)
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=1e-4)
    model.classifier(torch.randn(2, 2048)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.tar"
    torch.save({
        "epoch": 5, "loss": 0.1234, "optimizer_state_dict": optimizer.state_dict(),
        "model_state_dict": OrderedDict((names.get(k, k), v) for k, v in model.state_dict().items()),
    }, path)  # fmt: skip

    network = NETWORKS.get("celebahq-oracle")(path)
    assert network.role == "oracle" and network.attributes == CELEBA_ATTRIBUTES
    assert assert_same_output(network.module, model, images()).shape == (2, 40)


def test_facenet_round_trip_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facenet_pytorch.models import inception_resnet_v1

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("facenet-pytorch tried to download")

    monkeypatch.setattr(inception_resnet_v1, "download_url_to_file", no_download)
    model = randomized(build_facenet())
    state = dict(model.state_dict(), **{"logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)})
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(state, path)

    network = NETWORKS.get("facenet-vggface2")(path)
    out = assert_same_output(network.module, model, images())
    assert network.role == "identity" and out.shape == (2, 512)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


# -- errors --------------------------------------------------------------------------------------
def test_missing_explicit_path_is_one_line(tmp_path: Path) -> None:
    """(The weights-cache case is in test_eval_networks.py.)"""
    absent = tmp_path / "absent.bin"
    for name in ("vggface2-resnet50", "facenet-vggface2", "celeba-oracle", "celebahq-oracle"):
        with pytest.raises(CfbenchError) as info:
            NETWORKS.get(name)(absent)
        message, entry = str(info.value), WEIGHTS[name]
        assert "\n" not in message and all(part in message for part in (entry.filename, str(absent), entry.url))


def test_defaults() -> None:
    for dataset in ("celeba", "celebahq"):
        assert DEFAULTS[dataset]["oracle"] == f"{dataset}-oracle"
        assert DEFAULTS[dataset]["identity"] == "vggface2-resnet50"
    assert (CELEBA_ATTRIBUTES[0], CELEBA_ATTRIBUTES[20], CELEBA_ATTRIBUTES[31], CELEBA_ATTRIBUTES[39]) == (
        "5_o_Clock_Shadow", "Male", "Smiling", "Young")
    assert len(set(CELEBA_ATTRIBUTES)) == 40


# -- preprocessing ---------------------------------------------------------------------------------
def test_vggface2_input_is_bgr_minus_mean_on_255() -> None:
    out = vggface2_input(constant())
    b, g, r = (c * 255 - m for c, m in zip(reversed(RGB), VGGFACE2_MEAN_BGR))
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out, torch.tensor([b, g, r]).view(1, 3, 1, 1).expand_as(out), atol=1e-4, rtol=0)
    assert VGGFACE2_MEAN_BGR == (91.4953, 103.8827, 131.0912)


def test_dive_input_subtracts_its_mean_in_bgr_order() -> None:
    out = dive_input(constant())
    # channel 0 is B and gets 131.0912 / 255, as DiVE's Resnet50_128.forward does
    expected = [RGB[2] - 131.0912 / 255, RGB[1] - 103.8827 / 255, RGB[0] - 91.4953 / 255]
    assert out.shape == (1, 3, 224, 224) and DIVE_MEAN[0] == 131.0912
    torch.testing.assert_close(out, torch.tensor(expected).view(1, 3, 1, 1).expand_as(out), atol=1e-5, rtol=0)


def test_steex_and_facenet_inputs() -> None:
    out = steex_input(constant())
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out, (torch.tensor(RGB) * 2 - 1).view(1, 3, 1, 1).expand_as(out), atol=1e-5, rtol=0)
    out = facenet_input(constant())
    assert out.shape == (1, 3, 160, 160)
    torch.testing.assert_close(out, ((torch.tensor(RGB) * 255 - 127.5) / 128).view(1, 3, 1, 1).expand_as(out))
    assert resize_like_pil(torch.zeros(1, 3, 128, 160), 224).shape == (1, 3, 224, 280)  # PIL Resize(224)


def test_dag_names() -> None:
    assert dag_key("conv1.weight") == "conv1_7x7_s2.weight"
    assert dag_key("bn1.running_var") == "conv1_7x7_s2_bn.running_var"
    assert dag_key("layer1.0.bn2.running_mean") == "conv2_1_3x3_bn.running_mean"
    assert dag_key("layer3.5.conv3.weight") == "conv4_6_1x1_increase.weight"
    assert dag_key("layer4.0.downsample.1.bias") == "conv5_1_1x1_proj_bn.bias"
