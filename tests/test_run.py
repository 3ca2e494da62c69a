"""`cfbench run`: the baselines, the run record, and resuming (also after a crash)."""
from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cfbench.environment import cpu_name
from cfbench.record import png_bytes, quantize, read_png
from tests.conftest import PGD_SETS, invoke, mtimes, only_run_dir, run_subprocess, snapshot, toy_run
from tests.fixtures.toy import MeanIntensity, ToySplit


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# -- baselines ---------------------------------------------------------------------------------
def test_seeds_make_one_run_each_and_sigma_l_compares_them(workdir):
    """`--seeds`: one record per seed; every run's σL (DiME eq. 11) sees the other seed."""
    args = toy_run(*PGD_SETS, "--seeds", "0,1", "--metric", "sigma_l", "--network", "perceptual=synthfaces-lpips",
                   n=4, method="pgd")  # fmt: skip
    ok(invoke(*args))
    runs = sorted((workdir / "runs" / "toy_bright").iterdir())
    assert sorted(json.loads((r / "run.json").read_text())["identity"]["seed"] for r in runs) == [0, 1]
    for run_dir in runs:
        sigma = metrics_of(run_dir)["sigma_l"]
        assert sigma["n"] == 4 and sigma["value"] > 0 and "synthfaces-lpips" in sigma["network"]


def test_a_tuple_setting_resumes_and_finds_the_other_seeds(workdir):
    """A config tuple is stored as a JSON list; the same run must still be recognised."""
    args = toy_run("--set", "steps=3,4", "--seeds", "0,1", "--metric", "sigma_l", "--network",
                   "perceptual=synthfaces-lpips", n=4, method="typed")  # fmt: skip
    ok(invoke(*args))
    ok(invoke(*args))  # the same runs again: resumed, not refused as another config
    runs = sorted((workdir / "runs" / "toy_bright").iterdir())
    assert len(runs) == 2
    for run_dir in runs:
        assert json.loads((run_dir / "run.json").read_text())["identity"]["config"]["steps"] == [3.0, 4.0]
        assert metrics_of(run_dir)["sigma_l"]["n"] == 4


def test_identity_flips_nothing(workdir):
    out = ok(invoke(*toy_run(n=16))).stdout
    run_dir = only_run_dir(workdir / "runs")
    metrics = metrics_of(run_dir)
    assert metrics["fr"]["value"] == 0 and metrics["fr"]["ci"] == [0, 0] and metrics["fr"]["n"] == 16
    assert metrics["l1"]["value"] == 0 and metrics["l2"]["value"] == 0
    assert f"run {run_dir.name}: runs/toy_bright/{run_dir.name}" in out
    assert "fr       0 [0, 0]  (n=16)" in out


def test_target_label_asks_for_the_opposite_of_the_label(workdir):
    """`--target label` (the official LDCE code's target): where the classifier is wrong the
    identity already "succeeds"; the run is another record, its row marked ``target=label``.
    The shortcut classifier is wrong wherever Rosy_Cheeks and Smiling disagree."""
    args = ("run", "--method", "identity", "--dataset", "synthfaces", "--attr", "smile", "--classifier",
            "synthfaces-shortcut-smile", "--n", "16", "--protocol", "cfbench-v1", "--device", "cpu", "--no-progress")
    ok(invoke(*args))
    ok(invoke(*args, "--target", "label"))
    by_target = {}
    for run_dir in (workdir / "runs" / "synthfaces_smile").iterdir():
        info = json.loads((run_dir / "run.json").read_text())
        by_target[info["identity"].get("target", "prediction")] = pd.read_csv(run_dir / "samples.csv")
    prediction, label = by_target["prediction"], by_target["label"]
    assert (prediction["target"] == 1 - prediction["pred"]).all() and not prediction["success"].any()
    assert (label["target"] == 1 - label["label"]).all()
    wrong = label["pred"] != label["label"]
    assert 0 < wrong.sum() < 16 and (label["success"] == wrong).all()
    board = (workdir / "runs" / "leaderboards" / "synthfaces_smile.csv").read_text()
    assert "paper/target=label" in board
    result = invoke(*args, "--target", "opposite")
    assert result.exit_code == 2 and "--target opposite: use prediction or label." in result.stderr


def test_split_val_explains_held_out_images_in_a_record_of_its_own(workdir):
    """`--split val` (tuning off the leaderboards' images): the first n images of the
    validation split, another record, its row marked ``split=val``; an unknown split is one
    line and writes nothing."""
    args = ("run", "--method", "identity", "--dataset", "synthfaces", "--attr", "smile", "--n", "4",
            "--protocol", "cfbench-v1", "--device", "cpu", "--no-progress")
    ok(invoke(*args))
    ok(invoke(*args, "--split", "val"))
    by_split = {}
    for run_dir in (workdir / "runs" / "synthfaces_smile").iterdir():
        info = json.loads((run_dir / "run.json").read_text())
        by_split[info["identity"].get("split", "test")] = pd.read_csv(run_dir / "samples.csv")
    assert sorted(by_split) == ["test", "val"]
    assert not set(by_split["test"]["id"]) & set(by_split["val"]["id"])
    board = (workdir / "runs" / "leaderboards" / "synthfaces_smile.csv").read_text()
    assert "paper/split=val" in board
    before = snapshot(workdir)
    result = invoke(*args, "--split", "holdout")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "error: --split holdout: synthfaces has the splits train, val, test."]
    assert snapshot(workdir) == before


def test_pgd_flips_nearly_all(workdir):
    ok(invoke(*toy_run(*PGD_SETS, n=32, method="pgd")))
    run_dir = only_run_dir(workdir / "runs")
    metrics = metrics_of(run_dir)
    assert metrics["fr"]["value"] >= 90
    assert metrics["l1"]["value"] > 0 and metrics["l2"]["value"] > 0
    low, high = metrics["fr"]["ci"]
    assert low <= metrics["fr"]["value"] <= high
    table = pd.read_csv(run_dir / "samples.csv")
    assert (table["classifier_gradients"] == 20).all() and (table["classifier_queries"] == 21).all()
    assert (table["diffusion_evals"] == 0).all()


def test_baselines_on_the_default_device(workdir):
    """`--device auto`: CUDA where there is one (then this is the GPU check), else the CPU."""
    for method, sets in (("identity", ()), ("pgd", PGD_SETS)):
        args = ["run", "--method", method, "--dataset", "toy", "--attr", "bright", "--n", "8", "--no-progress", *sets]
        ok(invoke(*args))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for run_dir in (workdir / "runs" / "toy_bright").iterdir():
        info = json.loads((run_dir / "run.json").read_text())
        assert info["environment"]["device"] == expected
        fr = metrics_of(run_dir)["fr"]["value"]
        assert (fr == 0) if info["identity"]["method"] == "identity" else (fr >= 90)


# -- the run record ----------------------------------------------------------------------------
def test_run_record_contents(workdir):
    result = ok(invoke(*toy_run(*PGD_SETS, "--seed", "3", "--batch-size", "4", n=12, method="pgd")))
    assert result.stderr == ""  # --no-progress
    run_dir = only_run_dir(workdir / "runs")
    assert run_dir.parent == workdir / "runs" / "toy_bright"
    assert run_dir.name.startswith("pgd-paper-s3-")
    for name in ("run.json", "samples.csv", "grid.png", "metrics.json"):
        assert (run_dir / name).is_file(), name

    info = json.loads((run_dir / "run.json").read_text())
    identity = info["identity"]
    assert identity == {
        "method": "pgd",
        "dataset": "toy",
        "attribute": "Bright",
        "classifier": "toy-bright",
        "seed": 3,
        "profile": "paper",
        "config": {"norm": "linf", "epsilon": 0.5, "step_size": 0.05, "steps": 20, "random_start": True},
    }
    assert info["run_id"] == run_dir.name and info["attr"] == "bright" and info["n"] == 12
    assert info["protocol"] == "cfbench-v1" and info["access"] == "white-box" and info["paper"]
    env = info["environment"]
    assert env["device"] == "cpu" and env["seed"] == 3 and "git_revision" in env
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"] == torch.__version__
    assert env["packages"]["cfbench"] and env["packages"]["numpy"] == np.__version__
    assert {"python", "platform", "device_name"} <= set(env) and env["threads"] == torch.get_num_threads()
    assert env["device_name"] == cpu_name()  # the processor's model, which sets its speed
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []  # fmt: skip
    assert cpu_name() == (models[0] if models else cpu_name())

    # the first N of the evaluation split, in order; target = 1 - prediction
    table = pd.read_csv(run_dir / "samples.csv", dtype={"id": str})
    split = ToySplit("test", 64)
    assert table["index"].tolist() == list(range(12))
    assert table["id"].tolist() == [split[i].id for i in range(12)]
    network = MeanIntensity()
    originals = quantize(torch.stack([split[i].image for i in range(12)]))
    logits = network(originals.float() / 255)
    assert np.allclose(table["logit"], logits.numpy(), rtol=0, atol=1e-5)
    assert (table["pred"] == (logits > 0).long().numpy()).all()
    assert (table["target"] == 1 - table["pred"]).all()
    assert (table["label"] == [int(split[i].labels[0]) for i in range(12)]).all()
    assert (table["success"] == (table["cf_pred"] == table["target"])).all()

    # lossless PNGs: reading back gives the quantized tensors exactly
    for k, sample_id in enumerate(table["id"]):
        saved = read_png(run_dir / "originals" / f"{sample_id}.png")
        assert torch.equal((saved * 255).round().to(torch.uint8), originals[k])
        cf = read_png(run_dir / "counterfactuals" / f"{sample_id}.png")
        with torch.no_grad():
            cf_logit = network(cf[None]).item()
        assert cf_logit == pytest.approx(table["cf_logit"][k], abs=1e-5)  # success judged on the saved image
        assert Image.open(run_dir / "counterfactuals" / f"{sample_id}.png").mode == "RGB"
    assert sorted(p.name for p in (run_dir / "counterfactuals").iterdir()) == sorted(f"{i}.png" for i in table["id"])

    # the grid: 8 samples per row; originals / counterfactuals / difference
    grid = Image.open(run_dir / "grid.png")
    assert grid.size == (8 * 18 + 2, 3 * 18 + 2)

    metrics = metrics_of(run_dir)
    assert set(metrics) == {"fr", "fr_null", "l1", "l2"}
    assert metrics["fr"]["value"] == pytest.approx(100 * table["success"].mean())
    assert metrics["fr"]["higher_is_better"] is True and metrics["l2"]["higher_is_better"] is False


def test_png_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 7, 5), dtype=torch.uint8, generator=g)
    data = png_bytes(image)
    array = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(array.transpose(2, 0, 1), image.numpy())
    floats = torch.rand(2, 3, 4, 4, generator=g)
    q = quantize(floats)
    assert torch.equal(q, (floats * 255).round().to(torch.uint8))  # rounding, not truncation
    assert quantize(torch.tensor([[-0.2, 1.7, 0.6 / 255, 0.4 / 255]]).view(1, 1, 2, 2)).flatten().tolist() == [0, 255, 1, 0]


def test_progress_bar_on_stderr(workdir):
    result = ok(invoke("run", "--method", "identity", "--dataset", "toy", "--attr", "bright", "--n", "4", "--device", "cpu"))
    assert "identity on toy/Bright" in result.stderr and "4/4" in result.stderr
    assert "identity on toy/Bright" not in result.stdout


def test_batch_size_does_not_change_deterministic_results(workdir):
    ok(invoke(*toy_run("--batch-size", "3", "--out", "a", n=10)))
    ok(invoke(*toy_run("--batch-size", "16", "--out", "b", n=10)))
    a, b = pd.read_csv("a/samples.csv"), pd.read_csv("b/samples.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    assert metrics_of(Path("a")) == metrics_of(Path("b"))


# -- resuming --------------------------------------------------------------------------------
def calls(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_rerun_resumes_without_recomputing(workdir):
    log = workdir / "calls.txt"
    env = {"CFBENCH_TEST_CALLS": str(log)}
    ok(invoke(*toy_run("--batch-size", "4", n=8, method="crashy"), env=env))
    assert calls(log) == [4, 4]
    run_dir = only_run_dir(workdir / "runs")
    before, times = snapshot(run_dir / "counterfactuals"), mtimes(run_dir)

    ok(invoke(*toy_run("--batch-size", "4", n=8, method="crashy"), env=env))  # same run: nothing to do
    assert calls(log) == [4, 4]
    assert mtimes(run_dir) == times and snapshot(run_dir / "counterfactuals") == before

    ok(invoke(*toy_run("--batch-size", "4", n=14, method="crashy"), env=env))  # a larger N: only the rest
    assert calls(log) == [4, 4, 4, 2]
    assert only_run_dir(workdir / "runs") == run_dir
    new_times = mtimes(run_dir)
    assert {k: new_times[k] for k in times} == times
    table = pd.read_csv(run_dir / "samples.csv")
    assert table["index"].tolist() == list(range(14))
    assert metrics_of(run_dir)["fr"]["n"] == 14
    assert json.loads((run_dir / "run.json").read_text())["n"] == 14

    ok(invoke(*toy_run("--batch-size", "4", n=6, method="crashy"), env=env))  # a smaller N: a subset
    assert calls(log) == [4, 4, 4, 2]
    assert metrics_of(run_dir)["fr"]["n"] == 6
    assert len(pd.read_csv(run_dir / "samples.csv")) == 14  # nothing is lost


def test_samples_whose_images_are_gone_are_recomputed(workdir):
    """A record copied without its images (e.g. a clone of the published records)
    regenerates exactly the samples whose PNGs are missing and keeps the others."""
    log = workdir / "calls.txt"
    env = {"CFBENCH_TEST_CALLS": str(log)}
    ok(invoke(*toy_run("--batch-size", "4", n=8, method="crashy"), env=env))
    run_dir = only_run_dir(workdir / "runs")
    before = snapshot(run_dir / "counterfactuals")
    for folder in ("originals", "counterfactuals"):
        for index in (5, 6):
            (run_dir / folder / f"test-{index:04d}.png").unlink()
    ok(invoke(*toy_run("--batch-size", "4", n=8, method="crashy"), env=env))
    assert calls(log) == [4, 4, 2]
    after = snapshot(run_dir / "counterfactuals")
    assert set(after) == set(before)
    assert {k: v for k, v in after.items() if k not in ("test-0005.png", "test-0006.png")} == {
        k: v for k, v in before.items() if k not in ("test-0005.png", "test-0006.png")
    }
    assert pd.read_csv(run_dir / "samples.csv")["index"].tolist() == list(range(8))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: the same crashy run, never interrupted."""
    root = tmp_path_factory.mktemp("reference")
    result = invoke(*toy_run("--batch-size", "4", "--out", str(root / "run"), n=16, method="crashy"))
    assert result.exit_code == 0, result.output
    return root / "run"


def assert_same_results(run_dir: Path, reference: Path) -> None:
    a = pd.read_csv(run_dir / "samples.csv").drop(columns="seconds")
    b = pd.read_csv(reference / "samples.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)
    for folder in ("originals", "counterfactuals"):
        assert snapshot(run_dir / folder) == snapshot(reference / folder)
    assert metrics_of(run_dir) == metrics_of(reference)
    assert (run_dir / "grid.png").read_bytes() == (reference / "grid.png").read_bytes()


@pytest.mark.parametrize("crash", ["kill-saving:2", "kill:2", "interrupt:2"])
def test_crash_mid_run_loses_nothing_and_resumes_identically(workdir, uninterrupted, crash):
    """A run killed (SIGKILL, even while it writes a batch) or interrupted (Ctrl-C) after two
    batches keeps them; the re-run computes only the rest and ends as if never stopped."""
    log = workdir / "calls.txt"
    args = ["run", "--method", "crashy", "--dataset", "toy", "--attr", "bright", "--n", "16", "--batch-size", "4"]
    args += ["--out", "run", "--device", "cpu"]  # the reference ran on the CPU too
    done = run_subprocess(*args, cwd=workdir, CFBENCH_TEST_CRASH=crash, CFBENCH_TEST_CALLS=str(log))
    if crash.startswith("kill"):
        assert done.returncode == -signal.SIGKILL, done.stderr
    else:
        assert done.returncode == 130, done.stderr
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("interrupted:") and "re-run the same command to resume" in lines[-1]
        assert "Traceback" not in done.stderr
    assert "crashy on toy/Bright:" in done.stderr and "/16 [" in done.stderr  # the progress bar
    run_dir = workdir / "run"
    table = pd.read_csv(run_dir / "samples.csv")
    assert table["index"].tolist() == list(range(8))
    assert not (run_dir / "metrics.json").exists()
    if crash.startswith("kill-saving"):  # one image of the third batch was on disk, unlisted
        assert len(list((run_dir / "originals").glob("*.png"))) == 9
    kept = {k: v for k, v in mtimes(run_dir).items() if any(f"-{i:04d}.png" in k for i in range(8))}
    assert len(kept) == 16

    result = invoke(*args, "--no-progress", env={"CFBENCH_TEST_CALLS": str(log)})
    assert result.exit_code == 0, result.output
    # two batches before the crash, two after (the batch killed while saving was computed once more)
    assert calls(log) == [4, 4, 4, 4, 4] if crash.startswith("kill-saving") else [4, 4, 4, 4]
    after = mtimes(run_dir)
    assert {k: after[k] for k in kept} == kept  # finished samples were not rewritten
    assert_same_results(run_dir, uninterrupted)
