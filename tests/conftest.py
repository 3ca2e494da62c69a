"""Shared helpers: run the CLI in-process (click's CliRunner) or as a subprocess, with
the test plugins loaded through ``CFBENCH_PLUGINS`` and each test in its own cwd."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[1]
PLUGINS = "tests.fixtures.toy,tests.fixtures.plugins"
#: a fast PGD that flips the toy classifier
PGD_SETS = ("--set", "epsilon=0.5", "--set", "step_size=0.05")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty current directory for the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CFBENCH_PLUGINS", raising=False)
    return tmp_path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """`cfbench ARGS` in this process; exceptions other than SystemExit are kept in
    ``result.exception`` (a user error must never end as one)."""
    from cfbench.cli import main  # imported here: test_reference_tables.py does not import cfbench

    return CliRunner().invoke(main, [str(a) for a in args], env={"CFBENCH_PLUGINS": PLUGINS, **(env or {})})


def cfbench_command() -> list[str]:
    """The installed console script, or an equivalent interpreter call."""
    script = Path(sys.executable).parent / "cfbench"
    if script.exists():
        return [str(script)]
    found = shutil.which("cfbench")
    if found:
        return [found]
    return [sys.executable, "-c", "from cfbench.cli import main; main()"]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["CFBENCH_PLUGINS"] = PLUGINS
    env["CUDA_VISIBLE_DEVICES"] = ""  # the same answers on machines with and without a GPU
    env.update(extra)
    return env


def run_subprocess(*args: str, cwd: Path, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
    """`cfbench ARGS` as a separate process, as a user runs it."""
    return subprocess.run(
        [*cfbench_command(), *[str(a) for a in args]],
        cwd=cwd,
        env=subprocess_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def toy_run(*extra: str, n: int = 8, method: str = "identity") -> list[str]:
    """Arguments of a small `cfbench run` on the toy dataset."""
    return ["run", "--method", method, "--dataset", "toy", "--attr", "bright", "--n", str(n), "--no-progress",
            "--device", "cpu", *extra]  # fmt: skip


def only_run_dir(root: Path) -> Path:
    """The single run directory under ``root`` (a runs root)."""
    found = sorted(p.parent for p in root.glob("**/run.json"))
    assert len(found) == 1, found
    return found[0]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (lock files excluded)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def mtimes(run_dir: Path) -> dict[str, int]:
    """Modification times of the per-sample images of a run (grid.png is redrawn each time)."""
    files = sorted(p for folder in ("originals", "counterfactuals", "masks") for p in (run_dir / folder).glob("*.png"))
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in files}


def assert_one_error_line(stderr: str, output: str = "") -> str:
    """Exactly one line on stderr, starting with "error:", and no traceback anywhere."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr and "Traceback" not in output
    return lines[0]


# -- fresh virtual environments ----------------------------------------------------------------
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", ".pytest_cache", ".benchmarks", ".venv", ".whl"
)


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/NAME.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_source(src: Path, dest: Path) -> Path:
    """A clean copy of a source tree: setuptools builds in-tree, and a stale build/ must not
    leak into (or out of) the wheel under test."""
    shutil.copytree(src, dest, ignore=SOURCE_IGNORE)
    return dest


class Venv:
    """A fresh venv made by this interpreter (``/root/venv/bin/python``).

    ``--system-site-packages`` exposes the *base* interpreter's site-packages, not this
    venv's, so a ``.pth`` file adds this interpreter's site-packages after the new venv's own:
    torch and friends (and pip and setuptools, for ``--no-build-isolation``) come from there,
    while cfbench itself is only what gets installed into the new venv.
    """

    def __init__(self, path: Path):
        self.path = path
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(path)],
            check=True,
            timeout=60,
        )
        self.python = path / "bin" / "python"
        self.site = Path(
            subprocess.run(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True, env=self.env(),
            ).stdout.strip()
        )  # fmt: skip
        (self.site / "_cfbench_tests_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CFBENCH_PLUGINS", "PYTHONHOME")}
        env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", CUDA_VISIBLE_DEVICES="", **extra)
        return env

    def run(self, *args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], cwd=cwd, env=self.env(**extra_env), capture_output=True, text=True, timeout=180
        )

    def pip_install(self, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        done = self.run(
            self.python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", *args, cwd=cwd
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done
