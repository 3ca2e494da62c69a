"""`cfbench rerun RUN_DIR` makes a recorded run again from its run.json: a published row
gets its own run id and, on its first images, its own samples; --set changes a setting;
a record it cannot read or make again ends in one line."""
from __future__ import annotations

import json
import shutil

import pandas as pd

from tests.conftest import REPO, assert_one_error_line, invoke, only_run_dir, run_subprocess, toy_run

PGD_ROW = REPO / "leaderboards/runs/synthfaces_smile/pgd-paper-s0-3161e32d"


def test_a_published_row_made_again_has_its_run_id_and_first_samples(workdir):
    result = invoke("rerun", PGD_ROW, "--n", "3", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(workdir / "runs")
    assert run_dir.name == PGD_ROW.name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["identity"] == json.loads((PGD_ROW / "run.json").read_text())["identity"] and info["n"] == 3
    mine, theirs = (pd.read_csv(p / "samples.csv").set_index("index") for p in (run_dir, PGD_ROW))
    theirs = theirs.loc[mine.index]
    assert (mine[["pred", "cf_pred", "success"]] == theirs[["pred", "cf_pred", "success"]]).all().all()
    assert (mine["cf_logit"] - theirs["cf_logit"]).abs().max() < 1e-3


def test_rerun_keeps_the_extra_metrics_and_set_changes_a_setting(workdir):
    assert invoke(*toy_run("--metric", "max_change", n=4, method="pgd")).exit_code == 0
    recorded = only_run_dir(workdir / "runs")
    result = invoke("rerun", recorded, "--set", "steps=3", "--runs", "again")
    assert result.exit_code == 0, result.output
    again = only_run_dir(workdir / "again")
    assert again.name != recorded.name  # another setting, another identity
    assert json.loads((again / "run.json").read_text())["identity"]["config"]["steps"] == 3
    assert "max_change" in json.loads((again / "metrics.json").read_text())
    result = invoke("rerun", recorded, "--runs", "same")
    assert result.exit_code == 0, result.output
    assert only_run_dir(workdir / "same").name == recorded.name


def test_a_record_that_cannot_be_made_again_ends_in_one_line(workdir):
    info = json.loads((PGD_ROW / "run.json").read_text())
    config = {**info["identity"]["config"], "gone_knob": 1}
    broken = workdir / "broken"
    shutil.copytree(PGD_ROW, broken)
    (broken / "run.json").unlink()
    cases = {"no run.json there": None, "not a finished run record": "{not json",
             "no longer has (gone_knob)": json.dumps({**info, "identity": {**info["identity"], "config": config}})}
    for expected, text in cases.items():
        if text is not None:
            (broken / "run.json").write_text(text)
        done = run_subprocess("rerun", broken, "--n", "1", "--device", "cpu", cwd=workdir)
        assert done.returncode == 2, (expected, done.stderr)
        assert expected in assert_one_error_line(done.stderr, done.stdout)
    assert not (workdir / "runs").exists()  # nothing written


def test_data_root_reaches_the_dataset_for_run_and_rerun(workdir):
    info = json.loads((PGD_ROW / "run.json").read_text())
    celeba = workdir / "celeba-row"
    celeba.mkdir()
    (celeba / "run.json").write_text(json.dumps({**info, "identity": {**info["identity"], "dataset": "celeba"}}))
    (workdir / "nodata").mkdir()
    for args in (["run", "--method", "pgd", "--dataset", "celeba", "--attr", "smile"], ["rerun", celeba]):
        done = run_subprocess(*args, "--n", "1", "--data-root", "nodata", "--no-progress", cwd=workdir)
        assert done.returncode == 2, done.stderr
        assert f"not found in {workdir / 'nodata' / 'celeba'}" in assert_one_error_line(done.stderr, done.stdout)
