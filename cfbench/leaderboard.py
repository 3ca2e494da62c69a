"""Leaderboards: a pure function of the run records and the papers' tables.

Run records are read from one or more folders, the first one first: `cfbench run`
refreshes ``<runs>/leaderboards/`` from the local runs and the published records
(``leaderboards/runs/``, metadata, tables and grids only); `cfbench leaderboard`
regenerates the published boards (``leaderboards/``) from the published records. A run
found twice with the same run id and n is one row, the first folder's; with another n it
is a row of its own (a local n = 16 run never hides a published n = 100 row). For every
(dataset, attr) it writes ``<dataset>_<attr>.csv`` and a markdown twin: the published
rows (``source=reported``, with paper and table) beside the rows of finished runs
(``source=reproduced``, with run id, n, seed, protocol and the run's ``flags``). Metric
columns follow the papers' order; a metric a row lacks, or whose value is ``null``, is
an empty cell.
"""
from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

import pandas as pd

from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_text, exclusive_lock

METRIC_ORDER = (
    "fid", "sfid", "kid", "fva", "fs", "mnac", "cd", "cd_spec", "cout", "s3", "fr", "fr_null",
    "l1", "l2", "sigma_l", "sigma_l_agree", "precision", "recall", "fid_plus", "l1_plus",
)  # fmt: skip
ROW_KEYS = ("source", "paper", "table", "dataset", "attr", "method", "variant")
PROVENANCE = ("run_id", "n", "seed", "protocol", "classifier", "networks", "flags", "note")
FLAG = "⚑"
#: FID-family values of runs with fewer samples carry SMALL_N_MARK: their small-sample bias
#: dominates (PROTOCOL.md, "Realism at small n")
SMALL_N, SMALL_N_METRICS, SMALL_N_MARK = 2000, ("fid", "sfid", "fid_plus"), "†"
SMALL_N_LEGEND = (f"{SMALL_N_MARK} n < {SMALL_N}: FID, sFID and FID⁺ are dominated by their small-sample bias "
                  "(PROTOCOL.md, Realism at small n); compare them only at equal n, or read KID.")
#: whether a higher value is better, per metric of the papers' tables: the ↑/↓ of the
#: markdown's header where no run's metrics.json says (reported rows carry none)
DIRECTIONS = {
    "fid": False, "sfid": False, "kid": False, "fva": True, "fs": True, "mnac": False, "cd": False, "cd_spec": False,
    "cout": True, "s3": True, "fr": True, "fr_null": False, "l1": False, "l2": False, "sigma_l": True,
    "sigma_l_agree": True, "precision": True, "recall": True, "fid_plus": False, "l1_plus": False, "vq_l2": False,
    "avg_rank": False, "query_changed": True, "shortcut_changed": True,
}  # fmt: skip
#: how a metric's network is named when it is one of the zoo's stand-ins for a paper's network
STAND_IN = "(stand-in)"


def packaged_reference() -> Path:
    """The papers' tables shipped with the package (``leaderboards/reference``)."""
    return Path(str(files("cfbench.reference")))


def reported_rows(reference_dir: Path) -> pd.DataFrame:
    frames = [pd.read_csv(path, dtype=str, keep_default_na=False) for path in sorted(Path(reference_dir).glob("*.csv"))]
    if not frames:
        return pd.DataFrame(columns=ROW_KEYS)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "source", "reported")
    for column in table.columns:
        if column in METRIC_ORDER or column not in (*ROW_KEYS, *PROVENANCE):
            table[column] = pd.to_numeric(table[column].replace("", None))
    return table


def _variant(info: dict) -> str:
    """The run's profile, followed by the settings its method names in ``row_settings``
    (DiME's Table 2 ablation): ``quick/naive``; a run asked to flip the label rather than
    the prediction (`cfbench run --target label`) ends in ``/target=label``, one on another
    split than the dataset's evaluation split (`--split val`) in ``/split=val``."""
    config = info["identity"].get("config", {})
    settings = [str(config[key]) for key in info.get("row_settings", ()) if key in config]
    marks = [f"{key}={info['identity'][key]}" for key in ("target", "split") if key in info["identity"]]
    return "/".join([info["identity"]["profile"], *settings, *marks])


def _flags(flags: object) -> str:
    """run.json's ``flags`` (a list of sentences) as one cell, ``; ``-joined."""
    if isinstance(flags, str):
        flags = [flags]
    return "; ".join(str(f).strip() for f in flags or () if str(f).strip())


def reproduced_rows(runs_root: Path, directions: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per finished run under ``runs_root`` (a run.json beside a metrics.json);
    ``directions``, when given, receives each metric's ``higher_is_better``."""
    rows = []
    for info_path in sorted(Path(runs_root).glob("**/run.json")):
        metrics_path = info_path.with_name("metrics.json")
        if not metrics_path.exists():
            continue
        info = json.loads(info_path.read_text())
        identity = info["identity"]
        row = {
            "source": "reproduced",
            "paper": "",
            "dataset": identity["dataset"],
            "attr": info["attr"],
            "method": identity["method"],
            "variant": _variant(info),
            "run_id": info["run_id"],
            "n": info.get("n"),
            "seed": identity["seed"],
            "protocol": info.get("protocol", ""),
            "classifier": identity["classifier"],
            "flags": _flags(info.get("flags")),
        }
        networks = []
        for name, result in json.loads(metrics_path.read_text()).items():
            row[name] = result["value"]  # null (not defined for this run): an empty cell
            if result.get("ci"):
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = result["ci"]
            if result.get("network"):
                networks.append(f"{name}={result['network']}")
            if directions is not None and result.get("higher_is_better") is not None:
                directions[name] = bool(result["higher_is_better"])
        row["networks"] = ";".join(networks)
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in table.columns:
        if column not in (*ROW_KEYS, *PROVENANCE):  # numbers, a null value NaN (never 0)
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    return table


def _columns(table: pd.DataFrame) -> list[str]:
    present = set(table.columns)
    metrics = [m for m in METRIC_ORDER if m in present]
    extra = sorted(c for c in present if c not in (*ROW_KEYS, *PROVENANCE, *METRIC_ORDER) and "_ci_" not in c)
    metrics += extra
    cis = [f"{m}_ci_{side}" for m in metrics for side in ("low", "high") if f"{m}_ci_{side}" in present]
    return [*ROW_KEYS, *metrics, *cis, *[c for c in PROVENANCE if c in present]]


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _networks_marker(row: pd.Series) -> str:
    """``stand-in`` when a metric of a reproduced row was computed by a stand-in network,
    ``official`` when by the papers' networks only, empty otherwise (reported rows)."""
    networks = _cell(row.get("networks"))
    if not networks:
        return ""
    return "stand-in" if STAND_IN in networks else "official"


def _source(row: pd.Series) -> str:
    if row.get("source") == "reported":
        return " ".join(part for part in (_cell(row.get("paper")), _cell(row.get("table"))) if part) or "reported"
    return _cell(row.get("source"))


def to_markdown(table: pd.DataFrame, metrics: list[str], directions: dict[str, bool] | None = None) -> str:
    """A compact table to compare rows by: source (a reported row's paper and table, or
    ``reproduced``), method, variant, the papers' metrics (``value [low, high]``, ↑/↓ in the
    header from ``directions`` or `DIRECTIONS`), n, protocol and a ``networks`` marker
    (`_networks_marker`), then a legend. A flagged row's variant carries ``⚑1``, the flag's
    text listed last; FID-family values of small runs carry ``†``. Everything else (run id,
    seed, each metric's network, the papers' notes, metrics outside the papers' set) is in
    the CSV; a ``classifier`` column appears only where the rows explain several."""
    directions = {**DIRECTIONS, **(directions or {})}
    reported = table[table["source"] == "reported"] if "source" in table else table.iloc[:0]
    shown_metrics = [m for m in metrics if m in METRIC_ORDER
                     or (m in reported and reported[m].notna().any())]  # fmt: skip
    classifiers = {c for c in table.get("classifier", pd.Series(dtype=object)).map(_cell) if c}
    markers = [_networks_marker(row) for _, row in table.iterrows()]
    # a board of the papers' numbers alone has neither
    provenance = [c for c in ("n", "protocol") if c in table and table[c].map(_cell).any()]
    columns = ["source", "method", "variant", *(["classifier"] if len(classifiers) > 1 else []), *shown_metrics,
               *provenance, *(["networks"] if any(markers) else [])]  # fmt: skip
    arrows = {True: " ↑", False: " ↓"}
    header = [f"{c}{arrows.get(directions.get(c), '')}" if c in shown_metrics else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    legend: dict[str, int] = {}  # flag text -> its number, in order of appearance
    small_n = False
    for (_, row), marker in zip(table.iterrows(), markers):
        cells = []
        flags = [f for f in _cell(row.get("flags")).split("; ") if f]
        n = pd.to_numeric(row.get("n"), errors="coerce")
        for column in columns:
            if column == "source":
                text = _source(row)
            elif column == "networks":
                text = marker
            elif column == "n":
                text = "" if pd.isna(n) else str(int(n))
            else:
                text = _cell(row.get(column))
            low = row.get(f"{column}_ci_low")
            if column in shown_metrics and text and low is not None and not pd.isna(low):
                text += f" [{_cell(low)}, {_cell(row[f'{column}_ci_high'])}]"
            if column in SMALL_N_METRICS and text and n < SMALL_N:
                text, small_n = text + f" {SMALL_N_MARK}", True
            if column == "variant" and flags:
                text += f" {FLAG}" + ",".join(str(legend.setdefault(f, len(legend) + 1)) for f in flags)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "↑ higher is better, ↓ lower is better; a value reads `value [95% CI]`; n: the images a run "
              "explained; source: the paper and table of a published number, or `reproduced` (a cfbench run)."]
    if any(markers):
        lines += ["", f"networks: `stand-in` where a metric of the row was computed by a stand-in evaluation "
                  "network (not the papers' network: compare such numbers only with each other), `official` where "
                  "by the papers' networks only."]
    lines += ["", "Run ids, seeds, classifiers, each metric's network, the papers' notes and the metrics outside the "
              "papers' set are in the CSV beside this file."]
    if legend or small_n:
        lines += ["", *(f"- {FLAG}{number} {text}" for text, number in legend.items())]
        lines += [f"- {SMALL_N_LEGEND}"] if small_n else []
    return "\n".join(lines) + "\n"


def build_leaderboards(
    runs_roots: Path | list[Path], out_dir: Path, reference_dir: Path | None = None
) -> list[Path]:
    """Regenerate every leaderboard in ``out_dir`` from the runs under ``runs_roots`` (a
    folder or several, the first one first; a missing one has no runs) and the papers'
    tables, deleting the boards there that no row is left for; returns the CSV paths written."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CfbenchError(f"cannot write leaderboards to {out_dir}: {e.strerror}.") from None
    reference = reported_rows(reference_dir or packaged_reference())
    roots = [runs_roots] if isinstance(runs_roots, (str, Path)) else runs_roots
    roots = dict.fromkeys(Path(root).resolve() for root in roots)
    directions: dict[str, bool] = {}  # metric -> higher_is_better, as the runs' metrics.json say
    reproduced = pd.concat([reproduced_rows(root, directions) for root in roots], ignore_index=True)
    if not reproduced.empty:  # a run in two folders is one row, the first's, unless its n differs
        reproduced = reproduced.drop_duplicates(["run_id", "n"], keep="first")
    table = pd.concat([reference, reproduced], ignore_index=True)
    table = table.reindex(columns=[*table.columns, *(c for c in (*ROW_KEYS, "run_id") if c not in table.columns)])
    table = table.fillna({k: "" for k in (*ROW_KEYS, "run_id")})
    written = []
    with exclusive_lock(out_dir / ".leaderboard.lock", wait=True, what="leaderboards"):
        for (dataset, attr), group in table.groupby(["dataset", "attr"], sort=True):
            reproduced = group[group["source"] == "reproduced"].sort_values(["method", "variant", "run_id", "n"], kind="stable")
            group = pd.concat([group[group["source"] == "reported"], reproduced]).dropna(axis=1, how="all")
            columns = _columns(group)
            group = group[columns]
            path = out_dir / f"{dataset}_{attr}.csv"
            atomic_write_text(path, group.to_csv(index=False, float_format="%.6g"))
            metrics = [c for c in columns if c not in (*ROW_KEYS, *PROVENANCE) and "_ci_" not in c]
            atomic_write_text(path.with_suffix(".md"), f"# {dataset} / {attr}\n\n" + to_markdown(group, metrics, directions))
            written.append(path)
        for path in sorted(set(out_dir.glob("*.csv")) - set(written)):  # a board whose rows are all gone
            if path.read_text().startswith("source,"):
                path.unlink()
                path.with_suffix(".md").unlink(missing_ok=True)
    return written
