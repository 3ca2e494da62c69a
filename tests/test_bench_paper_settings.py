"""The prepared GPU timing script of ACE and LDCE at the papers' settings runs (``--tiny``,
on the CPU) and records one row per batch size with the evaluations each counterfactual
cost, the paper's counts at the tiny settings."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("method", "evals", "backward"), [("ace", 6.0, 4.0), ("ldce", 10.0, 10.0)])
def test_bench_paper_settings_runs_tiny(method, evals, backward, tmp_path):
    """ACE tiny: τ = 2, 2 attack iterations (2·2 forward and backward) + 2 refinement steps;
    LDCE tiny: 10 DDIM steps × strength 0.502 = 5 guided steps of 2 UNet evaluations and 2
    backward passes."""
    record = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "benchmarks/bench_paper_settings.py", "--method", method, "--tiny",
                           "--batch-sizes", "1", "2", "--device", "cpu", "--record", str(record)],
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(record.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["unet_evals_per_cf"] == evals and r["unet_backward_per_cf"] == backward and r["seconds_per_cf"] > 0
               for r in rows)
