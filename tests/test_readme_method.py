"""The method of the README's "Adding a method" section, taken from the README as it is
and run through `cfbench run` on the toy world and the tiny DDPM."""
from __future__ import annotations

import re
import sys
import types

import pandas as pd
import pytest

import tests.fixtures.tiny_backbone  # noqa: F401  (registers tiny-ddpm)
from cfbench.methods import METHODS
from tests.conftest import REPO, invoke
from tests.fixtures.tiny_backbone import save_tiny_ddpm


def readme_method_source() -> str:
    section = REPO.joinpath("README.md").read_text().split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


@pytest.fixture(scope="module")
def readme_method():
    if "guided-sdedit" not in METHODS:
        module = types.ModuleType("readme_method")
        sys.modules["readme_method"] = module
        exec(compile(readme_method_source(), "README.md", "exec"), module.__dict__)
    return METHODS.get("guided-sdedit")


def test_the_readme_method_is_short():
    assert len(readme_method_source().strip().splitlines()) < 60


def test_the_readme_method_runs_on_the_toolkit(readme_method, workdir, tmp_path):
    weights = save_tiny_ddpm(tmp_path / "tiny.pt")
    result = invoke("run", "--method", "guided-sdedit", "--dataset", "toy", "--attr", "bright", "--n", "4",
                    "--batch-size", "3", "--no-progress", "--out", "run", "--set", "backbone=tiny-ddpm",
                    "--set", f"weights_path={weights}", "--set", "respacing=20", "--set", "tau=3")  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    table = pd.read_csv(workdir / "run" / "samples.csv")
    assert len(table) == 4
    assert (table["diffusion_evals"] == 3).all() and (table["classifier_gradients"] == 3).all()
    assert (table["classifier_queries"] == 4).all()  # 3 guided steps + the method's own success check
