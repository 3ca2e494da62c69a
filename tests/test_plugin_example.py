"""The worked third-party plugin example (examples/cfbench-plugin-example), pip-installed
into a fresh venv next to a regular install of cfbench: its method and metric are found
through the entry-point groups and run like in-tree plugins."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import REPO, Venv, copy_source

EXAMPLE = REPO / "examples" / "cfbench-plugin-example"


def toy_plugin_path(root: Path) -> Path:
    """The toy dataset fixture, importable as tests.fixtures.toy without putting the
    repository (and with it its cfbench/) on the path."""
    (root / "tests" / "fixtures").mkdir(parents=True)
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "fixtures" / "__init__.py").write_text("")
    shutil.copy(REPO / "tests" / "fixtures" / "toy.py", root / "tests" / "fixtures" / "toy.py")
    return root


def load(run_dir: Path, folder: str, sample_id: str) -> np.ndarray:
    return np.array(Image.open(run_dir / folder / f"{sample_id}.png"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    root = tmp_path_factory.mktemp("plugin-example")
    env = Venv(root / "venv")
    env.pip_install(copy_source(REPO, root / "cfbench-src"), cwd=root)
    env.pip_install(copy_source(EXAMPLE, root / "example-src"), cwd=root)
    return env


def test_listed_through_entry_points(venv, tmp_path):
    cfbench = venv.path / "bin" / "cfbench"
    where = venv.run(venv.python, "-c", "import cfbench, cfbench_plugin_example as m; print(cfbench.__file__, m.__file__)",
                     cwd=tmp_path)  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(venv.site)) for path in where.stdout.split())

    listing = venv.run(cfbench, "list", cwd=tmp_path)  # one process: describing a third-party plugin imports it
    assert listing.returncode == 0, listing.stderr
    text = listing.stdout
    methods = text[text.index("methods:") : text.index("datasets:")].splitlines()
    (line,) = [line for line in methods if line.split()[:1] == ["blur"]]
    assert "Replace the image by a box blur of itself" in line
    assert line.endswith("[cfbench-plugin-example (no paper); black-box]")
    metrics = text[text.index("metrics:") : text.index("classifiers:")]
    assert "mean_abs_change" in metrics and "Mean absolute pixel change" in metrics


def test_run_blur_on_toy(venv, tmp_path):
    plugins = toy_plugin_path(tmp_path / "plugins")
    done = venv.run(
        venv.path / "bin" / "cfbench", "run", "--method", "blur", "--dataset", "toy", "--attr", "bright", "--n", "8",
        "--no-progress", cwd=tmp_path, PYTHONPATH=str(plugins), CFBENCH_PLUGINS="tests.fixtures.toy",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "runs" / "toy_bright").glob("*/run.json")]
    assert run_dir.name.startswith("blur-paper-s0-")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["identity"]["method"] == "blur" and info["identity"]["config"] == {"kernel_size": 5}
    assert info["access"] == "black-box" and info["environment"]["packages"]["cfbench"]
    table = pd.read_csv(run_dir / "samples.csv", dtype={"id": str})
    assert table["index"].tolist() == list(range(8))
    assert (table["classifier_queries"] == 1).all() and (table["classifier_gradients"] == 0).all()
    for sample_id in table["id"]:  # the counterfactual is the 5×5 box blur of the saved input
        original = torch.from_numpy(load(run_dir, "originals", sample_id)).permute(2, 0, 1)[None].float() / 255
        blurred = F.avg_pool2d(F.pad(original, [2] * 4, mode="replicate"), 5, stride=1)
        expected = (blurred.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(load(run_dir, "counterfactuals", sample_id), expected)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"fr", "fr_null", "l1", "l2"} and metrics["l1"]["value"] > 0
    assert (run_dir / "grid.png").is_file()
    board = pd.read_csv(tmp_path / "runs" / "leaderboards" / "toy_bright.csv")
    assert board["method"].tolist() == ["blur"]


def test_plugin_metric_through_metric_option(venv, tmp_path):
    plugins = toy_plugin_path(tmp_path / "plugins")
    done = venv.run(
        venv.path / "bin" / "cfbench", "run", "--method", "blur", "--dataset", "toy", "--attr", "bright", "--n", "8",
        "--no-progress", "--metric", "mean_abs_change", "--set", "kernel_size=3", "--out", "r",
        cwd=tmp_path, PYTHONPATH=str(plugins), CFBENCH_PLUGINS="tests.fixtures.toy",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mean_abs_change" in done.stdout
    run_dir = tmp_path / "r"
    assert json.loads((run_dir / "run.json").read_text())["identity"]["config"] == {"kernel_size": 3}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"fr", "fr_null", "l1", "l2", "mean_abs_change"}
    ids = pd.read_csv(run_dir / "samples.csv", dtype={"id": str})["id"]
    changes = [
        np.abs(load(run_dir, "originals", i).astype(np.float64) - load(run_dir, "counterfactuals", i)).mean() / 255
        for i in ids
    ]
    assert metrics["mean_abs_change"]["value"] == pytest.approx(np.mean(changes), rel=1e-6)
    # consistent with l1: the same absolute differences, summed instead of averaged over 3·16·16
    assert metrics["l1"]["value"] == pytest.approx(metrics["mean_abs_change"]["value"] * 3 * 16 * 16, rel=1e-6)
