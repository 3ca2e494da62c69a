"""`cfbench leaderboard`: reported rows from the packaged papers' tables beside reproduced
rows from run records; empty cells for missing metrics; byte-identical and concurrency-safe."""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import time
from pathlib import Path

import pandas as pd
import pytest

from cfbench.leaderboard import build_leaderboards, packaged_reference, reproduced_rows
from tests.conftest import PGD_SETS, invoke, snapshot, toy_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs root with two finished toy runs (identity, pgd) and one unfinished run."""
    root = tmp_path_factory.mktemp("lb")
    common = ("--runs", str(root / "runs"), "--leaderboards", str(root / "boards-by-run"),
              "--published", str(root / "no-published-runs"))  # fmt: skip
    for args in (toy_run(*common), toy_run(*PGD_SETS, *common, method="pgd")):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    unfinished = root / "runs" / "toy_bright" / "half-done"
    unfinished.mkdir()
    (unfinished / "run.json").write_text("{}")  # no metrics.json: not a leaderboard row
    return root / "runs"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_refreshes_the_leaderboards(runs):
    board = rows(runs.parent / "boards-by-run" / "toy_bright.csv")
    assert [r["method"] for r in board] == ["identity", "pgd"]


def test_reproduced_rows_carry_provenance(runs, tmp_path):
    result = invoke("leaderboard", "--runs", runs, "--out", tmp_path / "boards")
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "boards" / "toy_bright.csv") in result.stdout.splitlines()
    board = rows(tmp_path / "boards" / "toy_bright.csv")
    assert [r["method"] for r in board] == ["identity", "pgd"]
    run_ids = sorted(p.name for p in (runs / "toy_bright").iterdir() if (p / "metrics.json").exists())
    for row in board:
        assert row["source"] == "reproduced" and row["paper"] == "" and row["table"] == ""
        assert row["dataset"] == "toy" and row["attr"] == "bright" and row["variant"] == "paper"
        assert row["run_id"] in run_ids and row["n"] == "8" and row["seed"] == "0"
        assert row["protocol"] == "cfbench-v1" and row["classifier"] == "toy-bright"
        for metric in ("fr", "l1", "l2"):
            assert row[metric] != "" and row[f"{metric}_ci_low"] != "" and row[f"{metric}_ci_high"] != ""
    assert float(board[0]["fr"]) == 0 and float(board[1]["fr"]) >= 90
    assert "fid" not in board[0]  # nobody has it for toy: no column
    md = (tmp_path / "boards" / "toy_bright.md").read_text()
    # compact: source, method, variant, the papers' metrics with ↑/↓, n and protocol; the rest is in the CSV
    assert md.startswith("# toy / bright\n\n| source | method | variant | fr ↑ | l1 ↓ | l2 ↓ | n | protocol |\n")
    assert "| reproduced | identity | paper | 0 [0, 0] |" in md and "| 8 | cfbench-v1 |" in md
    assert "run_id" not in md and "toy-bright" not in md and "↑ higher is better, ↓ lower is better" in md


def test_a_run_published_into_the_leaderboards_is_one_row(runs, tmp_path):
    """Publishing copies a run record into ``<out>/runs``; with the original still in the
    runs folder it is one row, the runs folder's (the one the user may have re-measured)."""
    out = tmp_path / "boards"
    published = next(p for p in (runs / "toy_bright").iterdir() if (p / "metrics.json").exists())
    copy = out / "runs" / "toy_bright" / published.name
    copy.mkdir(parents=True)
    for name in ("run.json", "metrics.json"):
        (copy / name).write_bytes((published / name).read_bytes())
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["fr"]["value"] = 12.5  # the published copy differs: the runs folder's row wins
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert invoke("leaderboard", "--runs", runs, "--out", out).exit_code == 0
    board = rows(out / "toy_bright.csv")
    assert sorted(r["run_id"] for r in board) == sorted({r["run_id"] for r in board})
    assert len(board) == 2 and 12.5 not in [float(r["fr"]) for r in board]


def _record(root: Path, run_id: str, metrics: dict, **info) -> None:
    """A finished toy/bright run record: run.json (``info`` added) beside metrics.json."""
    run_dir = root / "toy_bright" / run_id
    run_dir.mkdir(parents=True)
    identity = {"method": "pgd", "dataset": "toy", "attribute": "bright", "classifier": "toy-bright", "seed": 0,
                "profile": "paper", "config": {}}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps({"identity": identity, "attr": "bright", "run_id": run_id, "n": 8,
                                                  "protocol": "cfbench-v1", **info}))  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_flags_are_a_provenance_column_and_a_marker_in_the_markdown(tmp_path):
    """run.json's ``flags`` (sentences) join with "; " in the CSV's ``flags`` column; the
    markdown marks the row's variant with ⚑N and lists the flags under the table."""
    shared = "loss network net-trunk shares weights with the evaluation network net (mnac, cd)"
    fr = {"fr": {"value": 50.0, "ci": [40.0, 60.0], "n": 8, "network": None}}
    _record(tmp_path / "runs", "a", fr, flags=[shared, "seeded on the test split"])
    _record(tmp_path / "runs", "b", fr, flags=[shared])
    _record(tmp_path / "runs", "c", fr)  # no flags: an empty cell
    _record(tmp_path / "runs", "d", fr, flags=[])
    build_leaderboards(tmp_path / "runs", tmp_path / "boards")
    board = rows(tmp_path / "boards" / "toy_bright.csv")
    assert [r["flags"] for r in board] == [f"{shared}; seeded on the test split", shared, "", ""]
    columns = list(board[0])
    assert columns[columns.index("run_id"):] == ["run_id", "n", "seed", "protocol", "classifier", "networks", "flags"]
    md = (tmp_path / "boards" / "toy_bright.md").read_text()
    assert "| paper ⚑1,2 | 50 [40, 60] |" in md and "| paper ⚑1 | 50 [40, 60] |" in md
    assert md.count("| paper | 50 [40, 60] |") == 2 and "| flags |" not in md
    assert md.endswith(f"\n\n- ⚑1 {shared}\n- ⚑2 seeded on the test split\n")


def test_fid_family_values_of_small_runs_are_marked(tmp_path):
    fid = {"fid": {"value": 40.0, "ci": [30.0, 50.0], "n": 8}, "kid": {"value": 0.01, "ci": [0.0, 0.02], "n": 8}}
    _record(tmp_path / "runs", "small", fid)
    _record(tmp_path / "runs", "large", fid, n=2000)
    build_leaderboards(tmp_path / "runs", tmp_path / "boards")
    md = (tmp_path / "boards" / "toy_bright.md").read_text()
    assert md.count("| 40 [30, 50] † | 0.01 [0, 0.02] |") == 1 and md.count("| 40 [30, 50] | 0.01 [0, 0.02] |") == 1
    assert md.endswith("compare them only at equal n, or read KID.\n")
    assert "†" not in (tmp_path / "boards" / "toy_bright.csv").read_text()


def test_a_null_value_is_an_empty_cell_never_zero(tmp_path):
    """metrics.json writes a metric not defined for the run as null with a reason."""
    _record(tmp_path / "runs", "a", {"fr": {"value": 50.0, "ci": [40.0, 60.0], "n": 8},
                                     "sigma_l": {"value": 0.125, "ci": [0.1, 0.15], "n": 8}})  # fmt: skip
    undefined = {"value": None, "ci": None, "n": 0, "reason": "needs runs with other seeds"}
    _record(tmp_path / "runs", "b", {"fr": {"value": 0.0, "ci": [0.0, 0.0], "n": 8}, "sigma_l": undefined})
    build_leaderboards(tmp_path / "runs", tmp_path / "boards")
    a, b = rows(tmp_path / "boards" / "toy_bright.csv")
    assert (a["sigma_l"], a["sigma_l_ci_low"], b["sigma_l"], b["sigma_l_ci_low"]) == ("0.125", "0.1", "", "")
    assert b["fr"] == "0" and b["fr_ci_low"] == "0"  # a real 0 stays 0
    md = (tmp_path / "boards" / "toy_bright.md").read_text()
    assert "| 0 [0, 0] |  |" in md and "0.125 [0.1, 0.15]" in md and "None" not in md and "nan" not in md


def test_the_settings_a_method_names_show_beside_the_profile(tmp_path):
    """A run's ``row_settings`` (DiME: ``variant``, as ``--set variant=naive``) label its row
    after the profile, ``quick/naive``; a config field the method does not name does not."""
    for name, config, settings in (
        ("a", {"variant": "naive", "tau": 15}, ["variant"]),
        ("b", {"variant": "naive", "tau": 15}, []),
        ("c", {"variant": "dime", "tau": 15}, ["variant", "tau"]),
    ):
        run_dir = tmp_path / "runs" / "toy_bright" / name
        run_dir.mkdir(parents=True)
        identity = {"method": "dime", "dataset": "toy", "attribute": "bright", "classifier": "toy-bright", "seed": 0,
                    "profile": "quick", "config": config}  # fmt: skip
        info = {"identity": identity, "attr": "bright", "run_id": name, "row_settings": settings}
        (run_dir / "run.json").write_text(json.dumps(info))
        (run_dir / "metrics.json").write_text(json.dumps({"fr": {"value": 50.0, "ci": [40.0, 60.0], "n": 8}}))
    table = reproduced_rows(tmp_path / "runs")
    assert table.set_index("run_id")["variant"].to_dict() == {"a": "quick/naive", "b": "quick", "c": "quick/dime/15"}


def test_a_run_records_the_settings_its_method_names(runs):
    from cfbench.methods import METHODS

    assert METHODS.get("dime").row_settings == ("variant",)
    for info_path in (runs / "toy_bright").glob("*/run.json"):
        info = json.loads(info_path.read_text())
        if info.get("identity"):  # identity and pgd name none
            assert info["row_settings"] == [], info_path


def test_reported_rows_match_the_packaged_tables(runs, tmp_path):
    build_leaderboards(runs, tmp_path)
    reference = [r for p in sorted(packaged_reference().glob("*.csv")) for r in rows(p)]
    assert {p.name for p in packaged_reference().glob("*.csv")} == {"ace.csv", "dime.csv", "gcd.csv", "ldce.csv"}
    for dataset, attr in {(r["dataset"], r["attr"]) for r in reference}:
        expected = [r for r in reference if (r["dataset"], r["attr"]) == (dataset, attr)]
        board = rows(tmp_path / f"{dataset}_{attr}.csv")
        assert len(board) == len(expected), (dataset, attr)
        for got, want in zip(board, expected):
            assert got["source"] == "reported" and got["paper"] == want["paper"] and got["table"] == want["table"]
            assert (got["method"], got["variant"]) == (want["method"], want["variant"])
            for metric in ("fid", "fva", "mnac", "fr", "l2", "avg_rank"):
                if want[metric] == "":
                    assert got.get(metric, "") == "", (dataset, attr, want["method"], metric)  # never 0
                else:
                    assert float(got[metric]) == float(want[metric]), (dataset, attr, want["method"], metric)


def test_missing_metrics_are_empty_cells_never_zero(runs, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "toy.csv").write_text(
        "paper,table,dataset,attr,method,variant,fid,fr,l1,note\n"
        "toypaper,Table 9,toy,bright,Oracle,,12.5,97.0,,printed '-' for l1\n"
        "toypaper,Table 9,toy,bright,Zero,,0,0,0,real zeros stay zeros\n"
    )
    result = invoke("leaderboard", "--runs", runs, "--out", tmp_path / "boards", "--reference", ref)
    assert result.exit_code == 0, result.output
    board = rows(tmp_path / "boards" / "toy_bright.csv")
    assert [(r["source"], r["method"]) for r in board] == [
        ("reported", "Oracle"), ("reported", "Zero"), ("reproduced", "identity"), ("reproduced", "pgd"),
    ]  # fmt: skip
    oracle, zero, identity, pgd = board
    assert oracle["l1"] == "" and oracle["l2"] == "" and oracle["fr_ci_low"] == "" and oracle["run_id"] == ""
    assert oracle["fid"] == "12.5" and oracle["paper"] == "toypaper" and oracle["table"] == "Table 9"
    assert zero["fid"] == "0" and zero["l1"] == "0" and zero["l2"] == ""
    for row in (identity, pgd):
        assert row["fid"] == "" and row["note"] == ""
    assert identity["l1"] == "0" and identity["fr"] == "0"
    assert list(board[0])[:9] == ["source", "paper", "table", "dataset", "attr", "method", "variant", "fid", "fr"]
    md = (tmp_path / "boards" / "toy_bright.md").read_text()
    assert "| toypaper Table 9 | Oracle |  | 12.5 | 97 |  |" in md
    assert md.splitlines()[2].startswith("| source | method | variant | fid ↓ | fr ↑ | l1 ↓ |")  # reported: fixed directions


def test_regenerating_gives_byte_identical_files(runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = invoke("leaderboard", "--runs", runs, "--out", a)
    second = invoke("leaderboard", "--runs", runs, "--out", b)
    assert first.exit_code == second.exit_code == 0
    before = snapshot(a)
    assert invoke("leaderboard", "--runs", runs, "--out", a).exit_code == 0
    assert snapshot(a) == before == snapshot(b)
    assert len([k for k in before if k.endswith(".csv")]) == len([k for k in before if k.endswith(".md")]) > 10


def _regenerate(runs: str, out: str, times: int) -> None:
    for _ in range(times):
        build_leaderboards(Path(runs), Path(out))


def test_concurrent_regeneration_never_leaves_a_corrupt_file(runs, tmp_path):
    out = tmp_path / "boards"
    build_leaderboards(runs, tmp_path / "expected")
    expected = snapshot(tmp_path / "expected")
    expected_csv = (tmp_path / "expected" / "toy_bright.csv").read_text()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_regenerate, args=(str(runs), str(out), 15)) for _ in range(2)]
    for w in workers:
        w.start()
    reads = 0
    deadline = time.monotonic() + 90
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        path = out / "toy_bright.csv"
        if path.exists():
            text = path.read_text()
            assert text == expected_csv  # old or new, never half a file
            assert len(pd.read_csv(io.StringIO(text))) == 2
            reads += 1
        time.sleep(0.002)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert reads > 0
    assert snapshot(out) == expected
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary files left


def test_a_board_whose_runs_are_gone_is_deleted_and_other_files_are_kept(tmp_path):
    out = tmp_path / "boards"
    _record(tmp_path / "runs", "pgd-a", {"fr": {"value": 100.0, "ci": [100.0, 100.0], "n": 8}})
    build_leaderboards(tmp_path / "runs", out, reference_dir=tmp_path / "no-reference")
    assert (out / "toy_bright.csv").exists() and (out / "toy_bright.md").exists()
    (out / "notes.csv").write_text("name,value\nkeep,1\n")  # not a board
    for path in (tmp_path / "runs" / "toy_bright" / "pgd-a").iterdir():
        path.unlink()
    assert build_leaderboards(tmp_path / "runs", out, reference_dir=tmp_path / "no-reference") == []
    assert not (out / "toy_bright.csv").exists() and not (out / "toy_bright.md").exists()
    assert (out / "notes.csv").exists()
