"""`benchmarks/ddpm_recipe.py` measures a DDPM as the shipped weights were measured: given
the shipped weights themselves, its DiME runs repeat the published rows on their first
images, its image-by-image shortcut changes agree with the metric, and its bars are read
off its own figures and the weights' whole training."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from tests.conftest import REPO, run_subprocess, subprocess_env


def test_the_benchmark_on_the_shipped_weights_repeats_the_published_rows(tmp_path):
    record_path, work, shipped = tmp_path / "record.json", tmp_path / "work", tmp_path / "shipped"
    made = run_subprocess("run", "--method", "dime", "--profile", "quick", "--dataset", "synthfaces", "--attr", "smile",
                          "--n", "4", "--classifier", "synthfaces-shortcut-smile", "--device", "cpu", "--out", shipped,
                          "--no-progress", cwd=REPO, timeout=600)  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    done = subprocess.run(
        [sys.executable, "benchmarks/ddpm_recipe.py", "--weights", "cfbench/zoo/weights", "--n", "2",
         "--n-shortcut", "4", "--work", str(work), "--record", str(record_path),
         "--shipped-run", str(shipped)],  # the same weights: the same images change
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(record_path.read_text())

    for ours, published in ((work / "dime-smile", record["dime_smile"]["shipped_weights"]["row"]),
                            (work / "dime-shortcut", record["dime_shortcut"]["first_2"]["shipped_weights"]["row"])):
        mine, theirs = (pd.read_csv(p / "samples.csv").set_index("index") for p in (ours, REPO / published))
        theirs = theirs.loc[mine.index]
        for column in ("pred", "cf_pred", "success", "null_pred"):
            assert (mine[column] == theirs[column]).all(), (published, column)
        assert (mine["cf_logit"] - theirs["cf_logit"]).abs().max() < 0.05, published
    four = record["dime_shortcut"]["first_4"]["recipe_model"]
    assert four["fr"]["n"] == 4  # the run resumed to 4 images
    pairs = record["dime_shortcut"]["paired"]  # the image-by-image changes agree with the metric's
    assert pairs["images"] == four["shortcut_changed"]["n"] and pairs["mcnemar_exact_p"] == 1.0
    assert pairs["only_recipe_model"] == pairs["only_shipped_weights"] == 0
    assert round(100 * pairs["both_changed"] / pairs["images"], 2) == four["shortcut_changed"]["value"]

    bars, smile = record["bars"], record["dime_smile"]["recipe_model"]
    assert bars["fr_minus_fr_null"] == round(smile["fr"]["value"] - smile["fr_null"]["value"], 2)
    assert bars["shortcut_changed"] == record["dime_shortcut"]["first_2"]["recipe_model"]["shortcut_changed"]["value"]
    assert bars["null_edit_met"] == all(b["kept_met"] and b["fid_met"] for b in
                                        (m["bars"] for m in record["null_edit"].values()))  # fmt: skip
    # the shipped weights continued an earlier training: every stage counts against the budget
    assert len(record["stages"]) > 1 and record["steps"] == sum(s["steps"] for s in record["stages"])
    assert bars["hours"] > 4 and not bars["hours_met"]
