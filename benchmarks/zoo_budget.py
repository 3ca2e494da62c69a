"""How long each zoo recipe takes to train from scratch on this machine: the recipe's
default steps × the seconds a step of its real training loop takes here (`fit` with the
recipe's objective, batch, precision and EMA, timed after a warm-up), plus preparing
its training images (rendering them, and for a latent model encoding their latents),
timed on a subset and scaled to the recipe's training-set size. Measuring the trained
model (``cfbench zoo train``'s card) is not included.

    PYTHONPATH=. python benchmarks/zoo_budget.py                          # every zoo model
    PYTHONPATH=. python benchmarks/zoo_budget.py --models synthfaces-ddpm --seconds 60

Writes ``benchmarks/results/zoo-budget-<processor>-<threads>t.json`` (one file per
processor model and thread count); ``tests/test_zoo_budget.py`` holds every recipe to
the 4-hour budget on every machine recorded.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cfbench.environment import cpu_name, device_name
from cfbench.files import atomic_write_text
from cfbench.zoo import ZOO
from cfbench.zoo.data import render_set
from cfbench.zoo.train import TrainingState, first_stage, fit, lineage, recipe_loss
from cfbench.zoo.weights import WEIGHTS_DIR

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_HOURS = 4.0


def results_path(cpu: str, threads: int) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    return RESULTS / f"zoo-budget-{slug}-{threads}t.json"


def step_seconds(name: str, data, device: torch.device, seconds: float, warmup: int) -> tuple[float, int]:
    """Seconds per training step of ``name``'s recipe, over at least ``seconds`` of steps
    (and at least 5) after twice ``warmup`` steps (the second to size the timed run);
    returns (seconds a step, steps timed)."""
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.build().to(device).to(memory_format=torch.channels_last)
    loss = recipe_loss(entry, device)
    with tempfile.TemporaryDirectory() as tmp:
        state = TrainingState(Path(tmp) / "state.pt", entry, warmup, len(data.images), 0)
        fit(model, loss, data, entry, warmup, device, state)  # first steps (and a latent model's encoding)
        began = time.perf_counter()
        fit(model, loss, data, entry, warmup, device, state)
        estimate = (time.perf_counter() - began) / warmup
        steps = max(5, int(seconds / estimate))
        state = TrainingState(Path(tmp) / "state.pt", entry, steps, len(data.images), 0)
        began = time.perf_counter()
        fit(model, loss, data, entry, steps, device, state)
        return (time.perf_counter() - began) / steps, steps


def render_cost(image_size: int, n: int):
    """Render ``n`` and ``n / 4`` training images; returns the ``n`` images, the fixed
    cost of a render (starting its worker processes) and the seconds per image."""
    seconds = []
    for count in (n // 4, n):
        began = time.perf_counter()
        data = render_set(image_size, "train", np.arange(count))
        seconds.append(time.perf_counter() - began)
    per_image = (seconds[1] - seconds[0]) / (n - n // 4)
    return data, max(0.0, seconds[0] - per_image * (n // 4)), per_image


def latent_seconds_per_image(name: str, data, device: torch.device) -> float:
    """A latent model's one-off cost per training image: encoding its latent."""
    stage = first_stage(ZOO[name], WEIGHTS_DIR, device)
    began = time.perf_counter()
    with torch.no_grad():
        for rows in torch.arange(len(data.images)).split(256):
            stage.encode(data.floats(rows) * 2 - 1)
    return (time.perf_counter() - began) / len(data.images)


def card_training(name: str) -> dict:
    """The shipped weights' training, each stage of its lineage (steps, seconds, device)."""
    training = ZOO[name].card()["training"]
    stages = [{k: stage.get(k) for k in ("steps", "train_seconds", "device")}
              for stage in [training, *lineage(training)]]
    return {"stages": stages, "train_seconds": round(sum(s["train_seconds"] or 0 for s in stages), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--seconds", type=float, default=30.0, help="time each recipe's steps for about this long")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--render", type=int, default=8192, help="training images rendered to time rendering")
    args = parser.parse_args()
    device = torch.device("cpu")
    threads = torch.get_num_threads()
    out = results_path(cpu_name(), threads)
    found = json.loads(out.read_text()) if out.exists() else {}
    found.update({"machine": device_name(device), "torch": torch.__version__, "budget_hours": BUDGET_HOURS})
    command = " ".join(["PYTHONPATH=. python benchmarks/zoo_budget.py", *sys.argv[1:]])
    rows = found.setdefault("models", {})
    sets = {}
    for name in args.models:
        entry = ZOO[name]
        if entry.image_size not in sets:
            sets[entry.image_size] = render_cost(entry.image_size, args.render)
        data, render_fixed, render_per_image = sets[entry.image_size]
        prepare_per_image = render_per_image + (latent_seconds_per_image(name, data, device) if entry.kind == "ldm" else 0)
        prepare = render_fixed + entry.train_size * prepare_per_image
        per_step, timed = step_seconds(name, data, device, args.seconds, args.warmup)
        total = entry.steps * per_step + prepare
        rows[name] = {
            "kind": entry.kind, "steps": entry.steps, "batch_size": entry.batch_size, "train_size": entry.train_size,
            "steps_timed": timed, "seconds_per_step": round(per_step, 4),
            "prepare_seconds": round(prepare, 1),
            "projected_hours": round(total / 3600, 3), "shipped_weights": card_training(name), "command": command,
        }  # fmt: skip
        print(f"{name:<28} {per_step:7.3f} s/step × {entry.steps:>6} + {rows[name]['prepare_seconds']:7.1f} s "
              f"→ {total / 3600:5.2f} h", flush=True)  # fmt: skip
        atomic_write_text(out, json.dumps(found, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
