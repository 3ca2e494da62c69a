"""Every checkpoint-reading problem is one `CfbenchError` line: `load_strict` names each
missing, unexpected and wrongly shaped key; `read_torch` says what a file that does not
load is (empty, a web page, truncated, another format, pickled code) and what to do."""
from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from cfbench.checkpoints import load_strict, read_torch
from cfbench.errors import CfbenchError

URL = "https://example.org/weights/model.pt"


class Pickled:
    """A custom class a checkpoint pickles: the safe loader refuses it."""

    def __init__(self) -> None:
        self.value = 1


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))


def strict_error(model: nn.Module, state: dict, **kwargs) -> str:
    with pytest.raises(CfbenchError) as raised:
        load_strict(model, state, "model.pt", "the tiny model", **kwargs)
    message = str(raised.value)
    assert message.startswith("model.pt does not fit the tiny model: ") and message.endswith(".")
    assert "\n" not in message
    return message


KINDS = ("missing", "unexpected", "wrong")


@pytest.mark.parametrize("kinds", [c for n in (1, 2, 3) for c in itertools.combinations(KINDS, n)])
def test_load_strict_names_every_kind_of_mismatch(kinds):
    state = tiny().state_dict()
    if "missing" in kinds:
        del state["0.bias"]
    if "unexpected" in kinds:
        state["2.weight"] = torch.zeros(1)
    if "wrong" in kinds:
        state["1.weight"] = torch.zeros(1, 4)
    message = strict_error(tiny(), state)
    assert ("missing key '0.bias'" in message) == ("missing" in kinds)
    assert ("unexpected key '2.weight'" in message) == ("unexpected" in kinds)
    assert ("wrongly shaped key '1.weight': (1, 4) in the file, (1, 3) expected" in message) == ("wrong" in kinds)


def test_load_strict_counts_several_keys_of_a_kind_and_shows_three():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(3)])
    state = {f"{k}x": v for k, v in model.state_dict().items()}  # 6 missing, 6 unexpected
    message = strict_error(model, state)
    assert "6 missing keys ('0.bias', '0.weight', '1.bias', …)" in message
    assert "6 unexpected keys ('0.biasx', '0.weightx', '1.biasx', …)" in message
    state = {k: torch.zeros(5, 5) for k in model.state_dict()}
    message = strict_error(model, state)
    assert message.count("in the file") == 3
    assert "6 wrongly shaped keys ('0.bias': (5, 5) in the file, (2,) expected; '0.weight': " in message


def test_load_strict_real_model_with_a_renamed_and_a_reshaped_key():
    state = tiny().state_dict()
    state["first.weight"] = state.pop("0.weight")
    state["1.bias"] = torch.zeros(2)
    message = strict_error(tiny(), state)
    assert message == ("model.pt does not fit the tiny model: missing key '0.weight', unexpected key 'first.weight', "
                       "wrongly shaped key '1.bias': (2,) in the file, (1,) expected.")


def test_load_strict_names_the_files_keys_and_loads_a_fitting_state():
    source = tiny()
    names = {"0.weight": "conv.weight"}
    state = {names.get(k, k): v for k, v in source.state_dict().items()}
    loaded = load_strict(tiny(), state, "model.pt", "the tiny model", names)
    assert torch.equal(loaded[0].weight, source[0].weight)
    del state["conv.weight"]
    assert "missing key 'conv.weight'" in strict_error(tiny(), state, names=names)


def checkpoint_bytes(tmp_path) -> bytes:
    torch.save(tiny().state_dict(), tmp_path / "real.pt")
    return (tmp_path / "real.pt").read_bytes()


def png_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))


def safetensors_bytes() -> bytes:
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    return len(header).to_bytes(8, "little") + header + bytes(4)


CASES = {  # name: (the file's bytes, a phrase of its message)
    "html": (lambda tmp: b"\n  <!DOCTYPE html><html><body>Sign in to continue</body></html>", "is an HTML page"),
    "xml": (lambda tmp: b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>', "is an XML page"),
    "text": (lambda tmp: b"Too many requests, try again later.\n", "is a text file, not a checkpoint"),
    "lfs": (lambda tmp: b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n", "Git LFS pointer"),
    "empty": (lambda tmp: b"", "is empty (0 bytes)"),
    "truncated": (lambda tmp: checkpoint_bytes(tmp)[: len(checkpoint_bytes(tmp)) // 2], "is truncated or corrupt ("),
    "random": (lambda tmp: bytes([0]) + random.Random(0).randbytes(999), "is not a PyTorch checkpoint (1000 bytes"),
    "png": (lambda tmp: png_bytes(), "is not a PyTorch checkpoint (a PNG image)"),
    "safetensors": (lambda tmp: safetensors_bytes(), "is not a PyTorch checkpoint (a safetensors file)"),
}


def read_error(path, published=None, **kwargs) -> str:
    with pytest.raises(CfbenchError) as raised:
        read_torch(path, "tiny checkpoint", published, **kwargs)
    message = str(raised.value)
    assert message.startswith(f"{path} is not a readable tiny checkpoint: ")
    assert "\n" not in message and "weights_only" not in message
    return message


@pytest.mark.parametrize("inert_globals", [False, True])
@pytest.mark.parametrize("published", [None, URL])
@pytest.mark.parametrize("case", CASES)
def test_read_torch_says_what_a_broken_file_is(case, published, inert_globals, tmp_path):
    content, phrase = CASES[case]
    path = tmp_path / "model.pt"
    path.write_bytes(content(tmp_path))
    message = read_error(path, published, inert_globals=inert_globals)
    assert phrase in message
    assert (URL in message) == (published is not None)


@pytest.mark.parametrize("legacy", [False, True])
def test_read_torch_calls_a_checkpoint_cut_anywhere_truncated(legacy, tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(tiny().state_dict(), path, _use_new_zipfile_serialization=not legacy)
    whole = path.read_bytes()
    for size in [1, 2, 5, 14, 15, 200, *range(300, len(whole), 97)]:
        path.write_bytes(whole[:size])
        message = read_error(path, URL)
        assert f"is truncated or corrupt ({size} byte" in message and f"download it again from {URL}." in message


@pytest.mark.parametrize("legacy, inert_globals", [(False, False), (True, False), (True, True)])
def test_read_torch_refuses_pickled_code_and_names_it(legacy, inert_globals, tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"w": torch.zeros(2), "extra": Pickled()}, path, _use_new_zipfile_serialization=not legacy)
    message = read_error(path, URL, inert_globals=inert_globals)
    assert f"holds pickled code ({__name__}.Pickled), which cfbench does not execute" in message
    assert URL in message


def test_read_torch_reads_valid_files_and_inert_globals(tmp_path):
    state = tiny().state_dict()
    torch.save(state, tmp_path / "ok.pt")
    loaded = read_torch(tmp_path / "ok.pt", "tiny checkpoint", URL)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    torch.save({"state_dict": state, "callbacks": {Pickled: Pickled()}}, tmp_path / "lightning.ckpt")
    loaded = read_torch(tmp_path / "lightning.ckpt", "tiny checkpoint", inert_globals=True)
    assert torch.equal(loaded["state_dict"]["0.weight"], state["0.weight"])
    (callback,) = loaded["callbacks"].values()
    assert callback.state == {"value": 1}


def test_read_torch_missing_file_says_where_it_is_published(tmp_path):
    with pytest.raises(CfbenchError, match=rf"tiny checkpoint not found at .*; it is published at {URL}\."):
        read_torch(tmp_path / "absent.pt", "tiny checkpoint", URL)
