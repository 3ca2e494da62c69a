"""Render throughput of the synthfaces world on one CPU thread.

    PYTHONPATH=. python benchmarks/bench_synthfaces_render.py            # 64 and 128 px
    PYTHONPATH=. python benchmarks/bench_synthfaces_render.py --n 4000 --sizes 128

Prints images/s for
  * scenes:  ``render_scenes(scenes, out=buffer)`` in batches of --batch over
             precomputed scenes, into a reused buffer (the renderer itself);
  * single:  ``render(identity, attributes, nuisance)``, one image per call;
  * batch:   ``split.batch(indices)`` in batches of --batch: index → scene → pixels →
             a fresh (N, 3, H, W) tensor, i.e. what a data loader pays;
and labels/s for ``split.labels`` (no rendering). Both wall-clock and process CPU
time are reported; CPU time does not depend on other load on the machine. The
project's floor is 500 images/s at 128 px.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import PIL
import torch

from cfbench.datasets.synthfaces import SynthFaces
from cfbench.datasets.synthfaces.render import render, render_scenes


def _rate(n: int, fn) -> str:
    w, c = time.perf_counter(), time.process_time()
    fn()
    w, c = time.perf_counter() - w, time.process_time() - c
    return f"{n / w:8.0f} images/s wall {n / c:8.0f} images/s cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"python {platform.python_version()}, numpy {np.__version__}, pillow {PIL.__version__}, "
          f"torch {torch.__version__}, {platform.machine()}; one thread, {args.n} images per line")
    for size in args.sizes:
        split = SynthFaces(image_size=size).split(args.split)
        scenes = split.scenes(range(args.n))
        chunks = [scenes[i : i + args.batch] for i in range(0, args.n, args.batch)]
        buf = np.empty((args.batch, 3, size, size), np.float32)
        render_scenes(chunks[0], size, out=buf[: len(chunks[0])])  # warm-up: lazily built tables

        def run_scenes():
            for ch in chunks:
                render_scenes(ch, size, out=buf[: len(ch)])

        def run_single():
            for sc in scenes:
                render(sc.identity, sc.attributes, sc.nuisance, size)

        def run_batch():
            for start in range(0, args.n, args.batch):
                split.batch(range(start, min(start + args.batch, args.n)))

        print(f"{size:4d} px  render_scenes (batches of {args.batch:3d}) {_rate(args.n, run_scenes)}")
        print(f"{size:4d} px  render (one image per call)  {_rate(args.n, run_single)}")
        print(f"{size:4d} px  split.batch (batches of {args.batch:3d})   {_rate(args.n, run_batch)}")
    split = SynthFaces().split("train")
    n = len(split)
    w = time.perf_counter()
    split.labels()
    print(f"labels   {n / (time.perf_counter() - w):9.0f} labels/s wall   (all {n} labels of the split, no rendering)")


if __name__ == "__main__":
    main()
