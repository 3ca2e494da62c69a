"""The Method contract: hparam config fields, `--set` parsing, config resolution and the
counting white-box / black-box classifier handles."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from cfbench.errors import CfbenchError
from cfbench.handles import BlackBoxClassifier, WhiteBoxClassifier, make_handle
from cfbench.method import COUNTERS
from cfbench.methods import METHODS, Counterfactuals, Method, MethodConfig, hparam
from cfbench.randomness import SampleRNG
from tests.fixtures.plugins import TypedConfig


# -- config ----------------------------------------------------------------------------------
def test_hparam_records_paper_default_and_section():
    fields = {f.name: f for f in dataclasses.fields(TypedConfig)}
    assert fields["count"].metadata["section"] == "tests §1"
    assert TypedConfig().count == 3 and TypedConfig().sizes == [1, 2]
    a, b = TypedConfig(), TypedConfig()
    a.sizes.append(9)
    assert b.sizes == [1, 2]  # list defaults are not shared between instances
    for method in ("identity", "pgd"):
        for f in dataclasses.fields(METHODS.get(method).Config):
            assert f.metadata.get("section"), (method, f.name)


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("count", "7", 7),
        ("count", "-2", -2),
        ("scale", "0.25", 0.25),
        ("scale", "1e-3", 1e-3),
        ("scale", "2", 2.0),
        ("flag", "false", False),
        ("flag", "No", False),
        ("flag", "0", False),
        ("flag", "TRUE", True),
        ("flag", "yes", True),
        ("mode", "hard", "hard"),
        ("mode", "3", "3"),
        ("sizes", "4,5,6", [4, 5, 6]),
        ("sizes", "8", [8]),
        ("sizes", "", []),
        ("names", "x,y", ["x", "y"]),
    ],
)
def test_replace_parses_each_type(key, text, expected):
    config = TypedConfig()
    new = config.replace({key: text})
    value = getattr(new, key)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, list) and value:
        assert type(value[0]) is type(expected[0])
    assert config == TypedConfig()  # the original is not modified
    others = {k: v for k, v in dataclasses.asdict(new).items() if k != key}
    assert others == {k: v for k, v in dataclasses.asdict(config).items() if k != key}


@pytest.mark.parametrize(
    "key, text", [("count", "1.5"), ("count", "many"), ("scale", "big"), ("flag", "maybe"), ("sizes", "1,x")]
)
def test_replace_rejects_values_of_the_wrong_type(key, text):
    with pytest.raises(CfbenchError, match=rf"--set {key}={text}: expected a (int|float|bool|list)"):
        TypedConfig().replace({key: text})


def test_a_list_of_booleans_reads_each_item_as_a_boolean():
    @dataclass
    class Switches(MethodConfig):
        switches: tuple = hparam((True, True), "tests §8")

    assert Switches().replace({"switches": "false,yes,0"}).switches == (False, True, False)
    with pytest.raises(CfbenchError, match=r"--set switches=true,maybe: expected a tuple"):
        Switches().replace({"switches": "true,maybe"})


def test_replace_rejects_unknown_keys_and_names_the_known_ones():
    with pytest.raises(CfbenchError, match=r"--set colour: TypedConfig has no such key \(keys: count, scale, flag"):
        TypedConfig().replace({"colour": "red"})


def test_resolve_config_order_paper_dataset_profile_set():
    @dataclass
    class Cfg(MethodConfig):
        a: int = hparam(1, "§1")
        b: int = hparam(1, "§1")
        c: int = hparam(1, "§1")

    class M(Method):
        Config = Cfg
        dataset_configs = {"toy": {"a": 2, "b": 2, "c": 2}}
        profiles = {"paper": {}, "quick": {"b": 3, "c": 3}}

    assert M.resolve_config("other", None, {}) == Cfg(1, 1, 1)
    assert M.resolve_config("toy", None, {}) == Cfg(2, 2, 2)
    assert M.resolve_config("toy", "quick", {}) == Cfg(2, 3, 3)
    assert M.resolve_config("toy", "quick", {"c": "4"}) == Cfg(2, 3, 4)
    with pytest.raises(CfbenchError, match="--profile fast: unknown; this method has paper, quick"):
        M.resolve_config("toy", "fast", {})


# -- handles ---------------------------------------------------------------------------------
class Mean(nn.Module):
    def __init__(self, trainable: bool):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0), requires_grad=trainable)

    def forward(self, x):
        return self.w * (x.mean(dim=(1, 2, 3)) - 0.5)


def rng(n: int) -> SampleRNG:
    return SampleRNG(0, [str(i) for i in range(n)])


def images(n=3):
    return torch.linspace(0.1, 0.9, n).view(n, 1, 1, 1).expand(n, 3, 4, 4).clone()


def test_black_box_refuses_gradients_and_detaches():
    handle = make_handle("black-box", Mean(trainable=True), 3)
    assert isinstance(handle, BlackBoxClassifier) and handle.access == "black-box"
    x = images()
    out = handle.logits(x)
    assert not out.requires_grad and out.grad_fn is None  # even with trainable weights
    with pytest.raises(CfbenchError, match="gradients are not available"):
        handle.logits(x.clone().requires_grad_(True))
    assert handle.counters()["classifier_gradients"].tolist() == [0, 0, 0]


def test_queries_are_counted_per_sample_including_samples_argument():
    handle = make_handle("black-box", Mean(trainable=False), 3)
    x = images()
    handle.logits(x)
    handle.predict(x)
    handle.logits(x[[0, 0, 2, 0]], samples=torch.tensor([0, 0, 2, 0]))
    handle.predict(x[[1]], samples=[1])
    counters = handle.counters()
    assert counters["classifier_queries"].tolist() == [5, 3, 3]
    assert counters["classifier_queries"].dtype == torch.long
    counters["classifier_queries"][0] = 100  # counters() is a copy
    assert handle.counters()["classifier_queries"][0] == 5
    with pytest.raises(ValueError, match="pass samples="):
        handle.logits(x[:2])
    with pytest.raises(ValueError, match="one batch index per image"):
        handle.logits(x[:2], samples=[0])


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what `--device auto` picks


@pytest.mark.parametrize("access", ["black-box", "white-box"])
def test_predict_gives_cpu_labels_from_any_device(access):
    handle = make_handle(access, Mean(trainable=False).to(DEVICE), 3)
    labels = handle.predict(images().to(DEVICE))
    assert labels.tolist() == [0, 0, 1] and labels.device.type == "cpu" and labels.dtype == torch.long


@pytest.mark.parametrize("method", ["identity", "pgd"])
def test_baselines_explain_on_the_default_device(method):
    """Regression: on CUDA, identity and pgd compared predict()'s CUDA labels with CPU targets
    (RuntimeError: tensors on different devices)."""
    cls = METHODS.get(method)
    network = Mean(trainable=False).to(DEVICE)
    x = images(4).to(DEVICE)
    targets = torch.tensor([1, 1, 0, 0], device=DEVICE)
    config = cls.resolve_config("toy", None, {"epsilon": "0.5", "step_size": "0.05"} if method == "pgd" else {})
    result = cls(config, DEVICE).explain(x, targets, make_handle(cls.access, network, 4), rng(4))
    assert result.images.shape == x.shape and result.images.device == x.device
    assert result.success.tolist() == ([True] * 4 if method == "pgd" else [False] * 4)


@pytest.mark.parametrize("trainable", [False, True])
def test_white_box_counts_one_gradient_per_sample_when_backward_flows(trainable):
    handle = make_handle("white-box", Mean(trainable=trainable), 3)
    assert isinstance(handle, WhiteBoxClassifier) and handle.access == "white-box"
    x = images().requires_grad_(True)
    out = handle.logits(x)  # forward only: no gradient yet
    assert out.requires_grad
    assert handle.counters()["classifier_gradients"].tolist() == [0, 0, 0]
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # two candidates for sample 2, one for sample 0, through autograd.grad
    xs = x.detach()[[2, 2, 0]].requires_grad_(True)
    (g,) = torch.autograd.grad(handle.logits(xs, samples=[2, 2, 0]).sum(), xs)
    assert g.shape == xs.shape
    # a query without gradient (predict) adds a query only
    handle.predict(x)
    counters = handle.counters()
    assert counters["classifier_gradients"].tolist() == [2, 1, 3]
    assert counters["classifier_queries"].tolist() == [3, 2, 4]


def test_white_box_without_grad_inputs_counts_no_gradient():
    handle = make_handle("white-box", Mean(trainable=False), 3)
    with torch.no_grad():
        handle.logits(images())
    handle.logits(images())
    assert handle.counters()["classifier_gradients"].tolist() == [0, 0, 0]
    assert handle.counters()["classifier_queries"].tolist() == [2, 2, 2]


def test_unknown_access_is_an_error():
    with pytest.raises(CfbenchError, match="unknown classifier access 'grey-box'"):
        make_handle("grey-box", Mean(False), 1)


# -- explain on the baselines -------------------------------------------------------------------
def test_explain_returns_counterfactuals_with_counters():
    x = images(4)
    targets = torch.tensor([1, 1, 0, 0])  # the opposite of the predictions
    identity = METHODS.get("identity")
    handle = make_handle("black-box", Mean(False), 4)
    result = identity(identity.resolve_config("toy", None, {})).explain(x, torch.zeros(4, dtype=torch.long), handle,
                                                                     rng(4))
    assert isinstance(result, Counterfactuals)
    assert torch.equal(result.images, x) and result.images.data_ptr() != x.data_ptr()
    assert result.success.tolist() == [True, True, False, False]
    assert result.counters["classifier_queries"].tolist() == [1, 1, 1, 1]

    pgd = METHODS.get("pgd")
    config = pgd.resolve_config("toy", None, {"epsilon": "0.5", "step_size": "0.05", "steps": "12"})
    result = pgd(config).explain(x, targets, make_handle("white-box", Mean(False), 4), rng(4))
    assert result.images.shape == x.shape and not result.images.requires_grad
    assert (result.images - x).abs().max() <= 0.5 + 1e-6
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert set(result.counters) <= set(COUNTERS)
    assert result.counters["classifier_queries"].tolist() == [13] * 4  # 12 steps + the final check
    assert result.counters["classifier_gradients"].tolist() == [12] * 4
    assert result.success.tolist() == [True] * 4


@pytest.mark.parametrize("random_start", ["true", "false"])
def test_pgd_moves_saturated_pixels(random_start):
    """Regression: PGD clamped x0 + delta inside the forward pass, and clamp() has zero gradient
    at 0 and 1, so black/white pixels (and pixels the random start pushed outside [0, 1]) never
    moved. All-white and all-black images must move by the full epsilon, inside [0, 1]."""
    x = torch.ones(2, 3, 4, 4)
    x[1] = 0
    pgd = METHODS.get("pgd")
    config = pgd.resolve_config("toy", None, {"epsilon": "0.3", "step_size": "0.05", "steps": "12", "random_start": random_start})
    result = pgd(config).explain(x, torch.tensor([0, 1]), make_handle("white-box", Mean(False), 2), rng(2))
    assert torch.allclose(result.images[0], torch.full_like(x[0], 0.7))
    assert torch.allclose(result.images[1], torch.full_like(x[1], 0.3))


def test_a_field_without_a_parsable_default_is_an_error_not_a_crash():
    """Regression: ``--set`` on a field whose default is None raised TypeError (a traceback)."""

    @dataclass
    class Cfg(MethodConfig):
        guidance: float = hparam(None, "§1")

    with pytest.raises(CfbenchError, match=r"--set guidance=2.0: expected a NoneType"):
        Cfg().replace({"guidance": "2.0"})
