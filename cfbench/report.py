"""`cfbench report`: one self-contained HTML page comparing the runs of one (dataset, attr).

``build_report(RUNS_DIR)`` reads the finished runs under ``RUNS_DIR`` (those of the last
`cfbench suite` there when ``suite.json`` names them) and writes ``RUNS_DIR/report/``:

    index.html   the page: no network access, opens from disk
    img/         the images it shows (copied from the runs, or drawn: |difference|, attributions)

The page holds a note (dataset, attr, classifier, n, protocol, date, cfbench version,
profiles, failed methods with their error line), the leaderboard (the papers' metric
order, 95% CIs, stand-in networks and small-n FID values marked, the papers' published
rows of the dataset beside the runs, cost per counterfactual; a click on a header sorts,
and ``index.html#sort=fr`` or ``#sort=fr:asc`` sorts on load), the shortcut track where
the classifier declares a shortcut, two scatter plots (inline SVG: FR against seconds per
counterfactual, realism against closeness) and the first images of every method side by
side. Its style and scripts (``cfbench/report_assets/``) are inlined; the scripts report
their errors into ``#js-errors`` (shown when not empty).

Rebuilding from the same runs gives the same files: the page's date is the suite's (or
the newest run's), never the time it was drawn.
"""
from __future__ import annotations

import html
import json
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cfbench import __version__
from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_bytes, atomic_write_text
from cfbench.leaderboard import (
    DIRECTIONS, METRIC_ORDER, SMALL_N, SMALL_N_LEGEND, SMALL_N_MARK, SMALL_N_METRICS, STAND_IN, _variant,
    packaged_reference, reported_rows,
)  # fmt: skip

SUITE_FILE = "suite.json"
#: images per method shown side by side (the first samples of the runs, matched by id)
IMAGES = 8
#: |counterfactual - original| (channel mean) is multiplied by this before it is drawn, clipped at 1
DIFF_SCALE = 4
STAND_IN_MARK = "◇"
COST = (
    ("seconds", "s / cf", "seconds per counterfactual (mean over the run's samples)"),
    ("diffusion_evals", "diff. evals / cf", "diffusion network evaluations per counterfactual (mean)"),
    ("diffusion_gradients", "diff. grads / cf", "gradients through the diffusion network per counterfactual (mean)"),
    ("classifier_queries", "clf. queries / cf", "classifier queries per counterfactual (mean)"),
    ("classifier_gradients", "clf. grads / cf", "classifier gradients per counterfactual (mean)"),
)
REPORTED_META = {"source", "paper", "table", "dataset", "attr", "method", "variant", "note"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")  # fmt: skip


@dataclass
class RunView:
    """A finished run as the report reads it."""

    path: Path
    info: dict[str, Any]
    metrics: dict[str, Any]
    table: pd.DataFrame
    label: str = ""

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or self.path.name)

    @property
    def method(self) -> str:
        return str(self.info["identity"]["method"])

    @property
    def n(self) -> int | None:
        return self.info.get("n")

    def cost(self, counter: str) -> float | None:
        if counter not in self.table or self.table.empty:
            return None
        values = pd.to_numeric(self.table[counter], errors="coerce").dropna()
        return float(values.mean()) if len(values) else None

    def value(self, metric: str) -> float | None:
        result = self.metrics.get(metric) or {}
        value = result.get("value")
        return None if value is None or not math.isfinite(value) else float(value)

    def has_images(self) -> bool:
        return any((self.path / "counterfactuals").glob("*.png"))


@dataclass
class Page:
    """What the page shows, gathered before anything is written."""

    dataset: str
    attr: str
    runs: list[RunView]
    suite: dict[str, Any] | None
    reported: pd.DataFrame
    notes: list[str] = field(default_factory=list)


# -- reading -------------------------------------------------------------------------------------
def read_suite(runs_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """``suite.json`` of ``runs_dir``, or of its one ``<dataset>_<attr>`` folder."""
    found = [runs_dir / SUITE_FILE] if (runs_dir / SUITE_FILE).exists() else sorted(runs_dir.glob(f"*/{SUITE_FILE}"))
    if len(found) != 1:
        return None
    try:
        return found[0].parent, json.loads(found[0].read_text())
    except ValueError:
        raise CfbenchError(f"{found[0]} is not a cfbench suite file; delete it to report on every run there.") from None


def read_run(path: Path) -> RunView | None:
    """The run at ``path`` if it is finished (run.json and metrics.json), else None."""
    try:
        info = json.loads((path / "run.json").read_text())
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or "identity" not in info or not isinstance(metrics, dict):
        return None
    table = pd.read_csv(path / "samples.csv", dtype={"id": str}) if (path / "samples.csv").exists() else pd.DataFrame()
    if info.get("n") is not None and "index" in table:
        table = table[table["index"] < info["n"]].reset_index(drop=True)
    return RunView(path, info, metrics, table)


def collect(runs_dir: Path) -> Page:
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CfbenchError(f"{runs_dir}: no such folder of runs.")
    suite_found = read_suite(runs_dir)
    suite = suite_found[1] if suite_found else None
    if suite is not None:
        base = suite_found[0]
        wanted = [entry for entry in suite.get("methods", []) if entry.get("status") == "done" and entry.get("run_id")]
        runs = [run for run in (read_run(base / entry["run_id"]) for entry in wanted) if run is not None]
    else:
        runs = [run for run in (read_run(p.parent) for p in sorted(runs_dir.glob("**/run.json"))) if run is not None]
    groups = sorted({(run.info["identity"]["dataset"], run.info.get("attr", "")) for run in runs})
    if suite is not None:
        dataset, attr = suite["dataset"], suite["attr"]
    elif len(groups) == 1:
        dataset, attr = groups[0]
    elif not groups:
        raise CfbenchError(f"{runs_dir} holds no finished run (a run.json beside a metrics.json).")
    else:
        named = ", ".join(f"{runs_dir / f'{d}_{a}'}" for d, a in groups)
        raise CfbenchError(f"{runs_dir} holds runs of several dataset/attr pairs; report on one folder: {named}.")
    runs = [run for run in runs if (run.info["identity"]["dataset"], run.info.get("attr", "")) == (dataset, attr)]
    runs.sort(key=lambda run: (run.method, _variant(run.info), run.run_id, run.n or 0))
    _label(runs)
    reported = reported_rows(packaged_reference())
    if not reported.empty:
        reported = reported[(reported["dataset"] == dataset) & (reported["attr"] == attr)].reset_index(drop=True)
    return Page(dataset, attr, runs, suite, reported)


def _label(runs: list[RunView]) -> None:
    """Each run's name on the page: the method, its variant where two runs share the method,
    then the classifier, n and seed where they differ."""
    for run in runs:
        same = [r for r in runs if r.method == run.method]
        parts = [run.method]
        if len(same) > 1:
            parts.append(_variant(run.info))
            for key, value in (("classifier", run.info["identity"].get("classifier")), ("n", run.n),
                               ("seed", run.info["identity"].get("seed"))):  # fmt: skip
                others = {(r.info["identity"].get(key) if key != "n" else r.n) for r in same}
                if len(others) > 1:
                    parts.append(f"{key}={value}" if key != "classifier" else str(value))
        run.label = " ".join(str(p) for p in parts)
    labels = [run.label for run in runs]
    for run in runs:  # still the same: the run id's hash tells them apart
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.run_id.rsplit('-', 1)[-1]})"


# -- formatting ----------------------------------------------------------------------------------
def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.4g}"


def sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))


def _date(page: Page) -> str:
    if page.suite and page.suite.get("started"):
        return str(page.suite["started"])
    stamps = [run.info.get("finished") for run in page.runs if isinstance(run.info.get("finished"), (int, float))]
    if not stamps:
        return "unknown"
    return datetime.fromtimestamp(max(stamps), timezone.utc).isoformat(timespec="seconds")


def _distinct(values) -> str:
    found = list(dict.fromkeys(str(v) for v in values if v not in (None, "")))
    return ", ".join(found) if found else "—"


# -- the leaderboard -----------------------------------------------------------------------------
def _metrics(page: Page) -> list[str]:
    """The metrics of the runs and of the papers' rows: the papers' order, then the others."""
    present = {name for run in page.runs for name in run.metrics}
    present |= {c for c in page.reported.columns if c not in REPORTED_META and page.reported[c].notna().any()}
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def _directions(page: Page) -> dict[str, bool]:
    directions = dict(DIRECTIONS)
    for run in page.runs:
        for name, result in run.metrics.items():
            if isinstance(result, dict) and result.get("higher_is_better") is not None:
                directions[name] = bool(result["higher_is_better"])
    return directions


def _th(key: str, text: str, kind: str, direction: str, title: str = "") -> str:
    tip = f' title="{esc(title)}"' if title else ""
    return (f'<th data-key="{esc(key)}" data-type="{kind}" data-dir="{direction}"{tip}>'
            f'<button type="button">{esc(text)}</button></th>')  # fmt: skip


def _td(key: str, value: object, text: str | None = None, extra: str = "", title: str = "", cls: str = "") -> str:
    sort = "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
    tip = f' title="{esc(title)}"' if title else ""
    klass = f' class="{cls}"' if cls else ""
    shown = esc(sort if text is None else text)
    return f'<td data-key="{esc(key)}" data-v="{esc(sort)}"{klass}{tip}>{shown}{extra}</td>'


def leaderboard_html(page: Page) -> tuple[str, dict[str, bool]]:
    """The table and which markers it used (``stand-in``, ``small-n``)."""
    metrics = _metrics(page)
    directions = _directions(page)
    several = {
        key: len({str(run.info["identity"].get(key)) for run in page.runs}) > 1 for key in ("classifier", "seed")
    }
    fit = any(isinstance(run.info.get("fit"), dict) for run in page.runs)
    head = [_th("source", "source", "text", "asc", "the paper and table of a published row, or reproduced"),
            _th("method", "method", "text", "asc"), _th("variant", "variant", "text", "asc")]  # fmt: skip
    if several["classifier"]:
        head.append(_th("classifier", "classifier", "text", "asc"))
    if several["seed"]:
        head.append(_th("seed", "seed", "num", "asc"))
    head.append(_th("n", "n", "num", "desc", "images explained"))
    for name in metrics:
        better = directions.get(name)
        arrow = {True: " ↑", False: " ↓"}.get(better, "")
        head.append(_th(name, name + arrow, "num", "desc" if better else "asc",
                        {True: "higher is better", False: "lower is better"}.get(better, "")))  # fmt: skip
    for counter, text, title in COST:
        head.append(_th(f"cost_{counter}", text, "num", "asc", title))
    if fit:
        head.append(_th("cost_fit", "fit s", "num", "asc", "seconds the method spent learning before it explained"))
    head += [_th("device", "device", "text", "asc"), _th("protocol", "protocol", "text", "asc")]
    used = {"stand-in": False, "small-n": False}
    rows = []
    for _, row in page.reported.iterrows():
        source = " ".join(str(row.get(k) or "") for k in ("paper", "table")).strip() or "reported"
        cells = [_td("source", source), _td("method", row.get("method", "")), _td("variant", row.get("variant", ""))]
        cells += [_td("classifier", "")] if several["classifier"] else []
        cells += [_td("seed", None)] if several["seed"] else []
        cells.append(_td("n", None))
        for name in metrics:
            value = row.get(name)
            value = None if value is None or pd.isna(value) else float(value)
            cells.append(_td(name, value, fmt(value)))
        cells += [_td(f"cost_{counter}", None) for counter, _, _ in COST]
        cells += [_td("cost_fit", None)] if fit else []
        cells += [_td("device", ""), _td("protocol", "")]
        note = f' title="{esc(row.get("note"))}"' if row.get("note") else ""
        rows.append(f'<tr class="reported"{note}>{"".join(cells)}</tr>')
    for run in page.runs:
        identity = run.info["identity"]
        run_id = f' <span class="id">{esc(run.run_id)}</span>'
        cells = [_td("source", "reproduced"), _td("method", run.method, extra=run_id),
                 _td("variant", _variant(run.info))]
        cells += [_td("classifier", identity.get("classifier", ""))] if several["classifier"] else []
        cells += [_td("seed", identity.get("seed"))] if several["seed"] else []
        cells.append(_td("n", run.n, str(run.n if run.n is not None else "")))
        for name in metrics:
            result = run.metrics.get(name)
            if not isinstance(result, dict):
                cells.append(_td(name, None))
                continue
            value = run.value(name)
            if value is None:
                cells.append(_td(name, None, "n/a", title=result.get("reason") or "not defined for this run", cls="na"))
                continue
            extra, titles = "", []
            if result.get("ci"):
                extra += f' <span class="ci">[{esc(fmt(result["ci"][0]))}, {esc(fmt(result["ci"][1]))}]</span>'
            network = result.get("network") or ""
            if network:
                titles.append(f"network: {network}")
            if STAND_IN in network:
                extra += f' <span class="mark standin">{STAND_IN_MARK}</span>'
                used["stand-in"] = True
            if name in SMALL_N_METRICS and run.n is not None and run.n < SMALL_N:
                extra += f' <span class="mark smalln">{SMALL_N_MARK}</span>'
                used["small-n"] = True
            titles += [f"n = {result.get('n')}"] + list(result.get("flags") or [])
            cells.append(_td(name, value, fmt(value), extra, "; ".join(titles)))
        for counter, _, _ in COST:
            value = run.cost(counter)
            cells.append(_td(f"cost_{counter}", value, fmt(value)))
        if fit:
            value = run.info["fit"].get("seconds") if isinstance(run.info.get("fit"), dict) else None
            cells.append(_td("cost_fit", value, fmt(value)))
        env = run.info.get("environment") or {}
        device = str(env.get("device") or "")
        if env.get("device_name") and env.get("device_name") != device:
            device += f" ({env['device_name']})"
        cells += [_td("device", device), _td("protocol", run.info.get("protocol", ""))]
        rows.append(f'<tr class="reproduced" data-run="{esc(run.run_id)}">{"".join(cells)}</tr>')
    table = (f'<table id="leaderboard" class="sortable"><thead><tr>{"".join(head)}</tr></thead>'
             f'<tbody>\n{chr(10).join(rows)}\n</tbody></table>')  # fmt: skip
    return table, used


# -- images --------------------------------------------------------------------------------------
def _png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _load(path: Path) -> np.ndarray:
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return array


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def images_html(page: Page, out: Path, k: int = IMAGES) -> str:
    """Original | per method: counterfactual, |difference| ×DIFF_SCALE, mask or attribution,
    with the classifier's probability under each; the images copied or drawn into ``out/img``."""
    runs = [run for run in page.runs if run.has_images()]
    if not runs:
        return '<p class="note">None of these runs kept its images (published records keep metadata only).</p>'
    by_index: dict[int, str] = {}
    for run in runs:
        if {"index", "id"} <= set(run.table.columns):
            for index, sample_id in zip(run.table["index"], run.table["id"]):
                if int(index) < k:
                    by_index.setdefault(int(index), str(sample_id))
    ids = [by_index[i] for i in sorted(by_index)][:k]
    if not ids:
        return '<p class="note">No samples to show.</p>'
    attribute = runs[0].info["identity"].get("attribute", page.attr)
    head = ['<th>original</th>'] + [f'<th>{esc(run.label)}</th>' for run in runs]
    rows = []
    for sample_id in ids:
        cells = []
        original = next((r for r in runs if (r.path / "originals" / f"{sample_id}.png").exists()), None)
        if original is None:
            continue
        target = out / "img" / "originals" / f"{sample_id}.png"
        _copy(original.path / "originals" / f"{sample_id}.png", target)
        row = original.table[original.table["id"] == sample_id]
        p = f"p={sigmoid(float(row['logit'].iloc[0])):.2f}" if len(row) and "logit" in row else ""
        cells.append(f'<td><figure><img src="img/originals/{esc(sample_id)}.png" alt="original {esc(sample_id)}">'
                     f'<figcaption>{esc(sample_id)}<br>{p}</figcaption></figure></td>')  # fmt: skip
        x = _load(original.path / "originals" / f"{sample_id}.png")
        for run in runs:
            cf_path = run.path / "counterfactuals" / f"{sample_id}.png"
            if not cf_path.exists():
                cells.append('<td class="na">—</td>')
                continue
            folder = out / "img" / run.run_id
            _copy(cf_path, folder / f"{sample_id}.png")
            cf = _load(cf_path)
            diff = np.clip(np.abs(cf - x).mean(axis=2) * DIFF_SCALE, 0, 1)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / f"{sample_id}-diff.png", _png((diff * 255).round().astype(np.uint8)))
            row = run.table[run.table["id"] == sample_id]
            caption = ""
            if len(row) and "cf_logit" in row:
                flipped = bool(row["success"].iloc[0]) if "success" in row else None
                mark = {True: ' <span class="ok">✓</span>', False: ' <span class="no">✗</span>'}.get(flipped, "")
                caption = f"p={sigmoid(float(row['cf_logit'].iloc[0])):.2f}{mark}"
            figures = [f'<figure><img src="img/{esc(run.run_id)}/{esc(sample_id)}.png" alt="counterfactual">'
                       f'<figcaption>{caption}</figcaption></figure>',
                       f'<figure><img src="img/{esc(run.run_id)}/{esc(sample_id)}-diff.png" alt="difference">'
                       f'<figcaption>|Δ|×{DIFF_SCALE}</figcaption></figure>']  # fmt: skip
            mask = run.path / "masks" / f"{sample_id}.png"
            attribution = run.path / "attributions" / f"{sample_id}.npy"
            if mask.exists():
                _copy(mask, folder / f"{sample_id}-mask.png")
                figures.append(f'<figure><img src="img/{esc(run.run_id)}/{esc(sample_id)}-mask.png" alt="mask">'
                               f'<figcaption>mask</figcaption></figure>')  # fmt: skip
            elif attribution.exists():
                values = np.abs(np.load(attribution))
                values = values.reshape(-1, *values.shape[-2:]).sum(axis=0)
                values = values / max(float(values.max()), 1e-12)
                atomic_write_bytes(folder / f"{sample_id}-attr.png", _png((values * 255).round().astype(np.uint8)))
                figures.append(f'<figure><img src="img/{esc(run.run_id)}/{esc(sample_id)}-attr.png" '
                               f'alt="attribution"><figcaption>|attribution|</figcaption></figure>')  # fmt: skip
            cells.append(f'<td><div class="figs">{"".join(figures)}</div></td>')
        rows.append(f'<tr data-id="{esc(sample_id)}">{"".join(cells)}</tr>')
    return (f'<p class="note">The first {len(rows)} images of the runs (the same samples for every method). '
            f'p: the classifier\'s probability of {esc(attribute)} (sigmoid of its logit) on the saved image; '
            f'✓ the counterfactual\'s decision is the target. |Δ|×{DIFF_SCALE}: the channel mean of '
            f'|counterfactual − original|, multiplied by {DIFF_SCALE} and clipped at white (one scale for all '
            f'methods). Mask or |attribution| (scaled to its maximum) where the run saved one.</p>'
            f'<div class="scroll"><table id="images"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip


# -- the shortcut track --------------------------------------------------------------------------
def shortcut_html(page: Page) -> str:
    runs = [run for run in page.runs if run.value("shortcut_changed") is not None]
    if not runs:
        return ""
    shortcut = (page.suite or {}).get("shortcut") or "the classifier's shortcut"

    def cell(run: RunView, name: str) -> str:
        result = run.metrics.get(name) or {}
        value = run.value(name)
        if value is None:
            return _td(name, None, "n/a", title=result.get("reason") or "")
        ci = result.get("ci")
        extra = f' <span class="ci">[{esc(fmt(ci[0]))}, {esc(fmt(ci[1]))}]</span>' if ci else ""
        return _td(name, value, f"{fmt(value)} %", extra, f"n = {result.get('n')} successful counterfactuals")

    rows = [f'<tr><td>{esc(run.label)}</td>{cell(run, "shortcut_changed")}{cell(run, "query_changed")}'
            f'<td>{esc((run.metrics.get("shortcut_changed") or {}).get("n", ""))}</td></tr>'
            for run in runs]  # fmt: skip
    return (f'<h2 id="shortcut">Shortcut track</h2><p class="note">The classifier relies on a planted shortcut '
            f'({esc(shortcut)}). Per method, the % of successful counterfactuals whose {esc(shortcut)} the oracle '
            f'sees changed, against the % that change the queried attribute ({esc(page.attr)}), with 95% CIs: an '
            f'explanation that reveals the shortcut changes the first.</p>'
            f'<table id="shortcut-track"><thead><tr><th>method</th><th>changes the shortcut ↑</th>'
            f'<th>changes the query</th><th>n</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')  # fmt: skip


# -- plots ---------------------------------------------------------------------------------------
def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    raw = span / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = start
    while value <= high + 1e-9 * span:
        ticks.append(round(value, 12))
        value += step
    return ticks


def scatter_svg(points: list[tuple[str, float, float, str]], x_label: str, y_label: str, log_x: bool = False,
                plot_id: str = "") -> str:
    """A labelled scatter plot (label, x, y, colour) as inline SVG; a log x axis when ``log_x``."""
    width, height, left, right, top, bottom = 600, 380, 70, 30, 20, 56
    xs = [math.log10(x) for _, x, _, _ in points] if log_x else [x for _, x, _, _ in points]
    ys = [y for _, _, y, _ in points]

    def padded(values: list[float], log: bool) -> tuple[float, float]:
        low, high = min(values), max(values)
        if high - low < 1e-12:
            pad = 0.5 if log else max(abs(low) * 0.1, 1.0)
            return low - pad, high + pad
        pad = (high - low) * 0.08
        return (math.floor(low) if log else low - pad), (math.ceil(high) if log else high + pad)

    x0, x1 = padded(xs, log_x)
    y0, y1 = padded(ys, False)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="{esc(plot_id)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(y_label)} against '
             f'{esc(x_label)}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             f'fill="none" stroke="#444"/>']  # fmt: skip
    x_ticks = list(range(math.ceil(x0), math.floor(x1) + 1)) if log_x else _nice_ticks(x0, x1)
    if log_x and len(x_ticks) < 2:
        x_ticks = [x0, x1]
    for tick in x_ticks:
        label = f"{10 ** tick:g}" if log_x else f"{tick:g}"
        parts.append(f'<line x1="{px(tick):.1f}" y1="{height - bottom}" x2="{px(tick):.1f}" y2="{top}" '
                     f'stroke="#ddd"/><text x="{px(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                     f'font-size="11">{esc(label)}</text>')  # fmt: skip
    for tick in _nice_ticks(y0, y1):
        parts.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{width - right}" y2="{py(tick):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:g}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" text-anchor="middle" '
                 f'font-size="12">{esc(x_label)}</text>')
    parts.append(f'<text transform="translate(16 {(top + height - bottom) / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle" font-size="12">{esc(y_label)}</text>')
    for (label, _, y, colour), x in zip(points, xs):
        cx, cy = px(x), py(y)
        wide = cx + 8 + 6.2 * len(label) > width  # about 6 px a character at 11 px
        anchor, dx = ("end", -8) if wide and cx - 8 - 6.2 * len(label) > 0 else ("start", 8)
        parts.append(f'<g class="point"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}">'
                     f'<title>{esc(label)}: {esc(x_label)} {fmt(10 ** x if log_x else x)}, {esc(y_label)} {fmt(y)}'
                     f'</title></circle><text x="{cx + dx:.1f}" y="{cy - 6:.1f}" text-anchor="{anchor}" '
                     f'font-size="11" fill="{colour}">{esc(label)}</text></g>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def plots_html(page: Page) -> str:
    colours = {method: PALETTE[i % len(PALETTE)] for i, method in enumerate(sorted({r.method for r in page.runs}))}
    out = ['<h2 id="plots">Trade-offs</h2><div class="plots">']
    points = []
    for run in page.runs:
        seconds, fr = run.cost("seconds"), run.value("fr")
        if seconds is not None and fr is not None:
            points.append((run.label, max(seconds, 1e-6), fr, colours[run.method]))
    if points:
        out.append('<figure>' + scatter_svg(points, "seconds per counterfactual (log)", "FR %", True, "plot-fr-cost")
                   + '<figcaption>Flip rate against cost, one point per run.</figcaption></figure>')
    else:
        out.append('<p class="note">FR against cost: no run has both.</p>')
    realism = next((m for m in ("fid", "kid") if any(r.value(m) is not None for r in page.runs)), None)
    closeness = next((m for m in (*sorted(m for r in page.runs for m in r.metrics if "lpips" in m), "l1", "l2")
                      if any(r.value(m) is not None for r in page.runs)), None)  # fmt: skip
    if realism and closeness:
        points = [(run.label, run.value(closeness), run.value(realism), colours[run.method]) for run in page.runs
                  if run.value(closeness) is not None and run.value(realism) is not None]  # fmt: skip
        out.append('<figure>' + scatter_svg(points, f"{closeness} (closeness, lower is closer)",
                                            f"{realism.upper()} (realism, lower is better)", False, "plot-realism")
                   + f'<figcaption>Realism ({realism.upper()}) against closeness ({closeness}), one point per run.'
                   f'</figcaption></figure>')  # fmt: skip
    else:
        protocols = _distinct(run.info.get("protocol") for run in page.runs)
        out.append(f'<p class="note">Realism against closeness: no realism metric (FID or KID) in these runs '
                   f'(protocol {esc(protocols)}); the protocol cfbench-v3 computes them where the dataset names '
                   f'its evaluation networks.</p>')  # fmt: skip
    out.append("</div>")
    return "".join(out)


# -- the page ------------------------------------------------------------------------------------
def asset(name: str) -> str:
    """The text of a file of ``cfbench/report_assets`` (inlined: the page opens from disk)."""
    return resources.files("cfbench").joinpath("report_assets", name).read_text(encoding="utf-8")


def summary_html(page: Page) -> str:
    suite = page.suite or {}
    runs = page.runs
    classifier = suite.get("classifier") or _distinct(run.info["identity"].get("classifier") for run in runs)
    n = suite.get("n") or _distinct(run.n for run in runs)
    protocols = _distinct(run.info.get("protocol") for run in runs)
    versions = _distinct(((run.info.get("environment") or {}).get("packages") or {}).get("cfbench") for run in runs)
    rows = [("dataset", page.dataset), ("attr", page.attr), ("classifier", classifier), ("n", n),
            ("protocol", protocols), ("date", _date(page)),
            ("cfbench", f"{__version__} (report); runs made with {versions}")]  # fmt: skip
    if suite:
        rows.append(("profile", suite.get("profile") or "each method's default"))
        if suite.get("shortcut"):
            rows.append(("shortcut", suite["shortcut"]))
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    items = []
    for entry in suite.get("methods", []):
        if entry.get("profile_note"):
            items.append(f'<li>{esc(entry["method"])}: {esc(entry["profile_note"])}</li>')
    failed = [e for e in suite.get("methods", []) if e.get("status") not in ("done", None)]
    for entry in failed:
        what = {"failed": "failed", "interrupted": "was interrupted", "pending": "has not run"}.get(entry["status"],
                                                                                                   entry["status"])
        error = entry.get("error") or ""
        items.append(f'<li class="failed" data-method="{esc(entry["method"])}">{esc(entry["method"])} {esc(what)}'
                     f'{": " if error else ""}<code>{esc(error)}</code></li>')  # fmt: skip
    listing = f'<ul id="methods-notes">{"".join(items)}</ul>' if items else ""
    return f'<table class="summary">{body}</table>{listing}'


def render(page: Page, out: Path) -> str:
    title = f"cfbench report: {page.dataset} / {page.attr}"
    table, used = leaderboard_html(page)
    legend = ["↑ higher is better, ↓ lower is better (click a header to sort; "
              "<code>index.html#sort=fr</code> sorts on load); a value reads <code>value [95% CI]</code>.",
              "Shaded rows are the numbers the papers published (their networks and data); the others are runs."
              if not page.reported.empty else
              f"The papers published no numbers for {esc(page.dataset)} / {esc(page.attr)}: every row is a run."]
    if used["stand-in"]:
        legend.append(f'{STAND_IN_MARK} computed by a stand-in network (the zoo\'s, not the paper\'s: compare it only '
                      f'with other stand-in numbers); hover a value for its network.')
    if used["small-n"]:
        legend.append(esc(SMALL_N_LEGEND))
    legend.append("fr_null: the flip rate of the method's own null edit (its backbone without guidance), beside fr.")
    legend.append("Cost columns: means over the run's samples, from samples.csv; device from run.json.")
    failed = [e for e in (page.suite or {}).get("methods", []) if e.get("status") not in ("done", None)]
    banner = (f'<p class="failed" id="failed-banner">{len(failed)} method(s) did not finish: '
              f'{esc(", ".join(e["method"] for e in failed))}.</p>' if failed else "")  # fmt: skip
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<script>{asset('errors.js')}</script>",
        f"<style>{asset('report.css')}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        '<pre id="js-errors" hidden></pre>',
        banner,
        summary_html(page),
        '<h2 id="board">Leaderboard</h2>',
        f'<div class="scroll">{table}</div>',
        "<ul class=\"legend\">" + "".join(f"<li>{item}</li>" for item in legend) + "</ul>",
        shortcut_html(page),
        plots_html(page),
        '<h2 id="samples">Images</h2>',
        images_html(page, out),
        f"<script>{asset('sort.js')}</script>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def build_report(runs_dir: Path, out: Path | None = None) -> Path:
    """Write ``out`` (default ``runs_dir/report``): ``index.html`` and ``img/``; returns the page."""
    runs_dir = Path(runs_dir)
    page = collect(runs_dir)
    out = Path(out) if out is not None else runs_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if (out / "img").is_dir():  # the images of a previous build: drawn again from the runs
            shutil.rmtree(out / "img")
        text = render(page, out)
        atomic_write_text(out / "index.html", text)
    except OSError as e:
        raise CfbenchError(f"cannot write the report to {out}: {e.strerror or e}.") from None
    return out / "index.html"
