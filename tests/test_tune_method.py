"""`benchmarks/tune_method.py`: a sweep through the harness, on the split it is given, and
its record of each point's metrics with CIs."""
from __future__ import annotations

import json
import sys

import pytest

import tests.fixtures.toy  # noqa: F401  (registers the toy dataset and classifier)


def sweep(monkeypatch, tmp_path, *args: str) -> None:
    monkeypatch.syspath_prepend("benchmarks")
    import tune_method

    monkeypatch.setattr(sys, "argv", ["tune_method.py", "--method", "pgd", "--dataset", "toy", "--attr", "bright",
                                      "--n", "4", "--device", "cpu", "--metrics", "fr", "l1", "--out",
                                      str(tmp_path / "sweep"), "--set", "step_size=0.05", *args])  # fmt: skip
    tune_method.main()


def test_sweeps_on_the_same_images_join_one_record_and_other_images_are_refused(monkeypatch, tmp_path):
    path = tmp_path / "tuning.json"
    sweep(monkeypatch, tmp_path, "--split", "val", "--grid", "epsilon=0|0.5", "--record", str(path))
    sweep(monkeypatch, tmp_path, "--split", "val", "--grid", "steps=2", "--record", str(path))
    record = json.loads(path.read_text())
    assert record["split"] == "val" and record["n"] == 4 and record["set"] == {"step_size": "0.05"}
    points = record["points"]
    assert sorted(points) == ["epsilon=0", "epsilon=0.5", "steps=2"]
    assert points["epsilon=0"]["fr"]["value"] == 0 and points["epsilon=0"]["l1"]["value"] == 0
    assert points["epsilon=0.5"]["l1"]["value"] > 0
    low, high = points["epsilon=0.5"]["fr"]["ci"]
    assert low <= points["epsilon=0.5"]["fr"]["value"] <= high
    runs = {json.loads(p.read_text())["identity"].get("split") for p in (tmp_path / "sweep").glob("*/run.json")}
    assert runs == {"val"}
    before = path.read_text()
    with pytest.raises(SystemExit, match="holds a sweep of other images"):  # the test split: other images
        sweep(monkeypatch, tmp_path, "--grid", "steps=3", "--record", str(path))
    assert path.read_text() == before and not (tmp_path / "sweep" / "steps=3").exists()
