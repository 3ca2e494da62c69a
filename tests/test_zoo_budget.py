"""Every zoo recipe trains from scratch within 4 hours on a 2-core CPU: held to the step
costs `benchmarks/zoo_budget.py` measured on each machine it has been run on."""
from __future__ import annotations

import json

import pytest
import torch

from cfbench.zoo import ZOO
from tests.conftest import REPO, load_benchmark

RECORDS = sorted((REPO / "benchmarks" / "results").glob("zoo-budget-*.json"))


def test_the_budget_was_measured_on_a_two_thread_cpu():
    assert any(json.loads(path.read_text())["machine"].endswith(", 2 threads") for path in RECORDS)


@pytest.mark.parametrize("path", RECORDS, ids=lambda path: path.stem)
def test_every_recipe_as_it_is_trains_within_the_budget(path):
    record = json.loads(path.read_text())
    assert record["budget_hours"] == 4.0 and set(record["models"]) == set(ZOO)
    for name, row in record["models"].items():
        entry = ZOO[name]
        assert (row["steps"], row["batch_size"], row["train_size"]) == (entry.steps, entry.batch_size, entry.train_size), (
            f"{name}: the recipe changed since {path.name} was measured; re-run benchmarks/zoo_budget.py")
        hours = (row["steps"] * row["seconds_per_step"] + row["prepare_seconds"]) / 3600
        assert hours == pytest.approx(row["projected_hours"], abs=1e-3)
        assert hours <= 4.0, f"{name} takes {hours:.2f} h on {record['machine']}"


def test_the_benchmark_times_real_training_steps_of_a_recipe():
    bench = load_benchmark("zoo_budget")
    data, fixed, per_image = bench.render_cost(64, 64)
    per_step, timed = bench.step_seconds("synthfaces-shortcut-smile", data, torch.device("cpu"), seconds=0.0, warmup=1)
    assert len(data.images) == 64 and fixed >= 0 and per_image > 0
    assert timed == 5 and per_step > 0
    assert bench.results_path("AMD EPYC 7B13", 2).name == "zoo-budget-amd-epyc-7b13-2t.json"
