"""What a local run writes, and where: its leaderboards stay beside the local runs (the
published boards change only by `cfbench leaderboard`), a local run never hides a
published row with another n, files get the umask's mode, and metrics.json is strict
JSON (a metric not defined for the run is ``null`` with a reason)."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from cfbench.files import atomic_write_bytes, atomic_write_text
from cfbench.leaderboard import build_leaderboards
from cfbench.metrics.base import MetricResult
from tests.conftest import REPO, invoke, only_run_dir, snapshot, toy_run

REPO_BOARDS = REPO / "leaderboards"


@pytest.fixture(scope="module", autouse=True)
def repo_boards_untouched():
    """No test here writes into the repository's own leaderboards/."""
    before = snapshot(REPO_BOARDS)
    yield
    assert snapshot(REPO_BOARDS) == before


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def strict_json(text: str) -> dict:
    """JSON as the standard has it: no NaN or Infinity."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def fake_run(root: Path, run_id: str, n: int, fr: float | None, method: str = "pgd",
             board: tuple[str, str, str] = ("toy", "bright", "toy-bright")) -> Path:  # fmt: skip
    """A finished run record (run.json beside metrics.json) of ``board`` (dataset, attr, classifier)."""
    dataset, attr, classifier = board
    run_dir = root / f"{dataset}_{attr}" / run_id
    run_dir.mkdir(parents=True)
    identity = {"method": method, "dataset": dataset, "attribute": attr, "classifier": classifier, "seed": 0,
                "profile": "paper", "config": {}}  # fmt: skip
    info = {"identity": identity, "attr": attr, "run_id": run_id, "n": n, "protocol": "cfbench-v1"}
    (run_dir / "run.json").write_text(json.dumps(info))
    (run_dir / "metrics.json").write_text(json.dumps({"fr": {"value": fr, "ci": None, "n": n, "network": None}}))
    return run_dir


# -- local runs beside published ones --------------------------------------------------------------
def test_a_local_run_never_hides_a_published_row_with_another_n(tmp_path):
    local, published = tmp_path / "runs", tmp_path / "leaderboards" / "runs"
    fake_run(local, "pgd-paper-s0-aaaa0000", 16, 90.0)
    fake_run(published, "pgd-paper-s0-aaaa0000", 100, 99.0)  # same run id, another n: two rows
    fake_run(local, "identity-paper-s0-bbbb0000", 100, 1.0, method="identity")
    fake_run(published, "identity-paper-s0-bbbb0000", 100, 0.0, method="identity")  # same n: one row, the local one
    build_leaderboards([local, published], local / "leaderboards")
    board = rows(local / "leaderboards" / "toy_bright.csv")
    assert [(r["run_id"], r["n"], r["fr"]) for r in board] == [
        ("identity-paper-s0-bbbb0000", "100", "1"),
        ("pgd-paper-s0-aaaa0000", "16", "90"),
        ("pgd-paper-s0-aaaa0000", "100", "99"),
    ]  # fmt: skip


def test_cfbench_run_refreshes_local_boards_and_leaves_the_published_ones(workdir):
    """`cfbench run` writes <runs>/leaderboards/ from the local runs and the published
    records (leaderboards/runs/ of the current directory); leaderboards/ stays byte-identical."""
    published = workdir / "leaderboards"
    published.mkdir()
    for path in REPO_BOARDS.glob("*.*"):
        shutil.copy(path, published / path.name)
    args = ("run", "--method", "identity", "--dataset", "synthfaces", "--attr", "smile", "--protocol", "cfbench-v1",
            "--device", "cpu", "--no-progress")  # fmt: skip
    result = invoke(*args, "--n", "3", "--runs", workdir / "elsewhere")  # the same run, published with n = 3
    assert result.exit_code == 0, result.output
    shutil.copytree(workdir / "elsewhere" / "synthfaces_smile", published / "runs" / "synthfaces_smile")
    smile = ("synthfaces", "smile", "synthfaces-densenet")
    fake_run(published / "runs", "dime-quick-s0-aaaa0000", 256, 90.0, method="dime", board=smile)
    before = snapshot(published)
    result = invoke(*args, "--n", "2", "--runs", workdir / "tmp")
    assert result.exit_code == 0, result.output
    assert snapshot(published) == before
    board = rows(workdir / "tmp" / "leaderboards" / "synthfaces_smile.csv")
    local_id = only_run_dir(workdir / "tmp" / "synthfaces_smile").name
    mine = [r for r in board if r["run_id"] == local_id]
    assert [r["n"] for r in mine] == ["2", "3"]  # the published n = 3 row of the same run id stays
    assert {r["method"] for r in board if r["source"] == "reproduced"} == {"identity", "dime"}
    assert any(r["source"] == "reported" for r in rows(workdir / "tmp" / "leaderboards" / "celeba_smile.csv"))


def test_cfbench_leaderboard_defaults_to_the_published_boards(workdir):
    """Without options `cfbench leaderboard` reads leaderboards/runs and writes leaderboards/."""
    fake_run(workdir / "leaderboards" / "runs", "pgd-paper-s0-aaaa0000", 100, 99.0)
    fake_run(workdir / "runs", "pgd-paper-s0-cccc0000", 16, 50.0)  # a local run: not published
    result = invoke("leaderboard")
    assert result.exit_code == 0, result.output
    assert "leaderboards/toy_bright.csv" in result.stdout.splitlines()
    assert [r["run_id"] for r in rows(workdir / "leaderboards" / "toy_bright.csv")] == ["pgd-paper-s0-aaaa0000"]
    assert not (workdir / "runs" / "leaderboards").exists()


# -- file modes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "a")
        atomic_write_bytes(tmp_path / "a.txt", b"b")  # replacing a file too
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
        assert os.umask(umask) == umask  # the umask itself is left as it was
    finally:
        os.umask(old)


def test_a_runs_files_follow_the_umask(workdir):
    old = os.umask(0o022)
    try:
        result = invoke(*toy_run(n=2))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(workdir / "runs")
    written = [p for p in (workdir / "runs").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert {"run.json", "metrics.json", "samples.csv", "grid.png", "toy_bright.csv"} <= {p.name for p in written}
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: 0o644 for p in written}
    assert (run_dir / "originals").stat().st_mode & 0o777 == 0o755


# -- metrics not defined for a run -----------------------------------------------------------------
def test_a_nan_metric_is_null_with_a_reason():
    stored = MetricResult(float("nan"), None, 0, None, "needs runs with other seeds (--seeds 0,1,2)").to_dict()
    assert stored == {"value": None, "ci": None, "n": 0, "network": None,
                      "reason": "needs runs with other seeds (--seeds 0,1,2)"}  # fmt: skip
    fallback = MetricResult(float("inf"), (1.0, float("nan")), 3, "net").to_dict()
    assert fallback["value"] is None and fallback["ci"] is None and fallback["reason"]
    assert strict_json(json.dumps(fallback)) == fallback
    fine = MetricResult(2.5, (1.0, 4.0), 3).to_dict()
    assert fine == {"value": 2.5, "ci": [1.0, 4.0], "n": 3, "network": None}  # no reason key: files unchanged
    assert MetricResult(2.5, (1.0, math.nan), 3).to_dict()["ci"] is None


def test_a_one_seed_sigma_l_is_null_in_metrics_json_and_its_reason_on_the_console(workdir):
    args = toy_run("--metric", "sigma_l", "--network", "perceptual=synthfaces-lpips", n=2)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(workdir / "runs")
    metrics = strict_json((run_dir / "metrics.json").read_text())
    assert metrics["sigma_l"]["value"] is None and metrics["sigma_l"]["ci"] is None
    assert metrics["sigma_l"]["reason"] == "needs runs with other seeds (--seeds 0,1,2)"
    line = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["sigma_l"])
    assert "needs runs with other seeds (--seeds 0,1,2)" in line and "nan" not in line
    board = rows(workdir / "runs" / "leaderboards" / "toy_bright.csv")
    assert board[0].get("sigma_l", "") == "" and board[0]["fr"] == "0"  # an empty cell (no column), never 0
