"""`cfbench suite` and `cfbench report`: every listed method on the same toy images (the
diffusion method on the tiny DDPM of the contract suite), a failing method reported with
its error line and a non-zero exit while the others finish, an interrupted suite resumed,
the report rebuilt from the runs byte for byte, and the page opened in headless Chromium
(loads, no script error, sorts on ``#sort=…``, every image it shows is on disk)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import tests.fixtures.tiny_backbone  # noqa: F401  (registers tiny-ddpm)
import tests.fixtures.toy  # noqa: F401
from cfbench.leaderboard import build_leaderboards
from cfbench.report import build_report
from tests.conftest import invoke, snapshot
from tests.fixtures.tiny_backbone import save_tiny_ddpm
from tests.test_contract_suite import SETTINGS

METHODS = "identity,pgd,ace"
BROWSER = ("chromium", "chromium-browser")


def suite_args(runs: Path, methods: str, *extra: str, n: int = 8) -> list[str]:
    return ["suite", "--dataset", "toy", "--attr", "bright", "--methods", methods, "--n", str(n), "--batch-size", "4",
            "--device", "cpu", "--no-progress", "--runs", str(runs), *extra]  # fmt: skip


def method_sets(name: str, weights: Path) -> list[str]:
    """The contract suite's fast settings of ``name`` as ``--set METHOD.KEY=VALUE``."""
    found = dict(SETTINGS[name])
    if found.get("backbone", "").startswith("tiny-"):
        found["weights_path"] = str(weights / f"{found['backbone']}.pt")
    return [item for key, value in found.items() for item in ("--set", f"{name}.{key}={value}")]


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    """A finished suite (identity, pgd, tiny ACE; --profile quick) on the toy world: its
    ``<runs>/toy_bright`` folder."""
    root = tmp_path_factory.mktemp("suite")
    save_tiny_ddpm(root / "tiny-ddpm.pt")
    sets = [*method_sets("pgd", root), *method_sets("ace", root)]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # no published runs of the repository in its local leaderboards
        result = invoke(*suite_args(root / "runs", METHODS, "--profile", "quick", *sets))
    assert result.exit_code == 0, result.output
    assert f"report: {root / 'runs' / 'toy_bright' / 'report' / 'index.html'}" in result.output
    return root / "runs" / "toy_bright"


def suite_record(folder: Path) -> dict:
    return json.loads((folder / "suite.json").read_text())


def test_the_suite_runs_every_listed_method_on_the_same_images(suite_dir):
    record = suite_record(suite_dir)
    assert [e["method"] for e in record["methods"]] == ["identity", "pgd", "ace"]
    assert {e["status"] for e in record["methods"]} == {"done"}
    assert (record["dataset"], record["attr"], record["classifier"], record["n"]) == ("toy", "bright", "toy-bright", 8)
    profiles = {e["method"]: (e["profile"], e.get("profile_note", "")) for e in record["methods"]}
    assert profiles["ace"] == ("quick", "")  # ACE has a quick profile; identity and PGD run their default
    assert profiles["pgd"] == ("paper", "has no quick profile: ran its default, paper")
    ids = []
    for entry in record["methods"]:
        run = suite_dir / entry["run_id"]
        info = json.loads((run / "run.json").read_text())
        assert info["n"] == 8 and info["identity"]["classifier"] == "toy-bright" and (run / "metrics.json").exists()
        ids.append(list(pd.read_csv(run / "samples.csv", dtype={"id": str})["id"]))
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 8
    ace = json.loads((suite_dir / record["methods"][2]["run_id"] / "run.json").read_text())
    assert ace["identity"]["config"]["attack_iterations"] == 3  # --set ace.attack_iterations=3 beat the profile
    assert (suite_dir.parent / "leaderboards" / "toy_bright.csv").exists()  # the local boards are refreshed


def test_the_report_holds_the_board_costs_images_and_the_note(suite_dir):
    page = (suite_dir / "report" / "index.html").read_text()
    record = suite_record(suite_dir)
    for entry in record["methods"]:
        assert f'data-run="{entry["run_id"]}"' in page
    for text in ("toy / bright", "toy-bright", "cfbench-v1", record["started"], "has no quick profile",
                 'data-key="fr"', 'data-key="fr_null"', 'data-key="cost_seconds"', 'data-key="cost_diffusion_evals"',
                 'data-key="cost_classifier_queries"', "|Δ|×4", 'id="plot-fr-cost"',
                 "no realism metric"):  # fmt: skip
        assert text in page, text
    header = re.findall(r'<th data-key="([^"]+)"', page)
    metrics = [k for k in header if k in ("fr", "fr_null", "l1", "l2")]
    assert metrics == ["fr", "fr_null", "l1", "l2"]  # the papers' column order, fr_null beside fr
    ace = record["methods"][2]["run_id"]
    assert f"img/{ace}/test-0000-mask.png" in page  # ACE saves masks
    offline = page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, never fetched
    assert "http://" not in offline and "https://" not in offline and "//" not in re.sub(r"<script>.*?</script>", "",
                                                                                      offline, flags=re.S)  # fmt: skip
    table = pd.read_csv(suite_dir / ace / "samples.csv")
    cell = re.search(rf'data-run="{ace}".*?<td data-key="cost_diffusion_evals" data-v="([^"]+)"', page)
    assert cell and float(cell.group(1)) == pytest.approx(table["diffusion_evals"].mean())


def test_cfbench_report_rebuilds_the_same_page(suite_dir, tmp_path):
    before = snapshot(suite_dir / "report")
    result = invoke("report", suite_dir)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(suite_dir / "report" / "index.html")
    assert snapshot(suite_dir / "report") == before
    result = invoke("report", suite_dir, "--out", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path / "elsewhere") == before


def _chromium() -> str:
    found = next((shutil.which(name) for name in BROWSER if shutil.which(name)), None)
    if found is None:
        pytest.fail("chromium is not installed: the report is checked in headless Chromium; install it with "
                    "`apt-get install -y chromium` (.ci/run does).")  # fmt: skip
    return found


def _browse(page: Path, fragment: str, *flags: str, profile: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={profile}", *flags, page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not errors, errors  # the page logs nothing when all is well
    return done


def _column(dom: str, key: str) -> list[str]:
    board = dom.split('id="leaderboard"', 1)[1].split("</table>", 1)[0]
    return re.findall(rf'<td data-key="{key}" data-v="([^"]*)"', board)


def test_the_page_in_headless_chromium(suite_dir, tmp_path):
    page = suite_dir / "report" / "index.html"
    raw = _column(page.read_text(), "fr")
    dom = _browse(page, "#sort=fr", "--dump-dom", profile=tmp_path / "profile").stdout
    assert 'id="leaderboard"' in dom and 'data-ready="1"' in dom  # loaded, and the scripts ran to the end
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', dom), "the page caught a script error"
    assert 'data-sorted-by="fr"' in dom and 'data-sort-dir="desc"' in dom  # FR: higher is better, best first
    fr = [float(v) for v in _column(dom, "fr")]
    assert fr == sorted(fr, reverse=True) and sorted(map(float, raw)) == sorted(fr) and fr != [float(v) for v in raw]
    ascending = _browse(page, "#sort=l1:asc", "--dump-dom", profile=tmp_path / "profile").stdout
    l1 = [float(v) for v in _column(ascending, "l1")]
    assert l1 == sorted(l1) and 'data-sort-dir="asc"' in ascending
    sources = re.findall(r'<img src="([^"]+)"', dom)
    assert len(sources) >= 8 * 4  # originals, counterfactuals, differences, ACE's masks
    for source in sources:
        assert not re.match(r"[a-z]+://", source), source  # relative paths only: no network
        assert (page.parent / source).is_file(), source
    shot = tmp_path / "report.png"
    _browse(page, "#sort=fr", f"--screenshot={shot}", "--window-size=1400,2000", profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_failing_method_is_reported_and_the_others_finish(workdir):
    result = invoke(*suite_args(workdir / "runs", "identity,nan,pgd", *method_sets("pgd", workdir)))
    assert result.exit_code == 1, result.output
    folder = workdir / "runs" / "toy_bright"
    assert result.stderr.strip() == (f"error: 1 of 3 methods failed (nan); the report lists why: "
                                     f"{folder / 'report' / 'index.html'}")  # fmt: skip
    record = suite_record(folder)
    status = {e["method"]: e["status"] for e in record["methods"]}
    assert status == {"identity": "done", "nan": "failed", "pgd": "done"}
    error = next(e["error"] for e in record["methods"] if e["method"] == "nan")
    assert error.startswith("the method produced NaN/inf for test-0007")
    page = (folder / "report" / "index.html").read_text()
    assert 'id="failed-banner"' in page and 'data-method="nan"' in page and error.replace("'", "&#x27;") in page
    for entry in record["methods"]:
        if entry["method"] != "nan":
            assert (folder / entry["run_id"] / "metrics.json").exists() and f'data-run="{entry["run_id"]}"' in page


def test_an_interrupted_suite_resumes_where_it_stopped(workdir):
    calls = workdir / "calls.txt"
    args = suite_args(workdir / "runs", "identity,crashy,pgd", *method_sets("pgd", workdir))
    first = invoke(*args, env={"CFBENCH_TEST_CRASH": "interrupt:1", "CFBENCH_TEST_CALLS": str(calls)})
    assert first.exit_code == 130, first.output
    folder = workdir / "runs" / "toy_bright"
    record = suite_record(folder)
    assert [e["status"] for e in record["methods"]] == ["done", "interrupted", "pending"]
    identity, crashy = (folder / record["methods"][i]["run_id"] for i in (0, 1))
    assert len(pd.read_csv(crashy / "samples.csv")) == 4 and not (crashy / "metrics.json").exists()
    finished = (identity / "metrics.json").stat().st_mtime_ns
    second = invoke(*args, env={"CFBENCH_TEST_CALLS": str(calls)})
    assert second.exit_code == 0, second.output
    assert calls.read_text().split() == ["4", "4"]  # crashy explained the other 4 images only
    assert f"identity: finished before, {identity}" in second.output
    assert (identity / "metrics.json").stat().st_mtime_ns == finished  # a finished run is left alone
    record = suite_record(folder)
    assert [e["status"] for e in record["methods"]] == ["done", "done", "done"]
    assert len(pd.read_csv(crashy / "samples.csv")) == 8 and (folder / "report" / "index.html").exists()


def test_a_record_kept_without_its_images_is_generated_again(workdir):
    """What a clone of a committed suite holds: the records, not the runs' images."""
    calls = workdir / "calls.txt"
    args = suite_args(workdir / "runs", "crashy,identity", n=4)
    assert invoke(*args, env={"CFBENCH_TEST_CALLS": str(calls)}).exit_code == 0
    folder = workdir / "runs" / "toy_bright"
    crashy, identity = (folder / e["run_id"] for e in suite_record(folder)["methods"])
    shutil.rmtree(crashy / "counterfactuals")
    second = invoke(*args, env={"CFBENCH_TEST_CALLS": str(calls)})
    assert second.exit_code == 0, second.output
    assert calls.read_text().split() == ["4", "4"] and f"identity: finished before, {identity}" in second.output
    assert len(list((crashy / "counterfactuals").glob("*.png"))) == 4 and len(pd.read_csv(crashy / "samples.csv")) == 4


@pytest.mark.parametrize("sets, message", [
    (["--set", "epsilon=0.5"], "--set epsilon=0.5: write it as METHOD.KEY=VALUE, e.g. --set gcd.fits=1."),
    (["--set", "dime.tau=3"], "--set dime.…: dime is not among the suite's methods (identity, pgd)."),
    (["--methods", "identity,nosuch"], "Unknown method"),
])  # fmt: skip
def test_suite_user_errors_are_one_line(workdir, sets, message):
    args = suite_args(workdir / "runs", "identity,pgd")
    if sets[0] == "--methods":
        args[args.index("--methods") + 1] = sets[1]
        sets = []
    result = invoke(*args, *sets)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (workdir / "runs").exists()


# -- the report from run records alone ----------------------------------------------------------
def _fake_run(folder: Path, run_id: str, dataset: str, attr: str, metrics: dict, n: int = 8, **info) -> Path:
    run = folder / run_id
    run.mkdir(parents=True)
    identity = {"method": run_id.split("-")[0], "dataset": dataset, "attribute": attr, "classifier": "clf", "seed": 0,
                "profile": "paper", "config": {}}  # fmt: skip
    (run / "run.json").write_text(json.dumps({"identity": identity, "attr": attr, "run_id": run_id, "n": n,
                                              "protocol": "cfbench-v3", "finished": 1.7e9,
                                              "environment": {"device": "cpu"}, **info}))  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"index": i, "id": f"s{i}", "logit": 1.0, "cf_logit": -1.0, "success": True, "seconds": 0.5,
             "diffusion_evals": 10, "diffusion_gradients": 0, "classifier_queries": 3, "classifier_gradients": 2}
            for i in range(n)]  # fmt: skip
    pd.DataFrame(rows).to_csv(run / "samples.csv", index=False)
    return run


def _metric(value, network=None, higher=True, ci=(0.0, 1.0)):
    return {"value": value, "ci": list(ci) if value is not None else None, "n": 8, "network": network,
            "higher_is_better": higher}  # fmt: skip


def test_the_shortcut_track_stand_ins_and_small_n_marks(tmp_path):
    folder = tmp_path / "synthfaces_smile"
    oracle = "synthfaces-oracle (stand-in)"
    for run_id, shortcut in (("dime-quick-s0-aaaa0000", 91.2), ("ace-quick-s0-bbbb0000", 12.5)):
        _fake_run(folder, run_id, "synthfaces", "smile", {
            "fr": _metric(90.0), "fid": _metric(80.0, "synthfaces-features (stand-in)", False, (70.0, 90.0)),
            "l1": _metric(0.1, None, False), "shortcut_changed": _metric(shortcut, oracle, ci=(80.0, 95.0)),
            "query_changed": _metric(3.4, oracle, ci=(1.0, 6.0)),
        })  # fmt: skip
    page = build_report(folder).read_text()
    assert 'id="shortcut-track"' in page and "91.2 %" in page and "[80, 95]" in page and "3.4 %" in page
    assert "◇" in page and "computed by a stand-in network" in page  # stand-in networks marked
    assert "†" in page and "n &lt; 2000" in page  # FID at n = 8
    assert 'id="plot-realism"' in page and "FID (realism" in page
    assert "None of these runs kept its images" in page


def test_the_papers_rows_stand_beside_the_runs(tmp_path):
    folder = tmp_path / "celeba_smile"
    _fake_run(folder, "pgd-paper-s0-cccc0000", "celeba", "smile", {"fr": _metric(99.0), "fid": _metric(5.0)})
    page = build_report(folder).read_text()
    reported = re.findall(r'<tr class="reported"', page)
    assert len(reported) >= 4 and "DiME" in page and "ace Table 1" in page
    assert page.index('class="reported"') < page.index('data-run="pgd-paper-s0-cccc0000"')


def test_a_report_of_nothing_is_one_error_line(workdir):
    (workdir / "empty").mkdir()
    result = invoke("report", workdir / "empty")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_the_markdown_marks_stand_ins_and_directions_from_metrics_json(tmp_path):
    runs = tmp_path / "runs" / "toy_bright"
    _fake_run(runs, "pgd-paper-s0-dddd0000", "toy", "bright",
              {"fr": _metric(50.0), "mnac": _metric(1.5, "synthfaces-oracle (stand-in)", False),
               "query_changed": _metric(3.0, "synthfaces-oracle (stand-in)")})  # fmt: skip
    _fake_run(runs, "identity-paper-s0-eeee0000", "toy", "bright",
              {"fr": _metric(0.0), "mnac": _metric(0.0, "o", False)})  # fmt: skip
    build_leaderboards(tmp_path / "runs", tmp_path / "boards", reference_dir=tmp_path / "no-reference")
    md = (tmp_path / "boards" / "toy_bright.md").read_text()
    header = "| source | method | variant | mnac ↓ | fr ↑ | n | protocol | networks |"  # ↓/↑ from metrics.json
    assert md.startswith(f"# toy / bright\n\n{header}\n")
    assert "| reproduced | pgd | paper | 1.5 [0, 1] | 50 [0, 1] | 8 | cfbench-v3 | stand-in |" in md
    assert "| reproduced | identity | paper | 0 [0, 1] | 0 [0, 1] | 8 | cfbench-v3 | official |" in md
    assert "query_changed" not in md  # not one of the papers' metrics: in the CSV only
    assert "query_changed" in (tmp_path / "boards" / "toy_bright.csv").read_text()
