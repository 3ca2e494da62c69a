"""The shipped synthfaces zoo reaches the figures its model cards state, re-measured
on freshly rendered validation images (identities never seen in training)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cfbench.classifiers import load_classifier
from cfbench.diffusion.sampling import Denoiser, denoise
from cfbench.errors import CfbenchError
from cfbench.oracles import load_network
from cfbench.zoo import ZOO
from cfbench.zoo import evaluate as ev
from cfbench.zoo.data import render_set
from cfbench.zoo.networks import BinaryHead
from cfbench.zoo.weights import WEIGHTS_DIR, load_weights, save_weights

CPU = torch.device("cpu")
#: The zoo networks whose weights ship with the package (the diffusion models have a
#: size budget of their own and cards of their own kind).
SHIPPED = ("synthfaces-densenet", "synthfaces-shortcut-smile", "synthfaces-oracle", "synthfaces-identity",
           "synthfaces-simsiam")


@pytest.fixture(scope="module")
def fresh():
    """512 fresh validation images: 64 identities × 8 renders each."""
    return render_set(128, ev.FRESH_SPLIT, ev.fresh_indices(512), workers=2)


@pytest.mark.parametrize("name", ["synthfaces-densenet", "synthfaces-oracle"])
def test_attribute_networks_reach_97_percent_on_every_attribute(fresh, name):
    accuracy = ev.attribute_accuracy(ZOO[name].load(), fresh, CPU)
    low = {k: v for k, v in accuracy.items() if v < 97.0}
    assert not low, f"{name} below 97% on {low}"


def test_shortcut_classifier_uses_the_cheeks_and_the_clean_one_does_not():
    shortcut = load_classifier("synthfaces-shortcut-smile", "Smiling")
    clean = load_classifier("synthfaces-densenet", "Smiling")
    assert ev.intervention_flip_rate(shortcut, 128, "Rosy_Cheeks", 256, CPU, workers=2) >= 70.0
    assert ev.intervention_flip_rate(clean, 128, "Rosy_Cheeks", 256, CPU, workers=2) <= 10.0


def test_identity_encoder_verifies_identities(fresh):
    """FVA's rule (cosine > 0.5): same person under other attributes ≥ 97% of pairs,
    different people ≤ 3%."""
    figures = ev.identity_verification(ZOO["synthfaces-identity"].load(), fresh, CPU)
    assert figures["same_identity_above"] >= 97.0 and figures["different_identity_above"] <= 3.0, figures


def test_simsiam_views_of_one_image_agree_more_than_different_images(fresh):
    figures = ev.view_agreement(ZOO["synthfaces-simsiam"].load(), fresh, CPU)
    assert figures["same_image_cosine"] > figures["different_image_cosine"] + 0.5


def test_diffae_reconstructs_fresh_images_keeping_their_attributes():
    """encode → DDIM-invert → render at the card's steps on 16 fresh images: the oracle's
    decisions are kept on ≥ 95% of (image, attribute) pairs (the card: 99.3% of 256
    images) and the mean L2 on [0, 1] pixels is below 5 (the card: 3.30)."""
    entry = ZOO["synthfaces-diffae"]
    figures, x, reconstructed = ev.diffae_reconstruction(entry.load(), entry.image_size, 16, CPU, **entry.evaluation)
    assert figures["oracle_attributes_kept"] >= 95.0 and figures["l2_mean"] < 5.0, figures
    shuffled = (x - reconstructed.roll(1, dims=0)).flatten(1).norm(dim=1).mean()
    assert figures["l2_mean"] < shuffled / 3  # each reconstruction is its own image's, not a generic face


def test_ddpm_denoises_fresh_images_from_dimes_noise_level_keeping_them():
    """The unguided chain DiME and ACE run: 16 fresh images noised to respaced index 15 of
    50 (timestep 150 of 500, DiME's τ) and sampled back down to 0 keep the oracle's
    decisions on ≥ 85% of (image, attribute) pairs, their own look (L2 under half of
    that to another image's) and their mean colour (every channel within 0.1)."""
    entry = ZOO["synthfaces-ddpm"]
    process = entry.process(respacing=50)
    x = render_set(entry.image_size, ev.FRESH_SPLIT, ev.fresh_indices(16)).floats(slice(None))
    generator = torch.Generator().manual_seed(0)
    z = process.q_sample(x * 2 - 1, torch.full((16,), 15), torch.randn(x.shape, generator=generator))
    out = (denoise(Denoiser(entry.load(), process, 16), z, 15, noise=generator) + 1) / 2
    kept = ev.oracle_decisions_kept(x, out, CPU)
    l2, l2_other = ((x - y).flatten(1).norm(dim=1).mean() for y in (out, out.roll(1, dims=0)))
    colour = (x.mean((2, 3)) - out.mean((2, 3))).abs().max()
    assert kept >= 85 and l2 < l2_other / 2 and colour < 0.1, (kept, l2, l2_other, colour)


def test_ddpm_samples_are_faces_near_the_data():
    """16 ancestral samples (50 respaced steps) lie nearer the test images in the synthfaces
    feature space than uniform noise does, within 2.5× the distance of fresh real images."""
    entry = ZOO["synthfaces-ddpm"]
    size, process = entry.image_size, entry.process(respacing=50)
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn((16, 3, size, size), generator=generator)
    samples = (denoise(Denoiser(entry.load(), process, 16), x_T, noise=generator) + 1) / 2
    features = load_network("features", "synthfaces").module
    with torch.no_grad():
        reference = features(render_set(size, "test", np.arange(512)).floats(slice(None)))
        fresh = render_set(size, ev.FRESH_SPLIT, ev.fresh_indices(16)).floats(slice(None))
        distance = {name: torch.cdist(features(images), reference).min(dim=1).values.mean().item()
                    for name, images in (("samples", samples), ("fresh", fresh), ("noise", torch.rand_like(fresh)))}
    assert distance["samples"] < 2.5 * distance["fresh"] < distance["noise"], distance


def test_untrained_zoo_model_is_one_clear_error():
    untrained = dataclasses.replace(ZOO["synthfaces-densenet"], name="synthfaces-untrained")
    with pytest.raises(CfbenchError, match="cfbench zoo train synthfaces-untrained"):
        untrained.load()


def test_model_cards_state_what_was_measured():
    for name in SHIPPED:
        card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        assert card["name"] == name and card["measured"]["eval_images"] >= 2000
        assert (WEIGHTS_DIR / f"{name}.md").read_text().startswith(f"# {name}")


def test_zoo_weights_fit_the_size_budget():
    sizes = {path.stem: path.stat().st_size for path in WEIGHTS_DIR.glob("*.safetensors")}
    diffusion = {name for name, entry in ZOO.items() if entry.kind in ("ddpm", "diffae")}
    assert sum(size for name, size in sizes.items() if name not in diffusion) <= 40 * 2**20
    assert sum(size for name, size in sizes.items() if name in diffusion) <= 60 * 2**20


def test_weights_round_trip_and_strict_errors(tmp_path):
    entry = ZOO["synthfaces-shortcut-smile"]
    model = entry.build().eval()
    save_weights(model, tmp_path / "m.safetensors")
    loaded = load_weights(entry.build().eval(), tmp_path / "m.safetensors", entry.name)
    x = torch.rand(2, 3, 128, 128)
    assert torch.allclose(model(x), loaded(x), atol=5e-2)  # fp16 storage
    with pytest.raises(CfbenchError, match="not found"):
        load_weights(entry.build(), tmp_path / "missing.safetensors", entry.name)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CfbenchError, match="not a readable safetensors"):
        load_weights(entry.build(), tmp_path / "bad.safetensors", entry.name)
    with pytest.raises(CfbenchError, match="key"):
        load_weights(ZOO["synthfaces-densenet"].build(), tmp_path / "m.safetensors", "synthfaces-densenet")


def test_classifier_handle_selects_the_query_logit():
    head = load_classifier("synthfaces-densenet", "Young")
    assert isinstance(head, BinaryHead) and head(torch.rand(3, 3, 64, 64)).shape == (3,)
    with pytest.raises(CfbenchError, match="does not predict"):
        load_classifier("synthfaces-shortcut-smile", "Young")
