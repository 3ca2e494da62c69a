"""The tracked tree travels to a GPU machine with the wheels a run needs (64 MiB at
most), so it stays within 50 MB, weights included; the latent diffusion model LDCE
needs (its autoencoder and UNet) within the 15 MB set aside for it."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE_BUDGET = 50_000_000
LATENT_MODEL_RESERVE = 15_000_000
LATENT_MODEL = ("cfbench/zoo/weights/synthfaces-vae.", "cfbench/zoo/weights/synthfaces-ldm.")


def tracked_sizes() -> dict[str, int]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    return {n.decode(): (ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file()}


def test_the_tracked_tree_fits_its_budget_with_the_latent_model_in_its_share():
    sizes = tracked_sizes()
    latent = sum(size for name, size in sizes.items() if name.startswith(LATENT_MODEL))
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert 0 < latent <= LATENT_MODEL_RESERVE, f"latent model {latent / 1e6:.1f} MB"
    assert sum(sizes.values()) <= TREE_BUDGET, f"tracked tree {sum(sizes.values()) / 1e6:.1f} MB; largest: {largest}"
