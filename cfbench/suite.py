"""`cfbench suite`: every method (or the listed ones) on the same images with the same
classifier, each a normal resumable run, then the report (`cfbench.report`).

The runs land where `cfbench run` puts them, ``<runs>/<dataset>_<attr>/<run id>/``; beside
them ``suite.json`` records the suite: its settings, and per method the profile it ran,
its run id and its status (``done``, ``failed`` with the error line, ``interrupted``,
``pending``). The report reads it, so ``cfbench report <runs>/<dataset>_<attr>`` draws the
same page again.

- ``--set METHOD.KEY=VALUE`` sets a hyperparameter of one method (``--set gcd.fits=1``);
  METHOD must be one of the suite's methods.
- ``--profile P``: each method runs its profile P where it has one, else its default
  profile (the report says so); without it, every method runs its default.
- A finished run (metrics.json with every metric of the protocol, for this n) is not
  touched again; any other run resumes (`Run.execute`). Re-running an interrupted suite
  therefore continues where it stopped.
- A method whose run raises (a `CfbenchError` or any other exception) is recorded with its
  error line and the next method runs; Ctrl-C stops the suite (re-run it to resume).
- Where the classifier declares a shortcut (``synthfaces-shortcut-smile``), the metrics
  ``query_changed`` and ``shortcut_changed`` are computed too (the report's shortcut track).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_text
from cfbench.record import as_stored, json_text
from cfbench.report import SUITE_FILE, build_report

SHORTCUT_METRICS = ("query_changed", "shortcut_changed")


@dataclass
class SuiteSpec:
    """Everything `cfbench suite` takes."""

    dataset: str
    attr: str
    methods: tuple[str, ...] = ()  # empty: every registered method
    profile: str | None = None
    n: int = 100
    classifier: str | None = None
    runs_root: Path = Path("runs")
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> key -> value
    device: str = "auto"
    batch_size: int = 8
    seed: int = 0
    extra_metrics: tuple[str, ...] = ()
    progress: bool = True


@dataclass
class SuiteResult:
    folder: Path  # <runs>/<dataset>_<attr>
    report: Path | None
    entries: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry["status"] != "done"]


def parse_method_sets(values: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """``--set METHOD.KEY=VALUE`` items -> {method: {key: value}}."""
    found: dict[str, dict[str, str]] = {}
    for item in values:
        target, sep, value = item.partition("=")
        method, dot, key = target.strip().partition(".")
        if not sep or not dot or not method or not key.strip():
            raise CfbenchError(f"--set {item}: write it as METHOD.KEY=VALUE, e.g. --set gcd.fits=1.")
        found.setdefault(method, {})[key.strip()] = value.strip()
    return found


def parse_methods(text: str | None) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))
    if text is not None and not names:
        raise CfbenchError(f"--methods {text}: name methods separated by commas, e.g. identity,pgd,dime.")
    return names


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _error_line(error: BaseException) -> str:
    if isinstance(error, CfbenchError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return (text.strip().splitlines() or [type(error).__name__])[0]


def _finished(job) -> bool:
    """A run that needs nothing more: finished for this n, with every metric it computes and
    the images the report shows (a record kept without its images is generated again)."""
    info = job.record.read_info() or {}
    metrics = job.record.read_metrics() if (job.record.path / "metrics.json").exists() else None
    if not (info.get("finished") and info.get("n") == job.spec.n and metrics is not None
            and set(job.metric_names) <= set(metrics)):  # fmt: skip
        return False
    return set(range(job.spec.n)) <= job.record.finished_samples().keys()


class Suite:
    """The resolved suite: its methods, their profiles and overrides, and where it writes."""

    def __init__(self, spec: SuiteSpec):
        from cfbench.classifiers import load_classifier, parse_classifier
        from cfbench.datasets import get_dataset, resolve_attribute
        from cfbench.methods import METHODS
        from cfbench.runner import pick_device

        self.spec = spec
        if spec.n < 1 or spec.batch_size < 1:
            raise CfbenchError("--n and --batch-size must be positive.")
        pick_device(spec.device)  # a device that is not there fails once, not once per method
        self.methods = spec.methods or tuple(METHODS.names())
        self.classes = {name: METHODS.get(name) for name in self.methods}  # an unknown name fails here
        stray = sorted(set(spec.overrides) - set(self.methods))
        if stray:
            raise CfbenchError(f"--set {stray[0]}.…: {stray[0]} is not among the suite's methods "
                               f"({', '.join(self.methods)}).")  # fmt: skip
        # the classifier is resolved once, as `Run` resolves it: its shortcut, if any, adds the shortcut track
        classifier_spec = parse_classifier(spec.classifier) if spec.classifier else None
        dataset = get_dataset(spec.dataset, getattr(classifier_spec, "resolution", None))
        self.dataset_name = getattr(dataset, "record_name", None) or spec.dataset
        attribute = resolve_attribute(dataset, spec.attr)
        self.attr_key = next((q for q, a in dataset.queries.items() if a == attribute), attribute)
        self.classifier_name = (classifier_spec.name if classifier_spec is not None
                                else dataset.classifiers.get(attribute))  # fmt: skip
        if self.classifier_name is None:
            raise CfbenchError(f"{spec.dataset} has no default classifier for {attribute}; pass --classifier.")
        network = load_classifier(classifier_spec or self.classifier_name, attribute, image_size=dataset.image_size)
        self.shortcut = getattr(network, "shortcut", None)
        extra = list(spec.extra_metrics)
        if self.shortcut:
            extra += [m for m in SHORTCUT_METRICS if m not in extra]
        self.extra_metrics = tuple(extra)
        self.folder = spec.runs_root / f"{self.dataset_name}_{self.attr_key}"

    def profile_of(self, name: str) -> tuple[str, str]:
        """The profile ``name`` runs, and a note where it is not the one asked for."""
        cls = self.classes[name]
        if self.spec.profile is None or self.spec.profile == cls.default_profile:
            return cls.default_profile, ""
        if self.spec.profile in cls.profiles:
            return self.spec.profile, ""
        return cls.default_profile, f"has no {self.spec.profile} profile: ran its default, {cls.default_profile}"

    def settings(self) -> dict[str, Any]:
        """What defines the suite besides its methods (a resumed suite keeps its start date
        when these and the methods are the same), as suite.json stores it."""
        return as_stored({
            "dataset": self.dataset_name, "attr": self.attr_key, "classifier": self.classifier_name,
            "n": self.spec.n, "seed": self.spec.seed, "profile": self.spec.profile,
            "overrides": self.spec.overrides, "extra_metrics": list(self.extra_metrics),
        })  # fmt: skip

    def _write(self, started: str, entries: list[dict[str, Any]]) -> None:
        record = {**self.settings(), "shortcut": self.shortcut, "device": self.spec.device, "started": started,
                  "batch_size": self.spec.batch_size, "methods": entries}  # fmt: skip
        atomic_write_text(self.folder / SUITE_FILE, json_text(record))

    def _started(self) -> str:
        """The date of this suite: the earlier attempt's when it is the same suite resumed."""
        path = self.folder / SUITE_FILE
        try:
            old = json.loads(path.read_text()) if path.exists() else None
        except ValueError:
            old = None
        if isinstance(old, dict) and old.get("started"):
            old_methods = [e.get("method") for e in old.get("methods", []) if isinstance(e, dict)]
            if all(old.get(k) == v for k, v in self.settings().items()) and old_methods == list(self.methods):
                return str(old["started"])
        return _now()

    def execute(self, echo: Callable[[str], None] = print) -> SuiteResult:
        from cfbench.runner import Run, RunSpec

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CfbenchError(
                f"cannot write the runs to {self.folder}: {e.strerror}; choose another --runs."
            ) from None
        started = self._started()
        entries = []
        for name in self.methods:
            profile, note = self.profile_of(name)
            entries.append({"method": name, "profile": profile, "status": "pending",
                            **({"profile_note": note} if note else {})})  # fmt: skip
        self._write(started, entries)
        for entry in entries:
            name = entry["method"]
            job = None
            try:
                job = Run(RunSpec(
                    method=name, dataset=self.spec.dataset, attr=self.spec.attr, classifier=self.spec.classifier,
                    n=self.spec.n, batch_size=self.spec.batch_size, seed=self.spec.seed, device=self.spec.device,
                    overrides=dict(self.spec.overrides.get(name, {})), profile=entry["profile"],
                    extra_metrics=self.extra_metrics, runs_root=self.spec.runs_root, progress=self.spec.progress,
                ))  # fmt: skip
                entry["run_id"] = job.run_id
                if _finished(job):
                    echo(f"{name}: finished before, {job.record.path}")
                else:
                    job.execute()
                    echo(f"{name}: done, {job.record.path}")
                entry["status"] = "done"
                entry.pop("error", None)
            except KeyboardInterrupt:
                entry["status"] = "interrupted"
                self._write(started, entries)
                raise
            except Exception as e:  # noqa: BLE001 - one method failing never stops the others
                entry["status"], entry["error"] = "failed", _error_line(e)
                if job is not None:
                    entry["run_id"] = job.run_id
                echo(f"{name}: failed: {entry['error']}")
            self._write(started, entries)
        report = build_report(self.folder)
        return SuiteResult(self.folder, report, entries)


def run_suite(spec: SuiteSpec, echo: Callable[[str], None] = print) -> SuiteResult:
    return Suite(spec).execute(echo)
