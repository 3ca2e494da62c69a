"""The embedded synthfaces world: determinism, the causal spec, interventions, splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cfbench.datasets.synthfaces import ATTRIBUTES, SynthFaces, region_masks, render, render_scenes, spec
from cfbench.datasets.synthfaces.dataset import PERSISTENT

CELEBA_NAMES = (
    "Smiling", "Young", "Eyeglasses", "Male", "Mustache", "Black_Hair", "Blond_Hair", "Bangs", "Wearing_Hat",
    "Rosy_Cheeks", "Mouth_Slightly_Open", "Pale_Skin", "Heavy_Makeup", "Bald",
)


@pytest.fixture(scope="module")
def test64():
    return SynthFaces().split("test")


def test_attribute_names_and_queries():
    assert sorted(ATTRIBUTES) == sorted(CELEBA_NAMES) and len(ATTRIBUTES) == 14
    assert list(ATTRIBUTES) == sorted(ATTRIBUTES, key=lambda a: a.lower())  # CelebA file order (alphabetical)
    for ds, name, size in ((SynthFaces(), "synthfaces", 64), (SynthFaces(image_size=128), "synthfaces128", 128)):
        assert (ds.name, ds.image_size, ds.eval_split) == (name, size, "test")
        assert ds.attributes == ATTRIBUTES
        assert ds.queries == {"smile": "Smiling", "age": "Young"}
        assert all(ds.queries[q] in ds.attributes for q in ds.queries)
        assert set(ds.classifiers) == set(ATTRIBUTES) and set(ds.classifiers.values()) == {"synthfaces-densenet"}


def test_registry_finds_the_world_at_its_native_64_px():
    from cfbench.datasets import get_dataset, resolve_attribute

    ds = get_dataset("synthfaces")
    assert isinstance(ds, SynthFaces) and ds.image_size == 64
    assert resolve_attribute(ds, "smile") == "Smiling" and resolve_attribute(ds, "age") == "Young"


def test_samples_are_deterministic_and_well_formed():
    a, b = SynthFaces().split("test"), SynthFaces().split("test")
    s1, s2 = a[5], b[5]
    assert s1.id == "test-000005"
    assert torch.equal(s1.image, s2.image) and torch.equal(s1.labels, s2.labels)
    assert s1.image.dtype == torch.float32 and s1.image.shape == (3, 64, 64)
    assert s1.labels.dtype == torch.float32 and s1.labels.shape == (14,)
    assert set(s1.labels.tolist()) <= {0.0, 1.0}
    assert 0.0 <= float(s1.image.min()) and float(s1.image.max()) <= 1.0 and float(s1.image.std()) > 0.05
    assert not torch.equal(a[6].image, s1.image)
    assert not torch.equal(SynthFaces().split("val")[5].image, s1.image)
    big = SynthFaces(image_size=128).split("test")[5]
    assert big.image.shape == (3, 128, 128) and torch.equal(big.labels, s1.labels)
    # the 64 px image is the same scene: close to the 128 px one box-filtered down
    down = torch.nn.functional.avg_pool2d(big.image[None], 2)[0]
    assert float((down - s1.image).abs().mean()) < 0.03


def test_batch_matches_single_samples(test64):
    ids, images, labels = test64.batch([3, 0, 7])
    assert ids == ["test-000003", "test-000000", "test-000007"]
    assert images.shape == (3, 3, 64, 64) and labels.shape == (3, 14)
    for j, i in enumerate([3, 0, 7]):
        assert torch.equal(images[j], test64[i].image)
        assert torch.equal(labels[j], test64[i].labels)
    assert torch.equal(test64.labels([3, 0, 7]), labels)
    # a scene renders to the same pixels alone or in any batch, and via render()
    scenes = test64.scenes(range(4))
    together = render_scenes(scenes, 64)
    alone = render(scenes[2].identity, scenes[2].attributes, scenes[2].nuisance, 64)
    assert np.array_equal(together[2], alone.transpose(2, 0, 1))


def test_split_indexing_and_errors(test64):
    assert len(test64) == 10_000
    assert test64.index_of("test-000042") == 42 and test64.sample_id(-1) == "test-009999"
    with pytest.raises(IndexError):
        test64[10_000]
    from cfbench.errors import CfbenchError

    with pytest.raises(CfbenchError):
        SynthFaces().split("holdout")
    small = SynthFaces(sizes={"test": 10})
    assert len(small.split("test")) == 10
    assert torch.equal(small.split("test")[9].image, test64[9].image)  # a prefix of the same split


def test_exact_spec_is_consistent():
    names, corr = spec.correlation_matrix()
    m = spec.marginals()
    assert names == ATTRIBUTES and corr.shape == (14, 14)
    assert np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0) and np.all(np.abs(corr) <= 1.0)
    states, prob = spec.joint_distribution()
    assert abs(prob.sum() - 1.0) < 1e-12
    i, j = spec.INDEX["Black_Hair"], spec.INDEX["Blond_Hair"]
    assert not np.any(states[:, i] & states[:, j])  # hair colours are exclusive
    assert 0.45 <= m["Smiling"] <= 0.55 and 0.5 <= m["Young"] <= 0.75
    c = dict(((a, b), corr[p, q]) for p, a in enumerate(names) for q, b in enumerate(names))
    assert abs(c["Smiling", "Rosy_Cheeks"]) <= 0.1
    assert c["Smiling", "Mouth_Slightly_Open"] > 0.3 and c["Male", "Mustache"] > 0.2
    assert c["Young", "Eyeglasses"] < -0.15 and c["Male", "Heavy_Makeup"] < -0.4 and c["Young", "Bald"] < -0.15


def test_sampled_labels_match_exact_correlations():
    names, corr = spec.correlation_matrix()
    marg = np.array([spec.marginals()[a] for a in names])
    y = spec.sample_attributes(np.random.default_rng(0), 5000).astype(float)
    assert np.abs(np.corrcoef(y.T) - corr).max() < 0.05
    assert np.abs(y.mean(0) - marg).max() < 0.03
    # the dataset's own labels (persons share some draws, so use more of them)
    y = SynthFaces().split("train").attribute_array(range(100_000)).astype(float)
    assert np.abs(np.corrcoef(y.T) - corr).max() < 0.05
    assert np.abs(y.mean(0) - marg).max() < 0.02


def test_do_operator_in_the_generative_model():
    y = spec.sample_attributes(np.random.default_rng(1), 20_000, overrides={"Young": 0})
    assert not y[:, spec.INDEX["Young"]].any()
    m = spec.marginals({"Young": 0})
    assert abs(y[:, spec.INDEX["Eyeglasses"]].mean() - m["Eyeglasses"]) < 0.015
    assert m["Eyeglasses"] > spec.marginals()["Eyeglasses"]  # old people wear glasses more often
    assert spec.marginals({"Smiling": 1})["Rosy_Cheeks"] == pytest.approx(spec.marginals()["Rosy_Cheeks"])
    with pytest.raises(KeyError):
        spec.sample_attributes(np.random.default_rng(0), 3, overrides={"Smile": 1})


@pytest.mark.parametrize("size", [64, 128])
def test_localized_interventions_stay_in_their_region(size):
    split = SynthFaces(image_size=size).split("test")
    n = 24 if size == 64 else 8
    scenes = split.scenes(range(n))
    base = render_scenes(scenes, size)
    for attr, own, other in (("Rosy_Cheeks", "cheeks", "mouth"), ("Smiling", "mouth", "cheeks"),
                             ("Mouth_Slightly_Open", "mouth", "cheeks")):
        flipped = render_scenes([sc.with_attributes({attr: "flip"}) for sc in scenes], size)
        for k, sc in enumerate(scenes):
            masks = region_masks(sc, size)
            changed = np.abs(flipped[k] - base[k]).sum(0) > 1e-6
            assert changed.sum() >= (8 if size == 64 else 30), (attr, k)
            assert not (changed & ~masks[own]).any(), (attr, k, "changed outside its region")
            assert not (changed & masks[other]).any(), (attr, k, f"changed the {other}")


def test_intervene_keeps_identity_and_nuisance(test64):
    orig = test64.scene(11)
    sample = test64.intervene(11, {"Rosy_Cheeks": "flip", "Young": 0})
    again = test64.intervene(11, {"Rosy_Cheeks": "flip", "Young": 0})
    assert sample.id == "test-000011" and torch.equal(sample.image, again.image)
    changed = (sample.labels != test64[11].labels).nonzero().ravel().tolist()
    expected = [spec.INDEX["Rosy_Cheeks"]] + ([spec.INDEX["Young"]] if orig.attribute("Young") else [])
    assert sorted(changed) == sorted(expected)
    edited = orig.with_attributes({"Rosy_Cheeks": "flip"})
    assert edited.identity == orig.identity and edited.nuisance == orig.nuisance
    ids, images, labels = test64.intervene_batch([11, 12], {"Smiling": 1})
    assert torch.equal(images[0], test64.intervene(11, {"Smiling": 1}).image)
    assert labels[:, spec.INDEX["Smiling"]].tolist() == [1.0, 1.0]
    with pytest.raises(KeyError):
        test64.intervene(11, {"Smile": 1})


def test_every_attribute_is_visible(test64):
    scenes = test64.scenes(range(6))
    base = render_scenes(scenes, 64)
    for attr in ATTRIBUTES:
        flipped = render_scenes([sc.with_attributes({attr: "flip"}) for sc in scenes], 64)
        diff = np.abs(flipped - base).sum(1)  # (N, H, W)
        changed = (diff > 0.05).reshape(len(scenes), -1).sum(1)
        assert changed.min() >= 6, (attr, changed.tolist())


def test_splits_have_disjoint_identities():
    ds = SynthFaces()
    ids = {name: set(ds.split(name).identity_ids(range(10_000)).tolist()) for name in ds.splits}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    person = ds.split("test").identity_ids(range(10_000))
    _, counts = np.unique(person, return_counts=True)
    assert counts.min() >= 2 and np.median(counts) == 8  # several images of each person
    assert person[0] != person[1] and person[0] == person[64]  # neighbours differ; i and i + 64 share a person
    # sex and skin are traits of the person; so is black hair, while the person has hair
    assert {"Male", "Pale_Skin", "Black_Hair"} <= set(PERSISTENT)
    y = ds.split("test").attribute_array(range(4096))
    bald = y[:, spec.INDEX["Bald"]] == 1
    for a, rows in (("Male", ~bald | bald), ("Pale_Skin", ~bald | bald), ("Black_Hair", ~bald)):
        col = y[:, spec.INDEX[a]]
        for p in np.unique(person[:4096])[:200]:
            assert len(set(col[(person[:4096] == p) & rows].tolist())) <= 1, a


def test_labels_without_rendering_are_fast_and_consistent():
    split = SynthFaces().split("train")
    labels = split.labels()
    assert labels.shape == (200_000, 14) and labels.dtype == torch.float32
    assert torch.equal(labels[[10, 99_999]], split.labels([10, 99_999]))
    assert torch.equal(split[99_999].labels, labels[99_999])


def test_reading_in_order_gives_the_same_samples():
    split = SynthFaces(sizes={"val": 40}).split("val")
    fresh = SynthFaces(sizes={"val": 40}).split("val")
    in_order = [split[i] for i in range(40)]  # read-ahead path
    for i in (39, 0, 17, 5):  # random access path
        assert torch.equal(fresh[i].image, in_order[i].image) and fresh[i].id == in_order[i].id
        assert torch.equal(fresh[i].labels, in_order[i].labels)
    assert [s.id for s in split][-1] == "val-000039"


def test_docs_show_the_current_spec():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "synthfaces.md"
    if not doc.exists():  # an installed package without the repository's docs
        pytest.skip("docs/synthfaces.md not present")
    assert spec.describe() in doc.read_text(encoding="utf-8")
