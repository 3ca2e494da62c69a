"""Bad input: every user error ends in exactly one line on stderr starting with "error:",
a non-zero exit code, no traceback, and nothing already written is lost.

Each case runs in-process (click's CliRunner); a selection also runs as a real
subprocess of the `cfbench` console script (those run concurrently, to stay fast).
"""
from __future__ import annotations

import fcntl
import importlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch

from tests.conftest import assert_one_error_line, cfbench_command, invoke, snapshot, subprocess_env

RUN = ["run", "--dataset", "toy", "--attr", "bright", "--n", "8", "--no-progress"]


@dataclass
class Case:
    id: str
    args: list[str]
    message: str  # expected in the error line
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path], None] | None = None  # what must hold after the error
    env: dict[str, str] = field(default_factory=dict)
    subprocess: bool = False


def _file(workdir: Path) -> None:
    (workdir / "afile").write_text("a regular file\n")


def _nan_kept_first_batch(workdir: Path) -> None:
    table = pd.read_csv(workdir / "nanrun" / "samples.csv")
    assert table["index"].tolist() == [0, 1, 2, 3]
    assert len(list((workdir / "nanrun" / "counterfactuals").glob("*.png"))) == 4
    assert not (workdir / "nanrun" / "metrics.json").exists()


def _nothing_generated(folder: str) -> Callable[[Path], None]:
    """An unknown metric is refused before any image is generated."""

    def check(workdir: Path) -> None:
        assert not (workdir / folder).exists()

    return check


def _run_finished(workdir: Path) -> None:
    assert len(list((workdir / "runs").glob("toy_bright/*/metrics.json"))) == 1


def _junk_run_json(workdir: Path) -> None:
    (workdir / "junk").mkdir()
    (workdir / "junk" / "run.json").write_text("not json\n")


CASES = [
    Case("unknown-method", [*RUN, "--method", "pdg"], "Unknown method 'pdg'. Did you mean: pgd", subprocess=True),
    Case("planned-method", [*RUN, "--method", "future"],
         "method 'future' is not available yet: Future (Someone et al., 2030) is planned, not implemented yet; "
         "registered methods: ", subprocess=True),
    Case("unknown-dataset", [*RUN, "--method", "pgd", "--dataset", "toyy"], "Unknown dataset 'toyy'. Did you mean: toy?"),
    Case("unknown-attribute", [*RUN, "--method", "pgd", "--attr", "brigth"],
         "Unknown attribute 'brigth' for dataset 'toy'. Did you mean: bright"),
    Case("unknown-protocol", [*RUN, "--method", "pgd", "--protocol", "cfbench-v9"], "Unknown protocol 'cfbench-v9'"),
    Case("unknown-metric", [*RUN, "--method", "identity", "--protocol", "tests-bad", "--out", "badmetric"],
         "Unknown metric 'no_such_metric'", check=_nothing_generated("badmetric")),
    Case("unknown-extra-metric", [*RUN, "--method", "identity", "--metric", "l3", "--out", "badextra"],
         "Unknown metric 'l3'. Did you mean: s3, l2, l1?", check=_nothing_generated("badextra")),
    Case("unknown-profile", [*RUN, "--method", "pgd", "--profile", "fast"], "--profile fast: unknown"),
    Case("n-too-large", [*RUN, "--method", "identity", "--n", "65"],
         "--n 65 is larger than the test split of toy (64 images); use --n 64 or less."),
    Case("n-zero", [*RUN, "--method", "identity", "--n", "0"], "--n and --batch-size must be positive."),
    Case("set-unknown-key", [*RUN, "--method", "pgd", "--set", "stepz=3"], "--set stepz: PGDConfig has no such key"),
    Case("set-wrong-type", [*RUN, "--method", "pgd", "--set", "steps=many"], "--set steps=many: expected a int",
         subprocess=True),
    Case("set-wrong-bool", [*RUN, "--method", "pgd", "--set", "random_start=perhaps"], "expected a bool"),
    Case("set-wrong-list", [*RUN, "--method", "typed", "--set", "sizes=1,two"], "--set sizes=1,two: expected a list"),
    Case("set-without-equals", [*RUN, "--method", "pgd", "--set", "steps"], "--set steps: write it as key=value."),
    Case("out-under-a-file", [*RUN, "--method", "identity", "--out", "afile/run"],
         "cannot write the run directory afile/run", setup=_file, subprocess=True),
    Case("out-is-a-file", [*RUN, "--method", "identity", "--out", "afile"], "cannot write the run directory afile",
         setup=_file),
    Case("out-not-a-run", [*RUN, "--method", "identity", "--out", "junk"], "junk/run.json is not a cfbench run record",
         setup=_junk_run_json),
    Case("different-config", [*RUN, "--method", "identity", "--out", "existing", "--seed", "1"],
         "existing holds a run with a different seed", subprocess=True),
    Case("different-method", [*RUN, "--method", "typed", "--out", "existing"],
         "existing holds a run with a different config, method"),
    Case("cuda-without-cuda", [*RUN, "--method", "identity", "--device", "cuda"], "--device cuda: no CUDA device",
         subprocess=True),
    Case("unknown-device", [*RUN, "--method", "identity", "--device", "tpu"], "--device tpu: use auto, cpu or cuda."),
    Case("nan-method", [*RUN, "--method", "nan", "--batch-size", "4", "--out", "nanrun"],
         "the method produced NaN/inf for test-0007; earlier samples are saved", check=_nan_kept_first_batch,
         subprocess=True),
    Case("leaderboards-unwritable", [*RUN, "--method", "identity", "--leaderboards", "afile/boards"],
         "cannot write leaderboards to afile/boards", setup=_file, check=_run_finished),
    Case("leaderboard-out-unwritable", ["leaderboard", "--out", "afile/boards"], "cannot write leaderboards to",
         setup=_file),
    Case("plugin-not-importable", ["list"], "CFBENCH_PLUGINS: cannot import 'no_such_plugin_module'",
         env={"CFBENCH_PLUGINS": "tests.fixtures.toy,no_such_plugin_module"}),
    Case("zoo-unknown-model", ["zoo", "train", "synthfaces-nope"], "Unknown zoo model 'synthfaces-nope'"),
    Case("zoo-resume-without-state", ["zoo", "train", "synthfaces-ddpm", "--resume", "--out", "zoo"],
         "no training state of 'synthfaces-ddpm' to resume", env={"CFBENCH_HOME": "no-home"}),
    Case("zoo-measure-untrained", ["zoo", "measure", "synthfaces-ddpm", "--out", "zoo"],
         "zoo model 'synthfaces-ddpm' has no record"),
]  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A working directory that already holds a finished run (`existing`) and leaderboards."""
    root = tmp_path_factory.mktemp("template")
    result = invoke(*RUN, "--method", "identity", "--out", str(root / "existing"), "--leaderboards", str(root / "lb"))
    assert result.exit_code == 0, result.output
    return root


def prepare(case: Case, template: Path, workdir: Path) -> dict[str, str]:
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    if case.setup:
        case.setup(workdir)
    return snapshot(workdir)


def verify(case: Case, workdir: Path, before: dict[str, str], returncode: int, stderr: str, stdout: str) -> None:
    assert returncode != 0, (case.id, stdout, stderr)
    line = assert_one_error_line(stderr, stdout)
    assert case.message in line, (case.id, line)
    after = snapshot(workdir)
    assert {k: after.get(k) for k in before} == before, case.id  # nothing already written is lost or changed
    if case.check:
        case.check(workdir)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(case, template, workdir, no_cuda):
    before = prepare(case, template, workdir)
    result = invoke(*case.args, env=case.env or None)
    assert isinstance(result.exception, SystemExit), (case.id, result.exception)
    verify(case, workdir, before, result.exit_code, result.stderr, result.stdout)


SUBPROCESS_CASES = [c for c in CASES if c.subprocess]


@pytest.fixture(scope="module")
def subprocess_results(template, tmp_path_factory):
    """Start every subprocess case at once, then collect them."""
    started = {}
    for case in SUBPROCESS_CASES:
        workdir = tmp_path_factory.mktemp(case.id)
        before = prepare(case, template, workdir)
        process = subprocess.Popen(
            [*cfbench_command(), *case.args],
            cwd=workdir,
            env=subprocess_env(**case.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[case.id] = (workdir, before, process)
    results = {}
    for case_id, (workdir, before, process) in started.items():
        stdout, stderr = process.communicate(timeout=180)
        results[case_id] = (workdir, before, process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_bad_input_as_a_subprocess(case, subprocess_results):
    workdir, before, returncode, stdout, stderr = subprocess_results[case.id]
    assert returncode == 2, (case.id, stderr)
    verify(case, workdir, before, returncode, stderr, stdout)


def test_a_run_directory_in_use_is_refused(template, workdir):
    """A second process on the same run directory is refused while the first holds it."""
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    before = snapshot(workdir)
    with open(workdir / "existing" / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke(*RUN, "--method", "identity", "--out", "existing")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    line = assert_one_error_line(result.stderr, result.stdout)
    assert "is in use by another cfbench process" in line
    assert snapshot(workdir) == before


def test_interrupt_is_one_line_and_exit_130(workdir):
    """Ctrl-C (in-process here; a real subprocess in test_run.py) keeps what is done."""
    result = invoke(*RUN, "--method", "crashy", "--batch-size", "4", "--out", "r", env={"CFBENCH_TEST_CRASH": "interrupt:1"})
    assert result.exit_code == 130 and isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "Traceback" not in result.output
    assert len(pd.read_csv(workdir / "r" / "samples.csv")) == 4


# -- planned methods ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, paper", [("future", "Future")])
def test_a_planned_method_says_so_without_did_you_mean(name, paper, workdir):
    result = invoke(*RUN, "--method", name)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    line = assert_one_error_line(result.stderr, result.stdout)
    assert line.startswith(f"error: method {name!r} is not available yet: {paper} (") and "is planned" in line
    assert "Did you mean" not in line and line.endswith(".")
    registered = line.split("registered methods: ")[1].rstrip(".").split(", ")
    assert {"dime", "identity", "pgd"} <= set(registered) and name not in registered
    assert not list(workdir.iterdir())  # refused before anything is written


def test_list_shows_planned_methods_apart(workdir):
    result = invoke("list", "methods")
    assert result.exit_code == 0, result.output
    runnable = [line.split()[0] for line in result.stdout.splitlines()[1:] if not line.strip().startswith("planned")]
    assert {"ace", "dime", "gcd", "identity", "ldce", "pgd"} <= set(runnable) and "future" not in runnable
    assert "  planned (not runnable yet): future" in result.stdout.splitlines()


def test_a_registered_plugin_replaces_a_plan(tmp_path, monkeypatch):
    """A decorator or an entry point registering a planned name wins over the plan."""
    from cfbench.registry import Registry

    reg = Registry("method")
    reg.plan("gcd", "GCD is planned.")
    reg.plan("ace", "ACE is planned")
    assert reg.planned() == {"ace": "ACE is planned", "gcd": "GCD is planned"} and reg.names() == []

    @reg.register("gcd", description="a plugin's GCD")
    class GCD:
        pass

    assert reg.get("gcd") is GCD and reg.names() == ["gcd"] and list(reg.planned()) == ["ace"]
    dist = tmp_path / "gcd_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gcd-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cfbench.methods]\nace = gcd_plugin_mod:ACE\n")
    (tmp_path / "gcd_plugin_mod.py").write_text('class ACE:\n    """A plugin\'s ACE"""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg = Registry("method", "cfbench.methods")
    reg.plan("ace", "ACE is planned")
    assert "ace" in reg.names() and reg.planned() == {}
    assert reg.get("ace").__name__ == "ACE" and reg.describe("ace")["description"] == "A plugin's ACE"


def test_a_plugin_module_registering_a_planned_method_runs_it(tmp_path):
    """Through CFBENCH_PLUGINS (a real process: the registration must not leak into other tests)."""
    (tmp_path / "my_future.py").write_text(
        "from cfbench.methods import METHODS\nfrom cfbench.methods.identity import Identity\n\n\n"
        "@METHODS.register('future')\nclass MyFuture(Identity):\n    \"\"\"My Future\"\"\"\n"
    )
    env = subprocess_env(CFBENCH_PLUGINS="tests.fixtures.toy,my_future")
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    listed = subprocess.run([*cfbench_command(), "list", "methods"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.split()[0] == "future" and "My Future" in line for line in lines[1:])
    assert not any("planned (not runnable yet)" in line for line in lines)
    done = subprocess.run([*cfbench_command(), *RUN, "--method", "future", "--n", "2", "--device", "cpu"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "runs" / "toy_bright").glob("future-paper-s0-*/metrics.json"))
