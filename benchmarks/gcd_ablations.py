"""GCD's ablations over finished runs, on the first ``--n`` images each
run explained (runs of the same split explain the same images in the same order):

- ``sources``: the source image (GCD §4.3, Table 3): FR of each source's direction and
  the mean ± std over sources;
- ``renders``: the fit's renders (GCD supp. F.1): FR against the number of renders, with
  the fit's cost, as a table and a plot;
- ``directions``: FR per direction (GCD Fig. 3) of runs that transfer several directions
  (``h``, ``h2+``), from each direction's own success (``success_<name>``, decided by the
  method on the float render), beside the run's per-image choice (Table 4).

    PYTHONPATH=. python benchmarks/gcd_ablations.py sources RUN [RUN …] --n 32 \\
        --record benchmarks/results/gcd-sources-smile.json
    PYTHONPATH=. python benchmarks/gcd_ablations.py renders RUN [RUN …] --n 32 \\
        --record benchmarks/results/gcd-renders-smile.json --plot benchmarks/results/gcd-renders-smile.png
    PYTHONPATH=. python benchmarks/gcd_ablations.py directions RUN [RUN …] --n 16 \\
        --record benchmarks/results/gcd-directions-smile.json

FRs are percentages with 95% bootstrap CIs over the images; in ``sources`` and ``renders``
each run's direction is also compared with the first run's (``cosine_to_first``; a
direction's sign is its own: a source of the other class walks the other way).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cfbench.methods.gcd import Directions
from cfbench.record import png_bytes
from cfbench.stats import bootstrap_ci
from cfbench.visualize import line_plot


def _rate(values: pd.Series) -> dict:
    x = values.astype(bool).to_numpy(dtype=float) * 100
    return {"value": float(x.mean()), "ci": [float(v) for v in bootstrap_ci(x)]}


def _direction(fitted: Directions, name: str) -> torch.Tensor:
    return fitted.vectors[fitted.chosen][fitted.pick(name)[0]]


def _first(run: Path, n: int) -> pd.DataFrame:
    table = pd.read_csv(run / "samples.csv").sort_values("index")
    table = table[table["index"] < n]
    if len(table) < n:
        raise SystemExit(f"{run}: {len(table)} of the first {n} images are done")
    return table


def run_row(run: Path, n: int, fitted: Directions) -> dict:
    """FR and fr_null of a gcd run on its first ``n`` images, with its setting, its fit's
    source class and cost."""
    info = json.loads((run / "run.json").read_text())
    if info["identity"]["method"] != "gcd":
        raise SystemExit(f"{run}: not a gcd run")
    table = _first(run, n)
    config = info["identity"]["config"]
    return {"run": info["run_id"], "source": config["source"], "source_pred": fitted.info["source_pred"],
            "renders": config["renders"] * config["fits"], "direction": config["direction"], "n": n,
            "fr": _rate(table["success"]), "fr_null": _rate(table["null_success"]), "fit": info.get("fit")}  # fmt: skip


def direction_rows(run: Path, n: int) -> list[dict]:
    """FR of each direction a run chose among, on its first ``n`` images."""
    table = _first(run, n)
    return [{"direction": column.removeprefix("success_"), "n": n, "fr": _rate(table[column])}
            for column in table.columns if column.startswith("success_")]  # fmt: skip


def sources(rows: list[dict]) -> dict:
    fr = np.array([row["fr"]["value"] for row in rows])
    return {"rows": rows, "fr_mean": float(fr.mean()), "fr_std": float(fr.std(ddof=1)) if len(fr) > 1 else 0.0}


def renders_plot(rows: list[dict]) -> bytes:
    """FR (black) and its CI (grey) against log2(renders)."""
    rows = sorted(rows, key=lambda row: row["renders"])
    xs = [math.log2(row["renders"]) for row in rows]
    bounds = [[row["fr"]["ci"][i] / 100 for row in rows] for i in (0, 1)]
    return png_bytes(line_plot(xs, bounds, bold=[row["fr"]["value"] / 100 for row in rows], level=0.8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablation", choices=("sources", "renders", "directions"))
    parser.add_argument("runs", type=Path, nargs="+", help="finished gcd run directories")
    parser.add_argument("--n", type=int, required=True, help="the first n images of every run")
    parser.add_argument("--record", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="renders: write the plot (PNG) here")
    args = parser.parse_args()
    fits = [Directions.load(run / "method" / "directions.pt") for run in args.runs]
    rows = [run_row(run, args.n, fitted) for run, fitted in zip(args.runs, fits)]
    if args.ablation != "directions":  # how far each fit's direction is from the first run's
        first = _direction(fits[0], rows[0]["direction"])
        for fitted, row in zip(fits, rows):
            row["cosine_to_first"] = float(_direction(fitted, row["direction"]) @ first)
    for row in rows:
        fr, null = row["fr"], row["fr_null"]
        print(f"{row['run']}: source {row['source']:>4} renders {row['renders']:>6} FR {fr['value']:5.1f}% "
              f"[{fr['ci'][0]:.1f}, {fr['ci'][1]:.1f}] null {null['value']:4.1f}% "
              f"cos {row.get('cosine_to_first', float('nan')):+.2f}")  # fmt: skip
    if args.ablation == "sources":
        result = sources(rows)
        print(f"FR over {len(rows)} sources: {result['fr_mean']:.1f} ± {result['fr_std']:.1f}%")
    elif args.ablation == "directions":
        for run, row in zip(args.runs, rows):
            row["per_direction"] = direction_rows(run, args.n)
            for each in row["per_direction"]:
                fr = each["fr"]
                print(f"  {row['direction']} → {each['direction']}: FR {fr['value']:5.1f}% [{fr['ci'][0]:.1f}, "
                      f"{fr['ci'][1]:.1f}]")  # fmt: skip
        result = {"rows": rows}
    else:
        result = {"rows": sorted(rows, key=lambda row: row["renders"])}
        if args.plot:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            args.plot.write_bytes(renders_plot(rows))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps({"ablation": args.ablation, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
