"""`cfbench leaderboard`: a pure function of the run records and the papers' tables.

Run records are read from the runs folder (``runs/``) and from ``<out>/runs/``, where
the records behind the repository's published rows live (metadata, tables and grids
only); a run in both is one row, the runs folder's. For every (dataset, attr) it writes
``<dataset>_<attr>.csv`` and a markdown twin: the published rows (``source=reported``,
with paper and table) beside the rows of finished runs (``source=reproduced``, with run
id, n, seed and protocol). Metric columns follow the papers' order; a metric a row lacks
is an empty cell.
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
    "fid", "sfid", "fva", "fs", "mnac", "cd", "cd_spec", "cout", "s3", "fr",
    "l1", "l2", "sigma_l", "precision", "recall", "fid_plus", "l1_plus",
)  # fmt: skip
ROW_KEYS = ("source", "paper", "table", "dataset", "attr", "method", "variant")
PROVENANCE = ("run_id", "n", "seed", "protocol", "classifier", "networks", "note")


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
    (DiME's Table 2 ablation): ``quick/naive``."""
    config = info["identity"].get("config", {})
    settings = [str(config[key]) for key in info.get("row_settings", ()) if key in config]
    return "/".join([info["identity"]["profile"], *settings])


def reproduced_rows(runs_root: Path) -> pd.DataFrame:
    """One row per finished run under ``runs_root`` (a run.json beside a metrics.json)."""
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
        }
        networks = []
        for name, result in json.loads(metrics_path.read_text()).items():
            row[name] = result["value"]
            if result.get("ci"):
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = result["ci"]
            if result.get("network"):
                networks.append(f"{name}={result['network']}")
        row["networks"] = ";".join(networks)
        rows.append(row)
    return pd.DataFrame(rows)


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


def to_markdown(table: pd.DataFrame, metrics: list[str]) -> str:
    """A markdown table; a metric with a CI reads ``value [low, high]``."""
    shown = [c for c in table.columns if "_ci_" not in c and c not in ("networks", "note")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        cells = []
        for column in shown:
            text = _cell(row[column])
            low = row.get(f"{column}_ci_low")
            if column in metrics and text and low is not None and not pd.isna(low):
                text += f" [{_cell(low)}, {_cell(row[f'{column}_ci_high'])}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_leaderboards(runs_root: Path, out_dir: Path, reference_dir: Path | None = None) -> list[Path]:
    """Regenerate every leaderboard; returns the CSV paths written."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CfbenchError(f"cannot write leaderboards to {out_dir}: {e.strerror}.") from None
    reference = reported_rows(reference_dir or packaged_reference())
    roots = dict.fromkeys(Path(root).resolve() for root in (runs_root, out_dir / "runs"))
    reproduced = pd.concat([reproduced_rows(root) for root in roots], ignore_index=True)
    if not reproduced.empty:  # a run copied into <out>/runs to publish it is one row: the runs folder's
        reproduced = reproduced.drop_duplicates("run_id", keep="first")
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
            atomic_write_text(path.with_suffix(".md"), f"# {dataset} / {attr}\n\n" + to_markdown(group, metrics))
            written.append(path)
    return written
