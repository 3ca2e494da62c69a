"""The contract every registered method keeps, on the toy dataset and, for diffusion
methods, the tiny random DDPM of tests/fixtures/tiny_backbone.py: images of the input's
shape in [0, 1], every counter filled, no gradient of a black-box classifier, results
independent of the batch size, and a resumed run equal to an uninterrupted one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import tests.fixtures.toy  # noqa: F401  (registers the toy dataset and classifier)
from cfbench.handles import make_handle
from cfbench.method import COUNTERS
from cfbench.methods import METHODS
from cfbench.randomness import SampleRNG
from cfbench.runner import Run, RunSpec
from tests.fixtures.tiny_backbone import save_tiny_ddpm, save_tiny_diffae, save_tiny_ldm

#: per method, the ``--set`` that makes it run in seconds on the toy world; a method
#: registered without an entry here fails `test_every_method_has_contract_settings`
SETTINGS: dict[str, dict[str, str]] = {
    "identity": {},
    "pgd": {"epsilon": "0.5", "step_size": "0.05"},
    "dime": {"backbone": "tiny-ddpm", "respacing": "20", "tau": "3", "lambda_p": "0", "classifier_scales": "8,40"},
    "ace": {"backbone": "tiny-ddpm", "respacing": "20", "tau": "2", "attack_iterations": "3", "attack_step": "8"},
    "gcd": {"backbone": "tiny-diffae", "loss_network": "synthfaces-vgg-lpips", "encode_steps": "5", "render_steps": "3",
            "fits": "1", "renders": "48", "proxy_batch": "16", "proxy_epochs": "4", "h_directions": "2", "steps": "3",
            "max_step": "30", "network_batch": "4"},
    "ldce": {"backbone": "tiny-ldm", "ddim_steps": "10", "strength": "0.5", "network_batch": "4"},
}
METHOD_NAMES = METHODS.names()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A folder with the tiny backbones' weight files, ``<backbone>.pt``."""
    folder = tmp_path_factory.mktemp("tiny")
    save_tiny_ddpm(folder / "tiny-ddpm.pt")
    save_tiny_diffae(folder / "tiny-diffae.pt")
    save_tiny_ldm(folder / "tiny-ldm.pt")
    return folder


def settings(name: str, weights: Path) -> dict[str, str]:
    found = dict(SETTINGS[name])
    if found.get("backbone", "").startswith("tiny-"):
        found["weights_path"] = str(weights / f"{found['backbone']}.pt")
    return found


def run(name: str, weights: Path, out: Path, n: int = 8, batch_size: int = 8, seed: int = 0) -> Run:
    job = Run(RunSpec(method=name, dataset="toy", attr="bright", n=n, batch_size=batch_size, seed=seed,
                      device="cpu", overrides=settings(name, weights), out=out, progress=False))  # fmt: skip
    job.execute(evaluate=False)
    return job


def counterfactuals(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((out / "counterfactuals").glob("*.png"))}


def test_every_method_has_contract_settings():
    assert set(METHOD_NAMES) <= set(SETTINGS), f"give the contract suite settings for {set(METHOD_NAMES) - set(SETTINGS)}"


class Trainable(nn.Module):
    """The toy classifier with a trainable weight, to see whether anything differentiated it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.mean(dim=(1, 2, 3)) - 0.5)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_explain_returns_images_in_range_and_fills_every_counter(name, tiny_weights, tmp_path):
    cls = METHODS.get(name)
    method = cls(cls.resolve_config("toy", None, settings(name, tiny_weights)), "cpu")
    ids, images, _ = tests.fixtures.toy.Toy().split("test").batch(list(range(4)))
    network = Trainable()
    if cls.fits():  # a method that learns first (GCD's directions) fits on the toy split
        method.fit(tests.fixtures.toy.Toy().split("test"), make_handle(cls.access, network, 1, pooled=True),
                   torch.Generator().manual_seed(0), tmp_path)  # fmt: skip
        assert network.scale.grad is None
    handle = make_handle(cls.access, network, 4)
    result = method.explain(images, (network(images) <= 0).long(), handle, SampleRNG(0, ids))
    assert result.images.shape == images.shape and result.images.dtype == images.dtype
    assert torch.isfinite(result.images).all() and 0 <= result.images.min() and result.images.max() <= 1
    assert result.success.shape == (4,)
    for counter in ("classifier_queries", "classifier_gradients"):
        values = result.counters[counter]
        assert values.shape == (4,) and values.dtype == torch.long and (values >= 0).all()
    assert (result.counters["classifier_queries"] > 0).all()
    assert set(result.counters) <= set(COUNTERS)
    if hasattr(method, "backbone"):  # a diffusion method counts its network evaluations
        assert (result.counters["diffusion_evals"] > 0).all()
    if cls.access == "black-box":
        assert network.scale.grad is None and (result.counters["classifier_gradients"] == 0).all()
    else:
        assert network.scale.grad is None  # the method differentiated the input, not the classifier's weights


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_counterfactuals_do_not_depend_on_the_batch_size(name, tiny_weights, tmp_path):
    made = {size: counterfactuals(run(name, tiny_weights, tmp_path / f"b{size}", batch_size=size).record.path)
            for size in (1, 3, 8)}  # fmt: skip
    assert len(made[8]) == 8
    for size in (1, 3):
        assert made[size].keys() == made[8].keys()
        for sample_id, image in made[8].items():
            assert np.array_equal(made[size][sample_id], image), (name, size, sample_id)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_resumed_run_equals_an_uninterrupted_one(name, tiny_weights, tmp_path):
    whole = run(name, tiny_weights, tmp_path / "whole", n=6, batch_size=4)
    run(name, tiny_weights, tmp_path / "resumed", n=3, batch_size=4)  # stopped after 3 samples
    resumed = run(name, tiny_weights, tmp_path / "resumed", n=6, batch_size=4)
    assert counterfactuals(resumed.record.path).keys() == counterfactuals(whole.record.path).keys()
    for sample_id, image in counterfactuals(whole.record.path).items():
        assert np.array_equal(counterfactuals(resumed.record.path)[sample_id], image), (name, sample_id)
    columns = ["id", "cf_logit", "success", *COUNTERS]
    a = pd.read_csv(whole.record.table_path, dtype={"id": str})[columns]
    b = pd.read_csv(resumed.record.table_path, dtype={"id": str})[columns]
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if "backbone" in SETTINGS.get(n, {})])
def test_a_diffusion_method_draws_other_noise_for_another_seed(name, tiny_weights, tmp_path):
    """Another seed, other draws: in the counterfactuals, or (a method whose explanations are
    deterministic once fitted, GCD's DDIM transfer) in what the fit learnt."""
    a, b = (run(name, tiny_weights, tmp_path / f"s{seed}", n=2, seed=seed).record.path for seed in (0, 1))
    if METHODS.get(name).fits():
        learnt = [{p.name: p.read_bytes() for p in (path / "method").iterdir() if p.name != "fit.json"} for path in (a, b)]
        assert learnt[0].keys() == learnt[1].keys() and learnt[0] != learnt[1]
        return
    a, b = counterfactuals(a), counterfactuals(b)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
