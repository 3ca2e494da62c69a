"""A synthfaces-ddpm trained with its recipe, measured on the bars the shipped weights are
held to, beside the shipped weights' own figures.

    CFBENCH_HOME=… cfbench zoo train synthfaces-ddpm --seed 0 --train-size 100000 --eval-size 100 --out DIR
    PYTHONPATH=. python benchmarks/ddpm_recipe.py --weights DIR

With DIR's weights as the backbone (``--set weights_path=``), each a command of its own:
DiME's and ACE's quick null edits on the first ``--n`` test images
(`benchmarks/null_edit.py`); DiME quick on smile with synthfaces-densenet (``--n``
images) and with synthfaces-shortcut-smile (the first ``--n``, then ``--n-shortcut`` in
the same run directory, which resumes). The shipped weights' figures are the published
rows with the same settings (``leaderboards/runs``), the null-edit records and
``dime-shortcut-smile-n512.json``. Bars: the training (render included) within 4 hours;
each null edit keeps ≥ 97% of the classifiers' decisions and of the oracle's, its FID at
most 2× the real-vs-real floor; DiME's smile FR − fr_null ≥ 80 points; on the shortcut
classifier, ≥ 90% of DiME's successes change Rosy_Cheeks (the published row's images).
With ``--shipped-run`` (the shipped weights' run of the shortcut row, its images kept),
the two models' Rosy_Cheeks changes are also compared image by image where both succeed
(McNemar's exact test). Writes ``benchmarks/results/synthfaces-ddpm-recipe.json`` (or ``--record``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import binomtest

from cfbench.classifiers import load_classifier
from cfbench.environment import device_name
from cfbench.metrics import METRICS
from cfbench.metrics.base import EvalData
from cfbench.record import RunRecord
from cfbench.runner import Run
from cfbench.zoo.train import lineage

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PUBLISHED = REPO / "leaderboards" / "runs" / "synthfaces_smile"
NAME = "synthfaces-ddpm"
BUDGET_HOURS = 4.0
KEPT, FID_OVER_FLOOR, FR_OVER_NULL, SHORTCUT_CHANGED = 97.0, 2.0, 80.0, 90.0
FIGURES = ("fr", "fr_null", "shortcut_changed")


def call(command: list[str], shown: str) -> None:
    """Run one measurement; a failure ends the benchmark in one line."""
    print(f"$ {shown}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode:
        sys.exit(f"ddpm_recipe: `{shown}` failed (exit {done.returncode})")


def null_edit(method: str, weights: Path, n: int, device: str, folder: Path) -> dict:
    record = folder / f"null-edit-{method}.json"
    arguments = ["--method", method, "--profile", "quick", "--n", str(n), "--device", device,
                 "--set", f"weights_path={weights}"]
    shown = "PYTHONPATH=. python benchmarks/null_edit.py " + " ".join(arguments).replace(str(weights), "WEIGHTS")
    call([sys.executable, "benchmarks/null_edit.py", *arguments, "--record", str(record)], shown)
    return {**json.loads(record.read_text()), "command": shown}


def dime_row(classifier: str, n: int, weights: Path, device: str, out: Path) -> tuple[dict, dict]:
    """DiME quick on smile with ``classifier`` (run directory ``out``, resumed when it
    exists); returns its metrics and run.json."""
    cfbench = shutil.which("cfbench", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if cfbench is None:
        sys.exit("ddpm_recipe: the cfbench command is not installed (pip install -e .)")
    arguments = ["run", "--method", "dime", "--profile", "quick", "--dataset", "synthfaces", "--attr", "smile",
                 "--n", str(n), "--batch-size", "32", "--device", device, "--classifier", classifier,
                 "--set", f"weights_path={weights}",
                 *(["--metric", "shortcut_changed"] if "shortcut" in classifier else [])]  # fmt: skip
    call([cfbench, *arguments, "--out", str(out)],
         "cfbench " + " ".join(arguments).replace(str(weights), "WEIGHTS"))
    return json.loads((out / "metrics.json").read_text()), json.loads((out / "run.json").read_text())


def figures(metrics: dict) -> dict:
    return {k: {"value": round(metrics[k]["value"], 2), "ci": [round(c, 2) for c in metrics[k]["ci"]],
                "n": metrics[k]["n"]} for k in FIGURES if k in metrics and metrics[k]["value"] is not None}  # fmt: skip


def published_row(info: dict) -> tuple[str, dict]:
    """The published run with the same identity as ``info``'s except the backbone's file."""
    identity = {**info["identity"], "config": {**info["identity"]["config"], "weights_path": ""}}
    for path in sorted(PUBLISHED.glob("*/run.json")):
        if json.loads(path.read_text())["identity"] == identity:
            return str(path.parent.relative_to(REPO)), json.loads((path.parent / "metrics.json").read_text())
    sys.exit(f"ddpm_recipe: no published row has the settings of {info['run_id']}")


def shortcut_changes(run: Path, n: int) -> pd.Series:
    """`shortcut_changed`'s value for each successful counterfactual among the first ``n``
    images of ``run`` (images kept): did the oracle's decision on the classifier's shortcut
    change; by image index."""
    record = RunRecord(run)
    table = record.read_table()
    table = table[table["index"] < n].reset_index(drop=True)
    metric = METRICS.get("shortcut_changed")()
    data = EvalData(table=table, load=lambda rows: Run.load_pairs(record, table, rows), attribute="Smiling",
                    classifier=load_classifier("synthfaces-shortcut-smile", "Smiling"))  # fmt: skip
    rows = data.rows(metric.subset)
    return pd.Series(metric.per_sample(data, rows).astype(bool), index=table["index"].iloc[rows].to_numpy())


def paired(recipe: pd.Series, shipped: pd.Series) -> dict:
    """The two models' shortcut changes on the images where both succeed."""
    both = recipe.index.intersection(shipped.index)
    r, s = recipe[both], shipped[both]
    only_recipe, only_shipped = int((r & ~s).sum()), int((~r & s).sum())
    return {"images": len(both), "both_changed": int((r & s).sum()), "only_recipe_model": only_recipe,
            "only_shipped_weights": only_shipped, "neither": int((~r & ~s).sum()),
            "mcnemar_exact_p": binomtest(only_recipe, only_recipe + only_shipped).pvalue
            if only_recipe + only_shipped else 1.0}  # fmt: skip


def null_bars(record: dict) -> dict:
    f = record["figures"]
    kept = min(f["classifier_kept_smile"]["value"], f["classifier_kept_age"]["value"], f["oracle_pairs_kept"])
    return {"least_kept": round(kept, 2), "kept_met": kept >= KEPT,
            "fid_over_floor": round(f["fid"]["null_vs_originals"] / f["fid"]["floor"], 3),
            "fid_met": f["fid"]["null_vs_originals"] <= FID_OVER_FLOOR * f["fid"]["floor"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help=f"folder with the trained {NAME}.safetensors "
                        "and its card (.json)")  # fmt: skip
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--n-shortcut", type=int, default=512)
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one; "
                        "an existing one resumes them)")  # fmt: skip
    parser.add_argument("--shipped-run", type=Path, default=None, help="the shipped weights' run of the shortcut "
                        "row over --n-shortcut images, its images kept, to pair with")  # fmt: skip
    parser.add_argument("--record", type=Path, default=RESULTS / f"{NAME}-recipe.json")
    args = parser.parse_args()
    weights, card_path = (args.weights / f"{NAME}{ext}" for ext in (".safetensors", ".json"))
    if not weights.is_file() or not card_path.is_file():
        sys.exit(f"ddpm_recipe: {args.weights} holds no {NAME}.safetensors with its card (.json)")
    if args.shipped_run and not (args.shipped_run / "counterfactuals").is_dir():
        sys.exit(f"ddpm_recipe: --shipped-run {args.shipped_run} is not a run directory with its images")
    card = json.loads(card_path.read_text())
    stages = [card["training"], *lineage(card["training"])]  # a warm start's earlier trainings count too
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        trained = weights.resolve()
        nulls = {method: null_edit(method, trained, args.n, args.device, work) for method in ("dime", "ace")}
        smile, smile_info = dime_row("synthfaces-densenet", args.n, trained, args.device, work / "dime-smile")
        shortcut = ("synthfaces-shortcut-smile", trained, args.device, work / "dime-shortcut")
        first, shortcut_info = dime_row(shortcut[0], args.n, *shortcut[1:])
        both, _ = dime_row(shortcut[0], args.n_shortcut, *shortcut[1:])
        pairs = (paired(shortcut_changes(work / "dime-shortcut", args.n_shortcut),
                        shortcut_changes(args.shipped_run, args.n_shortcut)) if args.shipped_run else None)  # fmt: skip
    smile_row, shipped_smile = published_row(smile_info)
    shortcut_row, shipped_first = published_row(shortcut_info)
    shipped_both = json.loads((RESULTS / "dime-shortcut-smile-n512.json").read_text())["n512"]
    hours = sum(t["train_seconds"] + (t.get("render_seconds") or 0) for t in stages) / 3600
    gap = smile["fr"]["value"] - smile["fr_null"]["value"]
    record = {
        "what": f"{NAME} trained with its recipe, measured as the shipped weights are (null edits, DiME quick rows), "
                "beside the shipped weights' figures",
        "command": card["command"],
        "machine": device_name(torch.device(args.device)),
        "stages": [{k: t.get(k) for k in ("steps", "device", "train_seconds", "render_seconds")} for t in stages],
        "steps": sum(t["steps"] for t in stages),
        "storage": card.get("storage"),
        "measured": card["measured"],
        "null_edit": {method: {"command": r["command"], "figures": r["figures"], "bars": null_bars(r)}
                      for method, r in nulls.items()},  # fmt: skip
        "shipped_null_edit": {method: null_bars(json.loads((RESULTS / f"null-edit-{method}-quick.json").read_text()))
                              for method in nulls},  # fmt: skip
        "dime_smile": {"recipe_model": figures(smile), "shipped_weights": {"row": smile_row, **figures(shipped_smile)}},
        "dime_shortcut": {
            f"first_{args.n}": {"recipe_model": figures(first),
                                "shipped_weights": {"row": shortcut_row, **figures(shipped_first)}},
            f"first_{args.n_shortcut}": {"recipe_model": figures(both), "shipped_weights": shipped_both},
            **({"paired": {"shipped_run": str(args.shipped_run), **pairs}} if pairs else {}),
        },
        "bars": {
            "hours": round(hours, 2), "hours_met": hours <= BUDGET_HOURS,
            "null_edit_met": all(b["kept_met"] and b["fid_met"] for b in map(null_bars, nulls.values())),
            "fr_minus_fr_null": round(gap, 2), "fr_minus_fr_null_met": gap >= FR_OVER_NULL,
            "shortcut_changed": round(first["shortcut_changed"]["value"], 2),
            "shortcut_changed_met": first["shortcut_changed"]["value"] >= SHORTCUT_CHANGED,
        },
    }
    text = json.dumps(record, indent=1)
    print(text)
    args.record.write_text(text + "\n")


if __name__ == "__main__":
    main()
