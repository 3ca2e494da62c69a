"""The `cfbench` command line: run, list, leaderboard.

Every error a user can cause ends in one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from pathlib import Path

import click

from cfbench.errors import CfbenchError

KINDS = ("methods", "datasets", "metrics", "classifiers", "networks", "weights")
#: the records behind the published leaderboards (``leaderboards/*.csv|md``)
PUBLISHED_RUNS = Path("leaderboards") / "runs"


def load_plugin_modules() -> None:
    """Import the modules named in ``CFBENCH_PLUGINS`` (comma-separated), so a script
    can register plugins with the decorators without being packaged."""
    for name in filter(None, os.environ.get("CFBENCH_PLUGINS", "").split(",")):
        try:
            importlib.import_module(name.strip())
        except ImportError as e:
            raise CfbenchError(f"CFBENCH_PLUGINS: cannot import {name.strip()!r} ({e}).") from None


def one_line_errors(command):
    """Turn user errors and interrupts into one line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            load_plugin_modules()
            return command(*args, **kwargs)
        except CfbenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: finished samples are saved; re-run the same command to resume.", err=True)
            sys.exit(130)
        except OSError as e:
            click.echo(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="cfbench")
def main() -> None:
    """cfbench: run visual counterfactual explanation methods under one harness."""


def _registry(kind: str):
    if kind == "methods":
        from cfbench.methods import METHODS as registry
    elif kind == "datasets":
        from cfbench.datasets import DATASETS as registry
    elif kind == "metrics":
        from cfbench.metrics import METRICS as registry
    elif kind == "networks":
        from cfbench.oracles import NETWORKS as registry
    elif kind == "weights":
        from cfbench.weights import Listing

        registry = Listing()
    else:
        from cfbench.classifiers import CLASSIFIERS as registry
    return registry


@main.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@one_line_errors
def list_command(kind: str | None) -> None:
    """List plugins: name, description, paper, white-box or black-box."""
    for current in [kind] if kind else KINDS:
        registry = _registry(current)
        click.echo(f"{current}:")
        for name in registry.names():
            meta = registry.describe(name)
            extras = [meta[k] for k in ("paper", "access") if meta.get(k)]
            suffix = f"  [{'; '.join(extras)}]" if extras else ""
            click.echo(f"  {name:<20} {meta.get('description', '')}{suffix}")
        planned = registry.planned()
        if planned:
            click.echo(f"  planned (not runnable yet): {', '.join(planned)}")


def _parse_pairs(values: tuple[str, ...], option: str = "--set") -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CfbenchError(f"{option} {item}: write it as key=value.")
        pairs[key.strip()] = value.strip()
    return pairs


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CfbenchError(f"--seeds {text}: write integers separated by commas, e.g. 0,1,2,3,4.") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CfbenchError(f"--seeds {text}: give distinct seeds, e.g. 0,1,2,3,4.")
    return seeds


def _use_data_root(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:  # the environment, so that a metric that rebuilds the dataset (CD) finds it too
        os.environ["CFBENCH_DATA"] = str(value.expanduser().resolve())


_data_root = click.option(
    "--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, expose_value=False,
    callback=_use_data_root,
    help="the dataset's folder, or the folder holding celeba/ and celebahq/ (default: $CFBENCH_DATA)",
)


def _run_output(command):
    """The options of `run` and `rerun` that say where a run is written and shown."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="run directory (default: under --runs)"),
        click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True),
        click.option("--leaderboards", type=click.Path(path_type=Path), default=None,
                     help="where to refresh the local leaderboards after the run  [default: <runs>/leaderboards]"),
        click.option("--published", type=click.Path(path_type=Path), default=PUBLISHED_RUNS, show_default=True,
                     help="published run records shown beside yours in the local leaderboards (skipped when absent)"),
        click.option("--no-progress", is_flag=True, help="hide the progress bar"),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@click.option("--method", required=True, help="method plugin, see `cfbench list methods`")
@click.option("--dataset", default="synthfaces", show_default=True,
              help="dataset plugin, or imagefolder:PATH (your images, PATH/labels.csv)")
@click.option("--attr", required=True, help="attribute to flip: a query (smile, age) or an attribute name")
@click.option("--classifier", default=None, help="classifier to explain (default: the dataset's for --attr): a "
              "registered name, module:factory, a TorchScript .pt/.ts file or a .yaml/.json classifier file")
@click.option("--classifier-opt", "classifier_opts", multiple=True, metavar="KEY=VALUE",
              help="what your --classifier expects and returns: range=-1,1, index=I, logits=2, resolution=R")
@_data_root
@click.option("--n", "n", default=100, show_default=True, type=int, help="first N images of the evaluation split")
@click.option("--split", default=None, help="explain the first N images of this split instead (e.g. val, to tune a "
              "method on images the leaderboards do not use)")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--seeds", default=None, metavar="S1,S2,…",
              help="one run per seed (e.g. 0,1,2,3,4); σL compares the seeds' counterfactuals")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--profile", default=None, help="method profile (e.g. quick or paper)")
@click.option("--target", default="prediction", show_default=True,
              help="the class asked for: the opposite of the classifier's prediction, or of the label (`label`, "
              "as the official LDCE code)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a method hyperparameter")
@click.option("--protocol", default=None, help="evaluation protocol (default: the dataset's, cfbench-v3 on synthfaces)")
@click.option("--metric", "extra_metrics", multiple=True, metavar="NAME", help="a metric to compute besides the protocol's")
@click.option("--network", "networks", multiple=True, metavar="ROLE=NAME",
              help="evaluation network for a metric role (oracle, identity, simsiam, features, perceptual)")
@_run_output
@one_line_errors
def run(method, dataset, attr, classifier, classifier_opts, n, split, batch_size, seed, seeds, device,
        profile, target, sets, out, runs_root, protocol, extra_metrics, networks, leaderboards, published, no_progress) -> None:  # fmt: skip
    """Generate counterfactuals, compute the metrics and record the run (resumable); then
    refresh the local leaderboards (the published ones change only by `cfbench leaderboard`)."""
    from cfbench.runner import Run, RunSpec

    seed_list = _parse_seeds(seeds) if seeds else [seed]
    if out is not None and len(seed_list) > 1:
        raise CfbenchError("--out names one run directory; leave it out when passing several --seeds.")
    jobs = [
        Run(RunSpec(
            method=method, dataset=dataset, attr=attr, classifier=classifier, n=n, batch_size=batch_size, seed=s,
            classifier_options=_parse_pairs(classifier_opts, "--classifier-opt"),
            device=device, overrides=_parse_pairs(sets), out=out, protocol=protocol,
            extra_metrics=extra_metrics, networks=_parse_pairs(networks, "--network"),
            profile=profile, runs_root=runs_root, progress=not no_progress, target=target, split=split,
        ))
        for s in seed_list
    ]  # fmt: skip
    if len(jobs) > 1:  # every seed's counterfactuals first, so that each run's σL compares them all
        for job in jobs:
            job.execute(evaluate=False)
    _execute(jobs, out, runs_root, leaderboards, published)


def _execute(jobs: list, out: Path | None, runs_root: Path, leaderboards: Path | None, published: Path) -> None:
    """Run each job, print its metrics and refresh the local leaderboards when the runs
    are under ``runs_root``."""
    from cfbench.leaderboard import build_leaderboards

    results = [job.execute() for job in jobs]
    for job, metrics in zip(jobs, results):
        click.echo(f"run {job.run_id}: {job.record.path}")
        width = max(8, *map(len, metrics))
        for name, result in metrics.items():
            click.echo(f"  {name:<{width}} {metric_line(result)}")
    if out is None or out.is_relative_to(runs_root):
        build_leaderboards([runs_root, published], leaderboards or runs_root / "leaderboards")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--n", "n", default=None, type=int, help="first N images  [default: the recorded run's]")
@_data_root
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="change a recorded setting (e.g. weights_path=FILE: the same run on other weights)")
@_run_output
@one_line_errors
def rerun(run_dir, n, batch_size, device, sets, out, runs_root, leaderboards, published,
          no_progress) -> None:  # fmt: skip
    """Make a recorded run again (a published row, e.g. leaderboards/runs/synthfaces_smile/<run
    id>): the method, settings, classifier, seed, images, protocol, extra metrics and
    evaluation networks of its run.json, so that it gets the same run id."""
    from cfbench.runner import Run, recorded_spec

    changes = {"n": n} if n is not None else {}
    spec = recorded_spec(run_dir, _parse_pairs(sets), batch_size=batch_size, device=device, out=out,
                         runs_root=runs_root, progress=not no_progress, **changes)  # fmt: skip
    _execute([Run(spec)], out, runs_root, leaderboards, published)


def metric_line(result: dict) -> str:
    """A metric as the console shows it: ``value [low, high]  (n=N)``, or why it has none."""
    if result["value"] is None:
        return f"n/a: {result.get('reason') or 'not defined for this run'}"
    ci = f" [{result['ci'][0]:.4g}, {result['ci'][1]:.4g}]" if result["ci"] else ""
    return f"{result['value']:.4g}{ci}  (n={result['n']})"


@main.command()
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=PUBLISHED_RUNS, show_default=True,
              help="run records to list (those under <out>/runs too)")
@click.option("--out", type=click.Path(path_type=Path), default=PUBLISHED_RUNS.parent, show_default=True)
@click.option("--reference", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="folder of the papers' tables (default: the packaged copy)")  # fmt: skip
@one_line_errors
def leaderboard(runs_root: Path, out: Path, reference: Path | None) -> None:
    """Regenerate <out>/<dataset>_<attr>.csv and .md from the run records and the papers
    (by default the published boards, from the published records)."""
    from cfbench.leaderboard import build_leaderboards

    for path in build_leaderboards([runs_root, out / "runs"], out, reference):
        click.echo(str(path))


@main.command()
@click.option("--dataset", default="synthfaces", show_default=True, help="dataset plugin (see `cfbench list datasets`)")
@click.option("--attr", required=True, help="attribute to flip: a query (smile, age) or an attribute name")
@click.option("--methods", default=None, metavar="M1,M2,…", help="methods to run (default: every registered one)")
@click.option("--profile", default=None, help="each method's profile of this name where it has one (quick, paper), "
              "else its default  [default: each method's default]")
@click.option("--n", "n", default=100, show_default=True, type=int, help="first N images of the evaluation split")
@click.option("--classifier", default=None, help="classifier to explain (default: the dataset's for --attr)")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--set", "sets", multiple=True, metavar="METHOD.KEY=VALUE",
              help="override a hyperparameter of one method, e.g. --set gcd.fits=1 (repeatable)")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--metric", "extra_metrics", multiple=True, metavar="NAME", help="a metric to compute besides the protocol's")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--no-progress", is_flag=True, help="hide the progress bars")
@one_line_errors
def suite(dataset, attr, methods, profile, n, classifier, runs_root, sets, batch_size, seed, extra_metrics, device,
          no_progress) -> None:  # fmt: skip
    """Run every method (or --methods) on the same N images with the same classifier, each a
    resumable run, then write the report <runs>/<dataset>_<attr>/report/index.html. Re-running
    the command resumes; a method that fails is listed in the report and the exit code is 1."""
    from cfbench.leaderboard import build_leaderboards
    from cfbench.suite import SuiteSpec, parse_method_sets, parse_methods, run_suite

    result = run_suite(SuiteSpec(
        dataset=dataset, attr=attr, methods=parse_methods(methods), profile=profile, n=n, classifier=classifier,
        runs_root=runs_root, overrides=parse_method_sets(sets), device=device, batch_size=batch_size, seed=seed,
        extra_metrics=tuple(extra_metrics), progress=not no_progress,
    ), echo=click.echo)  # fmt: skip
    build_leaderboards([runs_root, PUBLISHED_RUNS], runs_root / "leaderboards")
    click.echo(f"report: {result.report}")
    if result.failed:
        names = ", ".join(entry["method"] for entry in result.failed)
        click.echo(f"error: {len(result.failed)} of {len(result.entries)} methods failed ({names}); "
                   f"the report lists why: {result.report}", err=True)  # fmt: skip
        sys.exit(1)


@main.command()
@click.argument("runs_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="report folder  [default: RUNS_DIR/report]")
@one_line_errors
def report(runs_dir: Path, out: Path | None) -> None:
    """Write the HTML report (index.html and its images) of the runs in RUNS_DIR, e.g.
    runs/synthfaces_smile (the last `cfbench suite` there, else every finished run)."""
    from cfbench.report import build_report

    click.echo(str(build_report(runs_dir, out)))


@main.group()
def zoo() -> None:
    """The synthfaces model zoo: classifiers to explain and evaluation stand-ins."""


def check_zoo_names(names: tuple[str, ...]) -> None:
    """An unknown zoo model name fails before any model is trained or measured."""
    from cfbench.zoo import ZOO

    unknown = [name for name in names if name not in ZOO]
    if unknown:
        raise CfbenchError(f"Unknown zoo model {unknown[0]!r}. Known: {', '.join(ZOO)}.")


@zoo.command("list")
@one_line_errors
def zoo_list() -> None:
    """List the zoo models and whether their weights are present."""
    from cfbench.zoo import ZOO
    from cfbench.zoo.weights import WEIGHTS_DIR

    for name, entry in ZOO.items():
        present = "trained" if (WEIGHTS_DIR / f"{name}.safetensors").exists() else "not trained"
        click.echo(f"  {name:<26} {entry.kind:<10} {present}")


@zoo.command("train")
@click.argument("names", nargs=-1, required=True)
@click.option("--steps", type=int, default=None, help="optimiser steps (default: the recipe's)")
@click.option("--train-size", type=int, default=None, help="rendered training images (default: the recipe's)")
@click.option("--eval-size", type=int, default=2000, show_default=True, help="fresh test images for the card")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="folder for the weights (default: the package's)")
@click.option("--resume", is_flag=True, help="go on from the training state saved in $CFBENCH_HOME/zoo-checkpoints "
              "(to a larger --steps for a constant-rate recipe)")
@click.option("--init", default=None, metavar="shipped|FILE", help="warm-start from the shipped weights or a safetensors "
              "file (a model trained on another machine goes on training here)")
@one_line_errors
def zoo_train(names: tuple[str, ...], steps: int | None, train_size: int | None, eval_size: int, seed: int, device: str,
              out: Path | None, resume: bool, init: str | None) -> None:  # fmt: skip
    """Train zoo models (in the order given; they share rendered data), measure them,
    and write weights + model cards."""
    from cfbench.runner import pick_device
    from cfbench.zoo.train import train
    from cfbench.zoo.weights import WEIGHTS_DIR

    check_zoo_names(names)
    for name in names:
        record = train(name, pick_device(device), steps, train_size, seed, out or WEIGHTS_DIR, eval_size, resume, init)
        click.echo(f"{name}: {json.dumps(record['measured'])}")


@zoo.command("measure")
@click.argument("names", nargs=-1, required=True)
@click.option("--eval-size", type=int, default=2000, show_default=True, help="fresh test images (DDPM: samples)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="folder of the weights (default: the package's)")
@one_line_errors
def zoo_measure(names: tuple[str, ...], eval_size: int, device: str, out: Path | None) -> None:
    """Measure trained zoo models again and rewrite their cards (training is untouched)."""
    from cfbench.runner import pick_device
    from cfbench.zoo.train import remeasure
    from cfbench.zoo.weights import WEIGHTS_DIR

    check_zoo_names(names)
    for name in names:
        record = remeasure(name, pick_device(device), eval_size, out or WEIGHTS_DIR)
        click.echo(f"{name}: {json.dumps(record['measured'])}")


@main.group("weights")
def weights_group() -> None:
    """The published weights cfbench reads: list, locate, verify and download them
    (into $CFBENCH_HOME/weights, default ~/.cache/cfbench/weights)."""


@weights_group.command("list")
@one_line_errors
def weights_list() -> None:
    """Each entry: name, file (and the name it is published under), cached or not, size,
    sha256 pin, how to get it and its URL."""
    from cfbench.download import human
    from cfbench.weights import WEIGHTS, cache_state

    rows, published = [("name", "file", "state", "size", "sha256", "source")], {}
    for name, item in WEIGHTS.items():
        state = cache_state(item)
        shown = f"{item.package}/{item.filename}" if item.package else item.filename + ("/" if item.files else "")
        paths = [path for _, path in item.file_paths()] if state != "not installed" else []
        sizes = [part.size for part in item.parts()]
        if None in sizes and paths and all(path.is_file() for path in paths):
            sizes = [path.stat().st_size for path in paths]
        size = human(sum(sizes)) if None not in sizes else "?"
        rows.append((name, shown, state, size, item.pin, f"{item.source}: {item.url}"))
        if item.published or item.files:
            published[name] = f"published as {item.published}" if item.published else (
                f"files {', '.join(part.name for part in item.files)}")
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
        if row[0] in published:
            click.echo(f"  {'':<{widths[0]}}  {published[row[0]]}")


@weights_group.command("path")
@click.argument("name")
@one_line_errors
def weights_path(name: str) -> None:
    """Where NAME is (or goes) here; the name it is published under on stderr where it differs."""
    from cfbench.weights import entry

    item = entry(name)
    click.echo(str(item.path()))
    if item.published:
        click.echo(f"note: {name} is published as {item.published} at {item.url}", err=True)


@weights_group.command("verify")
@click.argument("name", required=False)
@one_line_errors
def weights_verify(name: str | None) -> None:
    """sha256 (and size) of the cached files against their pins: one line per file; a
    mismatch, a truncated file or a web page saved in place of one fails (exit 2)."""
    from cfbench.download import verify
    from cfbench.weights import WEIGHTS, cache_state, entry

    items = [entry(name)] if name else [item for item in WEIGHTS.values() if cache_state(item) != "not installed"]
    checked = bad = 0
    for item in items:
        for part, path, result in verify(item):
            if result is None:
                if name:
                    raise CfbenchError(f"{name}: {path} is not here; nothing to verify.")
                continue
            checked += 1
            bad += result.bad
            click.echo(f"  {result.status:<8}  {item.name}: {path}: {result.detail}")
    if not checked:
        click.echo("no published weights are cached yet (cfbench weights list)")
    if bad:
        raise CfbenchError(f"{bad} of {checked} cached weight files failed verification (lines above).")


@weights_group.command("fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
@one_line_errors
def weights_fetch(names: tuple[str, ...], no_progress: bool) -> None:
    """Download NAMES into $CFBENCH_HOME/weights (resuming a partial download, checking
    size and sha256); one line each for entries that must be downloaded by hand, and
    with CFBENCH_OFFLINE=1, which never touches the network."""
    from cfbench.download import fetch
    from cfbench.weights import entry

    for name in names:
        entry(name)  # an unknown name fails before anything is downloaded
    failed = 0
    for name in names:
        try:
            for line in fetch(name, progress=not no_progress):
                click.echo(line)
        except CfbenchError as e:
            click.echo(f"error: {e}", err=True)
            failed += 1
    if failed:
        sys.exit(2)
