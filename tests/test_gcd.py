"""GCD on CPU: the proxy fit, the directions of eqs. 3-4, BB-LIG (eq. 6), directions saved
and reused, on synthetic data and the tiny random DiffAE of tests/fixtures/tiny_backbone.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import tests.fixtures.toy  # noqa: F401  (registers the toy dataset and classifier)
from cfbench.errors import CfbenchError
from cfbench.methods.gcd import GCD, Directions, Proxy, bb_lig, cf_loss, proxy_directions, train_proxy
from cfbench.runner import Run, RunSpec
from tests.conftest import load_benchmark
from tests.fixtures.tiny_backbone import save_tiny_diffae

ROOT = Path(__file__).resolve().parents[1]
TINY = {"backbone": "tiny-diffae", "loss_network": "synthfaces-vgg-lpips", "encode_steps": "5", "render_steps": "3",
        "fits": "2", "renders": "48", "proxy_batch": "16", "proxy_epochs": "4", "h_directions": "3", "steps": "3",
        "max_step": "30", "network_batch": "4"}  # fmt: skip


def test_the_proxy_fit_lowers_the_validation_loss():
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(640, 16, generator=generator)
    w = torch.randn(16, generator=generator)
    logit, lpips = 3 * torch.tanh(u @ w / 4), (u.pow(2).mean(dim=1) / 4).clamp(max=0.9)
    config = GCD.resolve_config("toy", "paper", {"proxy_epochs": "60", "patience": "60"})
    proxy, history = train_proxy(u, logit, lpips, config, generator)
    assert len(history) == 60 and history[-1] < 0.5 * history[0]
    stopped = GCD.resolve_config("toy", "paper", {"proxy_epochs": "200", "patience": "2"})
    _, short = train_proxy(u, logit, lpips, stopped, torch.Generator().manual_seed(0))
    assert len(short) < 200 and short[-1] > sum(short[-3:-1]) / 2  # stopped when above the mean of the last two


def test_directions_are_unit_g_directions_then_orthonormal_hessian_eigenvectors_by_magnitude():
    torch.manual_seed(0)
    proxy = Proxy(12)
    config = GCD.resolve_config("toy", "paper", {"h_directions": "5"})
    vectors, names, eigenvalues = proxy_directions(proxy, 1, config)
    assert names == ["g1", "g2", "h1", "h2", "h3", "h4", "h5"]
    assert torch.allclose(vectors.norm(dim=1), torch.ones(7), atol=1e-5)
    h = vectors[2:]
    assert torch.allclose(h @ h.T, torch.eye(5), atol=1e-5)
    assert (eigenvalues.abs()[:-1] >= eigenvalues.abs()[1:]).all()
    hessian = torch.autograd.functional.hessian(lambda u: cf_loss(*proxy(u[None]), 1, 1.0, 0.0).sum(), torch.zeros(12))
    assert torch.allclose(hessian @ h.T, h.T * eigenvalues, atol=1e-5)
    # g1 descends the proxy's CF loss: a small step along it lowers the loss
    step = 1e-2 * vectors[0]
    assert cf_loss(*proxy(step[None]), 1, 1.0, 0.0) < cf_loss(*proxy(torch.zeros(1, 12)), 1, 1.0, 0.0)
    # for a source predicted negative the classification term changes sign, and so does g1
    flipped, _, _ = proxy_directions(proxy, 0, dataclasses_replace(config, weight_lpips=[0.0, 0.0]))
    assert torch.allclose(flipped[0], -vectors[0], atol=1e-5)


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_bb_lig_is_eq_6_and_zero_where_a_pixel_does_not_change():
    generator = torch.Generator().manual_seed(0)
    path = torch.rand(5, 3, 4, 4, generator=generator)
    path[:, :, 0, 0] = 0.5  # a pixel the path never changes
    path[2, 1, 1, 1] = path[1, 1, 1, 1]  # one step where one value stays
    logits = torch.randn(5, generator=generator)
    got = bb_lig(path, logits)
    p, f = path.double().numpy(), logits.double().numpy()
    want = np.zeros((3, 4, 4))
    for k in range(4):
        dx = p[k + 1] - p[k]
        want += np.where(dx != 0, (f[k + 1] - f[k]) / np.where(dx != 0, dx, 1), 0) / 4
    want = ((p[0] - p[-1]) * want).sum(axis=0, keepdims=True)
    assert got.shape == (1, 4, 4) and np.allclose(got.numpy(), want, atol=1e-4)
    assert got[0, 0, 0] == 0
    assert bb_lig(path[:1], logits[:1]).abs().sum() == 0  # no step: no attribution


def test_a_direction_spec_picks_its_directions_and_a_wrong_one_is_one_clear_error():
    found = Directions(torch.zeros(1, 5, 3), ["g1", "g2", "h1", "h2", "h3"], torch.zeros(1, 3), 0, {})
    assert found.pick("g2") == [1] and found.pick("h") == [2, 3, 4] and found.pick("h2+") == [3, 4]
    with pytest.raises(CfbenchError, match="direction=h4 is not among the fitted directions"):
        found.pick("h4")
    with pytest.raises(CfbenchError, match="direction=sideways"):
        GCD(GCD.resolve_config("toy", "paper", {**TINY, "direction": "sideways"}), "cpu")


def test_too_few_renders_for_the_proxy_are_refused_before_any_render():
    with pytest.raises(CfbenchError, match="renders=16 leaves no training data after a validation batch of 16"):
        GCD(GCD.resolve_config("toy", "paper", {**TINY, "renders": "16"}), "cpu")


def test_a_corrupted_directions_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "directions.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CfbenchError, match="is not a GCD directions file"):
        Directions.load(bad)
    with pytest.raises(CfbenchError, match="no such directions file"):
        Directions.load(tmp_path / "missing.pt")


def _run(weights: Path, out: Path, n: int = 3, **overrides: str) -> Path:
    job = Run(RunSpec(method="gcd", dataset="toy", attr="bright", n=n, batch_size=2, device="cpu",
                      overrides={**TINY, "weights_path": str(weights), **overrides}, out=out, progress=False))
    job.execute(evaluate=False)
    return job.record.path


def _images(path: Path, folder: str = "counterfactuals") -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((path / folder).glob("*.png"))}


def test_saved_directions_reused_give_identical_counterfactuals_and_the_fit_is_recorded(tmp_path):
    weights = save_tiny_diffae(tmp_path / "tiny-diffae.pt")
    first = _run(weights, tmp_path / "fitted")
    fitted = Directions.load(first / "method" / "directions.pt")
    assert fitted.vectors.shape == (2, 5, 32) and fitted.names == ["g1", "g2", "h1", "h2", "h3"]
    assert fitted.info["source_index"] == len(tests.fixtures.toy.Toy().split("test")) - 1
    assert 0 <= fitted.chosen < 2 and len(fitted.info["line_search_scores"]) == 2
    info = json.loads((first / "run.json").read_text())
    assert info["fit"]["classifier_queries"] > 2 * 48 and info["fit"]["classifier_gradients"] == 0
    assert info["fit"]["diffusion_evals"] >= 5 + 2 * 48 * 3
    reused = _run(weights, tmp_path / "reused", directions=str(first / "method" / "directions.pt"))
    again = _images(reused)
    assert again.keys() == _images(first).keys() and len(again) == 3
    for sample_id, image in _images(first).items():
        assert np.array_equal(again[sample_id], image), sample_id
    reinfo = json.loads((reused / "run.json").read_text())
    assert reinfo["fit"]["diffusion_evals"] == 0 and reinfo["fit"]["classifier_queries"] == 0
    # every evaluated image has its direction, its BB-LIG map and its line-search logits
    for folder in ("directions", "attributions", "path_logits"):
        assert len(list((first / folder).glob("*.npy"))) == 3
    assert np.load(next((first / "path_logits").glob("*.npy"))).shape == (4,)  # step 0 and 3 steps


def test_directions_of_another_backbone_size_are_refused(tmp_path):
    weights = save_tiny_diffae(tmp_path / "tiny-diffae.pt")
    Directions(torch.zeros(1, 2, 7), ["g1", "g2"], torch.zeros(1, 0), 0, {}).save(tmp_path / "d.pt")
    with pytest.raises(CfbenchError, match="directions of size 7 for a z_sem of size 32"):
        _run(weights, tmp_path / "r", n=1, directions=str(tmp_path / "d.pt"))
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_several_directions_give_each_image_one_of_them_and_the_null_edit_is_the_unedited_render(tmp_path):
    weights = save_tiny_diffae(tmp_path / "tiny-diffae.pt")
    fitted = _run(weights, tmp_path / "g1", n=2)
    directions = str(fitted / "method" / "directions.pt")
    best = _run(weights, tmp_path / "h", n=2, direction="h", directions=directions)
    vectors = Directions.load(fitted / "method" / "directions.pt")
    h = vectors.vectors[vectors.chosen][vectors.pick("h")]
    for path in sorted((best / "directions").glob("*.npy")):
        used = torch.from_numpy(np.load(path))
        assert torch.isclose(h @ used, torch.ones(1)).any() or torch.isclose(h @ used, -torch.ones(1)).any()
    table = pd.read_csv(best / "samples.csv", dtype={"id": str})
    first = pd.read_csv(fitted / "samples.csv", dtype={"id": str})
    assert (table["null_logit"].to_numpy() == first["null_logit"].to_numpy()).all()  # the same null edit
    # the null edit renders the unedited inversion: the line search's step 0
    for sample_id, null_logit in zip(table["id"], table["null_logit"]):
        assert np.isclose(np.load(best / "path_logits" / f"{sample_id}.npy")[0], null_logit, atol=1e-5)
    per_image = 5 + 3 * (1 + 2 * 3 * 3)  # inversion, then step 0 and 3 steps along both sides of 3 h-directions
    assert (table["diffusion_evals"] == per_image).all()
    # each h-direction's own success (Fig. 3); the image's success is that of one of them, or none flips
    each = table[["success_h1", "success_h2", "success_h3"]].to_numpy()
    assert (table["method_success"].to_numpy() == each.any(axis=1)).all()
    # one h-direction: both of its sides are searched, and each image keeps one of them
    h1 = _run(weights, tmp_path / "h1", n=2, direction="h1", directions=directions)
    h1_table = pd.read_csv(h1 / "samples.csv", dtype={"id": str})
    assert (h1_table["diffusion_evals"] == 5 + 3 * (1 + 2 * 3)).all()
    assert not any(column.startswith("success_") for column in h1_table.columns)  # one direction: its success
    assert (h1_table["method_success"].to_numpy() == each[:, 0]).all()  # h1 on its own flips where it did among h
    for path in sorted((h1 / "directions").glob("*.npy")):
        assert torch.isclose((h[0] @ torch.from_numpy(np.load(path))).abs(), torch.ones(1), atol=1e-5)


def test_data_perturbations_keep_their_norm_and_give_directions_where_the_data_varies(tmp_path):
    weights = save_tiny_diffae(tmp_path / "tiny-diffae.pt")
    images = 6  # a covariance of rank 5 in a z_sem of size 32
    fitted = _run(weights, tmp_path / "data", n=1, perturbation="data", covariance_images=str(images))
    config = GCD.resolve_config("toy", None, {**TINY, "weights_path": str(weights), "perturbation": "data",
                                              "covariance_images": str(images)})  # fmt: skip
    gcd = GCD(config)
    split = tests.fixtures.toy.Toy().split("test")
    basis = gcd._data_basis(split)
    assert torch.allclose(basis, basis.T, atol=1e-5)
    assert torch.isclose(basis.pow(2).sum() / 32, torch.tensor(1.0), atol=1e-4)  # E‖e·basis‖² = ‖e‖²
    z = gcd.encode_semantic(split.batch(list(range(images)))[1]).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(z.T))
    null_space = eigenvectors[:, eigenvalues < 1e-6 * eigenvalues.max()].float()
    assert null_space.shape[1] == 32 - (images - 1)
    vectors = Directions.load(fitted / "method" / "directions.pt").vectors
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(vectors.shape[:2]), atol=1e-5)
    assert (vectors @ null_space).abs().max() < 1e-3  # no move along a z_sem direction the images do not vary in


def test_the_source_and_renders_ablations_read_the_first_n_images_of_each_run(tmp_path):
    weights = save_tiny_diffae(tmp_path / "tiny-diffae.pt")
    runs = [_run(weights, tmp_path / f"s{source}", source=str(source)) for source in (-1, -2)]
    record = tmp_path / "sources.json"
    done = subprocess.run([sys.executable, "benchmarks/gcd_ablations.py", "sources", *map(str, runs), "--n", "2",
                           "--record", str(record)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(record.read_text())
    frs = []
    for run, row in zip(runs, result["rows"]):
        table = pd.read_csv(run / "samples.csv").sort_values("index").head(2)
        frs.append(table["success"].mean() * 100)
        assert row["fr"]["value"] == pytest.approx(frs[-1])
        assert row["fr_null"]["value"] == pytest.approx(table["null_success"].mean() * 100)
        assert row["n"] == 2 and row["renders"] == 2 * 48
    assert [row["source"] for row in result["rows"]] == [-1, -2]
    assert result["fr_mean"] == pytest.approx(np.mean(frs)) and result["fr_std"] == pytest.approx(np.std(frs, ddof=1))
    plot = tmp_path / "renders.png"
    done = subprocess.run([sys.executable, "benchmarks/gcd_ablations.py", "renders", *map(str, runs), "--n", "2",
                           "--plot", str(plot)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0 and Image.open(plot).size == (480, 320)
    best = _run(weights, tmp_path / "h", direction="h", directions=str(runs[0] / "method" / "directions.pt"))
    done = subprocess.run([sys.executable, "benchmarks/gcd_ablations.py", "directions", str(best), "--n", "3",
                           "--record", str(record)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(record.read_text())["rows"]
    table = pd.read_csv(best / "samples.csv")
    assert row["direction"] == "h" and [each["direction"] for each in row["per_direction"]] == ["h1", "h2", "h3"]
    for each in row["per_direction"]:
        assert each["fr"]["value"] == pytest.approx(table[f"success_{each['direction']}"].mean() * 100)
    # a run that has not explained n images yet is refused, not averaged
    short = subprocess.run([sys.executable, "benchmarks/gcd_ablations.py", "sources", str(runs[0]), "--n", "4"],
                           capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert short.returncode != 0 and "3 of the first 4 images are done" in short.stderr


def test_bb_lig_region_densities_compare_regions_of_different_sizes():
    report = load_benchmark("gcd_report")
    regions = {"cheeks": np.zeros((8, 8), bool), "mouth": np.zeros((8, 8), bool)}
    regions["cheeks"][:4] = True  # half of the image
    regions["mouth"][6, :2] = True  # 2 of 64 pixels
    uniform = report.region_shares(-np.ones((8, 8)), regions)  # |a| counts, its sign does not
    assert uniform["cheeks"] == pytest.approx((0.5, 1.0)) and uniform["mouth"] == pytest.approx((2 / 64, 1.0))
    a = np.zeros((8, 8))
    a[0, 0], a[6, 0] = 3.0, 1.0  # a quarter of the mass on the mouth, which is 1/32 of the image
    found = report.region_shares(a, regions)
    assert found["cheeks"] == pytest.approx((0.75, 1.5)) and found["mouth"] == pytest.approx((0.25, 8.0))
    assert report.region_shares(np.zeros((8, 8)), regions) == {}  # a map without mass is left out
