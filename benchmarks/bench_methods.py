"""Counterfactuals per second of the method plugins, through the harness (`cfbench run`
without the metrics), with the network evaluations each counterfactual cost.

    PYTHONPATH=. python benchmarks/bench_methods.py --method dime --profile quick --n 8 --batch-sizes 4 8
    PYTHONPATH=. python benchmarks/bench_methods.py --method dime --device cuda --n 256 --batch-sizes 64 256
    PYTHONPATH=. python benchmarks/bench_methods.py --method dime --profile quick --n 16 --batch-sizes 1 8 16 \
        --record benchmarks/results/dime-quick-synthfaces-cpu.json

Each row generates ``--n`` counterfactuals of the dataset's first test images into a
throw-away run directory. cf/s counts the method's own time (`Method.explain`), which
is what the run table's ``seconds`` column records; the counters are the means of the
run table's (`cfbench.method.COUNTERS`): UNet/decoder evaluations and classifier
queries and gradient calls per counterfactual (a method that fits first, GCD, also gets
its fit's seconds, queries and evaluations in ``fit``); peak memory is the most the row held
above what was held before it (CUDA: allocated tensors; CPU: the process's resident set,
sampled every 20 ms). The first batch of each row includes warm-up.

    PYTHONPATH=. python benchmarks/bench_methods.py --method ace --profile quick --n 8 --batch-sizes 1 8 \
        --record benchmarks/results/ace-quick-synthfaces-cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cfbench.environment import device_name
from cfbench.method import COUNTERS
from cfbench.runner import Run, RunSpec


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: str) -> Iterator[dict[str, float]]:
    """``found["peak_mib"]``: the most memory held during the block above what was held before it."""
    found: dict[str, float] = {}
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield found
        torch.cuda.synchronize()
        found["peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        return
    before, peak, done = resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], resident_bytes())

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        yield found
    finally:
        done.set()
        watcher.join()
        found["peak_mib"] = max(0, max(peak[0], resident_bytes()) - before) / 2**20


def measure(args: argparse.Namespace, batch_size: int, out: Path) -> dict[str, float]:
    spec = RunSpec(method=args.method, dataset=args.dataset, attr=args.attr, n=args.n, batch_size=batch_size,
                   device=args.device, profile=args.profile, overrides=dict(o.split("=", 1) for o in args.set),
                   out=out, progress=False)  # fmt: skip
    run = Run(spec)
    with peak_memory(args.device) as memory:
        run.execute(evaluate=False)
    table = run.record.read_table()
    seconds = float(table["seconds"].sum())
    fit = (run.record.read_info() or {}).get("fit")  # a method that learns first (GCD): its one-off cost
    return {
        "cf_per_s": len(table) / seconds,
        "flip_rate": float(table["success"].mean() * 100),
        **{name: float(table[name].mean()) for name in COUNTERS},
        "peak_mib": memory["peak_mib"],
        **({"fit": fit} if fit else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dime")
    parser.add_argument("--dataset", default="synthfaces")
    parser.add_argument("--attr", default="smile")
    parser.add_argument("--profile", default=None, help="the method's profile (default: its default)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, as `cfbench run`")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--record", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    where = device_name(torch.device(args.device))
    print(f"# {args.method} ({args.profile or 'default profile'}) on {args.dataset}/{args.attr}, n={args.n}, {where}")
    print(f"{'batch':>5} {'cf/s':>8} {'FR %':>6} " + " ".join(f"{name:>20}" for name in COUNTERS) + f" {'peak MiB':>9}")
    rows = []
    for batch_size in args.batch_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(args, batch_size, Path(tmp) / "run")
        rows.append({"batch_size": batch_size, **row})
        print(f"{batch_size:>5} {row['cf_per_s']:>8.3f} {row['flip_rate']:>6.1f} "
              + " ".join(f"{row[name]:>20.1f}" for name in COUNTERS) + f" {row['peak_mib']:>9.0f}")  # fmt: skip
    if args.record:
        settings = {k: v for k, v in vars(args).items() if k != "record"}
        text = json.dumps({"settings": settings, "device": where, "torch": torch.__version__, "rows": rows}, indent=2)
        args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
