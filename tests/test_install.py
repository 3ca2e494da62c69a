"""`methods/`, `metrics/`, `oracles/` and `leaderboards/reference/` are importable as
`cfbench.methods`, `cfbench.metrics`, `cfbench.oracles`, `cfbench.reference` (setup.cfg
``package_dir``), from a regular (wheel) install and from an editable install, in a fresh
venv, run from a directory outside the repository."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.conftest import REPO, Venv, copy_source

CHECK = """
import json
from cfbench.methods import METHODS
import cfbench.metrics.flip_ratio, cfbench.oracles, cfbench.reference
import cfbench, cfbench.methods, cfbench.metrics, cfbench.oracles
from cfbench.leaderboard import packaged_reference
from importlib.metadata import version
print(json.dumps({
    "cfbench": cfbench.__file__,
    "methods": cfbench.methods.__file__,
    "metrics": cfbench.metrics.__file__,
    "oracles": cfbench.oracles.__file__,
    "reference": sorted(p.name for p in packaged_reference().iterdir() if p.suffix in (".csv", ".md")),
    "pgd": METHODS.get("pgd").__module__,
    "fr": cfbench.metrics.flip_ratio.FlipRatio.__module__,
    "version": version("cfbench"),
}))
"""
REFERENCE = ["README.md", "ace.csv", "dime.csv", "gcd.csv", "ldce.csv"]


def check_imports(venv: Venv, cwd: Path) -> dict:
    done = venv.run(venv.python, "-c", CHECK, cwd=cwd)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["reference"] == REFERENCE
    assert found["pgd"] == "cfbench.methods.pgd" and found["fr"] == "cfbench.metrics.flip_ratio"
    import cfbench

    assert found["version"] == cfbench.__version__
    listing = venv.run(venv.path / "bin" / "cfbench", "list", "methods", cwd=cwd)
    assert listing.returncode == 0, listing.stderr
    assert "pgd" in listing.stdout and "identity" in listing.stdout
    return found


def test_regular_install_from_a_wheel(tmp_path):
    source = copy_source(REPO, tmp_path / "src")
    venv = Venv(tmp_path / "venv")
    wheels = tmp_path / "wheels"
    built = venv.run(venv.python, "-m", "pip", "wheel", "--no-index", "--no-deps", "--no-build-isolation", "-w", wheels,
                     source, cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("cfbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("cfbench/methods/__init__.py", "cfbench/methods/pgd.py", "cfbench/metrics/flip_ratio.py",
                 "cfbench/metrics/protocol.py", "cfbench/oracles/__init__.py", "cfbench/reference/ace.csv",
                 "cfbench/reference/README.md", "cfbench/cli.py", "cfbench/report_assets/sort.js",
                 "cfbench/report_assets/errors.js", "cfbench/report_assets/report.css"):  # fmt: skip
        assert name in names, name
    assert not [n for n in names if n.split("/")[0] in ("methods", "metrics", "oracles", "leaderboards", "tests")]

    venv.pip_install(wheel, cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    found = check_imports(venv, outside)
    site = str(venv.site)
    for key in ("cfbench", "methods", "metrics", "oracles"):
        assert found[key].startswith(site), (key, found[key])
    assert found["methods"] == f"{site}/cfbench/methods/__init__.py"


def test_editable_install(tmp_path):
    venv = Venv(tmp_path / "venv")
    venv.pip_install("-e", REPO, cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    found = check_imports(venv, outside)
    assert found["cfbench"] == str(REPO / "cfbench" / "__init__.py")
    assert found["methods"] == str(REPO / "methods" / "__init__.py")
    assert found["metrics"] == str(REPO / "metrics" / "__init__.py")
    assert found["oracles"] == str(REPO / "oracles" / "__init__.py")
