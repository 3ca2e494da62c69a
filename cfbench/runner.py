"""`cfbench run`: generate counterfactuals for the first N evaluation images, record
them batch by batch, then compute the protocol's metrics.

The target of each image is the opposite of the classifier's prediction (binary
attributes, DiME §4). Success is decided on the saved 8-bit image.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from cfbench.classifiers import load_classifier, parse_classifier
from cfbench.datasets import get_dataset, resolve_attribute
from cfbench.environment import describe_environment
from cfbench.errors import CfbenchError, MissingWeights
from cfbench.files import atomic_write_bytes, atomic_write_text, exclusive_lock
from cfbench.handles import make_handle
from cfbench.losses import flag_text, overlaps
from cfbench.method import COUNTERS, Counterfactuals, Method
from cfbench.metrics import METRICS
from cfbench.metrics.attribution import complexity, sparseness
from cfbench.metrics.base import EvalData
from cfbench.metrics.protocol import protocol_metrics
from cfbench.methods import METHODS
from cfbench.oracles import DEFAULTS, NETWORKS, ROLES, EvalNetwork, load_network
from cfbench.randomness import SampleRNG, sample_seed
from cfbench.record import RunRecord, as_stored, json_text, png_bytes, quantize
from cfbench.weights import load_all, missing_weights_line, state_digest
from cfbench.visualize import comparison_grid

GRID_SAMPLES = 8


@dataclass
class RunSpec:
    """Everything `cfbench run` takes."""

    method: str
    dataset: str
    attr: str
    classifier: str | None = None
    classifier_options: dict[str, str] = field(default_factory=dict)  # --classifier-opt KEY=VALUE
    n: int = 100
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)
    out: Path | None = None
    protocol: str | None = None  # None: the dataset's
    extra_metrics: tuple[str, ...] = ()
    networks: dict[str, str] = field(default_factory=dict)
    profile: str | None = None
    runs_root: Path = Path("runs")
    progress: bool = True
    target: str = "prediction"  # a key of TARGETS
    split: str | None = None  # None: the dataset's evaluation split (`--split val` tunes on held-out images)


#: what a counterfactual is asked to reach, for binary attributes
TARGETS = {
    "prediction": "the opposite of the classifier's prediction (DiME §4; every method here)",
    "label": "the opposite of the ground-truth label (the official LDCE code, `sampling_helpers.py`)",
}


def _setting(value: Any) -> str:
    """A recorded setting as ``--set`` writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def recorded_spec(run_dir: Path, overrides: dict[str, str] | None = None, **changes: Any) -> RunSpec:
    """The `RunSpec` of the run recorded in ``run_dir``: its method, dataset, query,
    classifier, seed, profile, every setting, target, split, n, protocol, the metrics it
    computed beyond the protocol's and its evaluation networks, so that the run made again
    has the same identity (and run id). ``overrides`` change settings; ``changes`` replace
    other fields (n, batch size, device, out, …)."""
    path = Path(run_dir) / "run.json"
    try:
        info = json.loads(path.read_text())
        identity, protocol, n = info["identity"], info["protocol"], info["n"]
        method, config = identity["method"], dict(identity["config"])
        recorded = dict(dataset=identity["dataset"], attr=info.get("attr") or identity["attribute"],
                        classifier=identity["classifier"], seed=identity["seed"], profile=identity["profile"])
    except FileNotFoundError:
        raise CfbenchError(f"{run_dir}: no run.json there; name a run directory, e.g. "
                           "leaderboards/runs/synthfaces_smile/<run id>.") from None  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        raise CfbenchError(f"{path}: not a finished run record (its identity, protocol or n is missing or "
                           "unreadable).") from None  # fmt: skip
    if "dataset_source" in identity:
        raise CfbenchError(f"{run_dir} explained an image folder ({identity['dataset_source']}); run it again with "
                           "cfbench run --dataset imagefolder:PATH.")  # fmt: skip
    gone = sorted(config.keys() - {f.name for f in fields(METHODS.get(method).Config)})
    if gone:
        raise CfbenchError(f"{run_dir} has settings this version of {method} no longer has "
                           f"({', '.join(gone)}); it cannot be made again as recorded.")  # fmt: skip
    try:
        computed = json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        computed = {}
    extra = tuple(m for m in computed if m not in protocol_metrics(protocol) and m in METRICS)
    recorded_networks = (key.partition(" ") for key in info.get("weights", {}))  # "oracle synthfaces-oracle"
    networks = {role: name for role, _, name in recorded_networks if role in ROLES}
    return replace(RunSpec(
        method=method, **recorded, n=n,
        overrides={**{k: _setting(v) for k, v in config.items()}, **(overrides or {})}, protocol=protocol,
        extra_metrics=extra, networks=networks, target=identity.get("target", "prediction"),
        split=identity.get("split"),
    ), **changes)  # fmt: skip


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise CfbenchError(f"--device {name}: use auto, cpu or cuda.")
    if name == "cuda" and not torch.cuda.is_available():
        raise CfbenchError("--device cuda: no CUDA device is available; use --device cpu.")
    return torch.device(name)


class Run:
    """One resolved run: validated inputs, its record, and the loop that fills it."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        if spec.n < 1 or spec.batch_size < 1:
            raise CfbenchError("--n and --batch-size must be positive.")
        self.method_cls: type[Method] = METHODS.get(spec.method)
        if spec.classifier_options and not spec.classifier:
            raise CfbenchError("--classifier-opt declares the network of --classifier; pass --classifier too.")
        # what the classifier declares comes first: an image folder takes its resolution from it
        self.classifier_spec = parse_classifier(spec.classifier, spec.classifier_options) if spec.classifier else None
        self.dataset = get_dataset(spec.dataset, getattr(self.classifier_spec, "resolution", None))
        #: how records name the dataset: its registry name, or a file-name-safe one for imagefolder:PATH
        self.dataset_name = getattr(self.dataset, "record_name", None) or spec.dataset
        #: the dataset whose method settings and evaluation networks apply (celeba-minival: celeba's)
        self.family = getattr(self.dataset, "family", "") or spec.dataset
        self.attribute = resolve_attribute(self.dataset, spec.attr)
        self.split_name = spec.split or self.dataset.eval_split
        if self.split_name not in self.dataset.splits:
            splits = ", ".join(self.dataset.splits)
            raise CfbenchError(f"--split {self.split_name}: {spec.dataset} has the splits {splits}.")
        self.split = self.dataset.split(self.split_name)
        if spec.n > len(self.split):
            raise CfbenchError(
                f"--n {spec.n} is larger than the {self.split_name} split of {spec.dataset} "
                f"({len(self.split)} images); use --n {len(self.split)} or less."
            )
        self.attribute_index = self.dataset.attributes.index(self.attribute)
        if spec.target not in TARGETS:
            raise CfbenchError(f"--target {spec.target}: use {' or '.join(TARGETS)}.")
        self.attr_key = next((q for q, a in self.dataset.queries.items() if a == self.attribute), self.attribute)
        self.classifier_name = (self.classifier_spec.name if self.classifier_spec is not None
                                else self.dataset.classifiers.get(self.attribute))  # fmt: skip
        if self.classifier_name is None:
            raise CfbenchError(f"{spec.dataset} has no default classifier for {self.attribute}; pass --classifier.")
        self.protocol = spec.protocol or self.dataset.protocol
        self.metric_names = tuple(dict.fromkeys((*protocol_metrics(self.protocol), *spec.extra_metrics)))
        for name in self.metric_names:
            METRICS.entry(name)  # an unknown metric fails now, before any image is generated
        for role, name in spec.networks.items():
            if role not in ROLES:
                raise CfbenchError(f"--network {role}={name}: unknown role; known: {', '.join(ROLES)}.")
            NETWORKS.entry(name)
        self.evaluated_by: dict[str, list[str]] = {}  # metric -> the evaluation networks it uses
        roles: set[str] = set()
        for name in self.metric_names:  # every network a metric needs must be known before the run starts
            for role in sorted(ROLES.keys() & METRICS.get(name).needs):
                network = spec.networks.get(role) or DEFAULTS.get(self.family, {}).get(role)
                if network is None:
                    raise CfbenchError(
                        f"metric {name} needs a {role} network, which {spec.dataset} does not name; "
                        f"pass --network {role}=NAME or --protocol cfbench-v1."
                    )
                self.evaluated_by.setdefault(name, []).append(network)
                roles.add(role)
        self.profile = spec.profile or self.method_cls.default_profile
        self.config = self.method_cls.resolve_config(self.family, self.profile, spec.overrides, self.attr_key)
        self.device = pick_device(spec.device)
        # every network the run needs is located and read before anything is written or generated;
        # the published files that are missing are listed together, in one line
        eval_roles = sorted(roles)
        try:
            self.network, self.method, *eval_networks = load_all(
                lambda: load_classifier(self.classifier_spec or self.classifier_name, self.attribute,
                                        image_size=self.dataset.image_size).to(self.device),
                lambda: self.method_cls(self.config, self.device),
                *(lambda role=role: load_network(role, self.family, spec.networks.get(role)).to(self.device)
                  for role in eval_roles),
            )  # fmt: skip
        except MissingWeights as e:
            raise CfbenchError(missing_weights_line(e.names)) from None
        self.eval_networks: dict[str, EvalNetwork] = dict(zip(eval_roles, eval_networks))
        self.null_method = self.method.null_edit()
        self.loss_networks = self.method.loss_networks()
        self.flags: dict[str, list[str]] = {}  # flag text -> the metrics it concerns
        for term, loss_network in self.loss_networks.items():
            shared = overlaps(loss_network, self.evaluated_by)  # refused unless the loss network flags it
            if shared:
                self.flags[f"{term}: {flag_text(loss_network, shared)}"] = shared
        self.weights = {
            f"classifier {self.classifier_name}": state_digest(self.network),
            **{name: state_digest(module) for name, module in self.method.networks().items()},
            **{f"{role} {net.name}": state_digest(net.module) for role, net in self.eval_networks.items()},
        }
        # as run.json stores it (tuples become lists), so that a resumed run compares equal
        self.identity = as_stored({
            "method": spec.method,
            "dataset": self.dataset_name,
            **({"dataset_source": self.dataset.record_source} if getattr(self.dataset, "record_source", None) else {}),
            "attribute": self.attribute,
            "classifier": self.classifier_name,
            "seed": spec.seed,
            "profile": self.profile,
            "config": self.config.to_dict(),
            **({"target": spec.target} if spec.target != "prediction" else {}),  # the default keeps run ids
            **({"split": self.split_name} if self.split_name != self.dataset.eval_split else {}),
        })
        run_dir = spec.runs_root / f"{self.dataset_name}_{self.attr_key}" / self.default_name()
        self.record = RunRecord(spec.out or run_dir)

    def default_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.spec.method}-{self.profile}-s{self.spec.seed}-{digest}"

    @property
    def run_id(self) -> str:
        return self.record.path.name

    # -- the loop -------------------------------------------------------------------
    def execute(self, evaluate: bool = True) -> dict[str, Any]:
        """Generate what is missing, then (unless ``evaluate`` is False) compute and write
        the metrics."""
        self.record.open(
            self.identity,
            {
                "run_id": self.run_id,
                "attr": self.attr_key,
                "protocol": self.protocol,
                "access": self.method_cls.access,
                "paper": self.method_cls.paper,
                "row_settings": list(self.method_cls.row_settings),
                "loss_networks": self.loss_networks,
                "flags": list(self.flags),
                "environment": describe_environment(self.device, self.spec.seed),
            },
            self.weights,
        )
        with exclusive_lock(self.record.path / ".lock", wait=False, what=f"run directory {self.record.path}"):
            network = self.network
            method = self.method
            if method.fits():
                self._fit(method, network)
            done = self.record.finished_samples()
            todo = [i for i in range(self.spec.n) if i not in done]
            if self.null_method is not None:  # samples finished before the run had null edits get theirs
                missing = [i for i, sample_id in done.items() if i < self.spec.n
                           and not self.record.has_image("null", sample_id)]  # fmt: skip
                for start in tqdm(range(0, len(missing), self.spec.batch_size), desc="null edits", unit="batch",
                                  disable=not (self.spec.progress and missing)):  # fmt: skip
                    chunk = missing[start : start + self.spec.batch_size]
                    ids, labels, _, x, logits = self._inputs(network, chunk)
                    self.record.update_rows(self._null_batch(network, chunk, ids, x, self._targets(labels, logits)))
            bar = tqdm(
                total=self.spec.n,
                initial=self.spec.n - len(todo),
                unit="img",
                desc=f"{self.spec.method} on {self.spec.dataset}/{self.attribute}",
                disable=not self.spec.progress,
            )
            with bar:
                for start in range(0, len(todo), self.spec.batch_size):
                    chunk = todo[start : start + self.spec.batch_size]
                    self.record.append_rows(self._explain_batch(method, network, chunk))
                    bar.update(len(chunk))
            if not evaluate:
                return {}
            table = self.record.read_table()
            table = table[table["index"] < self.spec.n].reset_index(drop=True)
            metrics = self._metrics(table, network)
            self.record.write_metrics(metrics)
            self._write_grid(table)
            self.record.write_info({**self.record.read_info(), "n": self.spec.n, "finished": time.time()})
        return metrics

    def _fit(self, method: Method, network: torch.nn.Module) -> None:
        """`Method.fit` once per run: its artifacts in ``<run>/method/``, its cost in run.json;
        a finished fit (``fit.json`` written last) is loaded instead of redone."""
        directory = self.record.path / "method"
        done = directory / "fit.json"
        if done.exists():
            method.load_fit(directory)
            return
        directory.mkdir(exist_ok=True)
        handle = make_handle(self.method_cls.access, network, 1, pooled=True)
        generator = torch.Generator().manual_seed(sample_seed(self.spec.seed, "fit"))
        method.progress = self.spec.progress
        began = time.perf_counter()
        counters = method.fit(self.split, handle, generator, directory)
        cost = {**{k: int(v) for k, v in counters.items()},
                **{k: int(v.sum()) for k, v in handle.counters().items()}, "seconds": time.perf_counter() - began}
        atomic_write_text(done, json_text(cost))
        self.record.write_info({**self.record.read_info(), "fit": cost})

    def _inputs(self, network: torch.nn.Module, indices: list[int]):
        """The samples ``indices`` as the method gets them (quantised, in [0, 1], on the
        device), with their ids, labels, the uint8 originals and the classifier's logits."""
        ids, images, labels = self.split.batch(indices)
        originals = quantize(images)
        x = originals.float().div(255).to(self.device)
        return ids, labels, originals, x, self._logits(network, originals)

    def _targets(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The class each counterfactual is asked for (`TARGETS`)."""
        if self.spec.target == "label":
            return 1 - labels[:, self.attribute_index].long()
        return 1 - (logits > 0).long()

    def _logits(self, network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The classifier's logits of saved (uint8) images, on the CPU."""
        with torch.no_grad():
            return network(images.float().div(255).to(self.device)).reshape(-1).cpu()

    def _explain_batch(self, method: Method, network: torch.nn.Module, indices: list[int]) -> list[dict[str, Any]]:
        ids, labels, originals, x, logits = self._inputs(network, indices)
        preds = (logits > 0).long()
        targets = self._targets(labels, logits)
        handle = make_handle(self.method_cls.access, network, len(indices))
        rng = SampleRNG(self.spec.seed, ids)  # each sample's own generator: no dependence on the batch
        torch.manual_seed(sample_seed(self.spec.seed, ids[0]))  # for plugins that draw from torch's generator
        began = time.perf_counter()
        result = method.explain(x, targets.to(self.device), handle, rng)
        elapsed = (time.perf_counter() - began) / len(indices)
        self._check(result, x, ids)
        counterfactuals = quantize(result.images)
        cf_logits = self._logits(network, counterfactuals)
        cf_preds = (cf_logits > 0).long()
        null_rows = self._null_batch(network, indices, ids, x, targets) if self.null_method is not None else None
        counters = {name: result.counters.get(name, torch.zeros(len(ids), dtype=torch.long)) for name in COUNTERS}
        rows = []
        for k, (index, sample_id) in enumerate(zip(indices, ids)):
            self.record.save_image("originals", sample_id, originals[k])
            self.record.save_image("counterfactuals", sample_id, counterfactuals[k])
            if result.masks is not None:
                self.record.save_image("masks", sample_id, quantize(result.masks[k : k + 1])[0])
            if result.pre_explanations is not None:
                self.record.save_image("pre_explanations", sample_id, quantize(result.pre_explanations[k : k + 1])[0])
            if result.attributions is not None:
                self.record.save_array("attributions", sample_id, result.attributions[k])
            if result.directions is not None:
                self.record.save_array("directions", sample_id, result.directions[k])
            if result.path_logits is not None:
                self.record.save_array("path_logits", sample_id, result.path_logits[k])
            rows.append(
                {
                    "index": index,
                    "id": sample_id,
                    "label": int(labels[k, self.attribute_index]),
                    "logit": float(logits[k]),
                    "pred": int(preds[k]),
                    "target": int(targets[k]),
                    "cf_logit": float(cf_logits[k]),
                    "cf_pred": int(cf_preds[k]),
                    "success": bool(cf_preds[k] == targets[k]),
                    "method_success": bool(result.success[k]),
                    **{f"success_{name}": bool(flips[k]) for name, flips in result.candidate_success.items()},
                    **{name: int(counters[name][k]) for name in COUNTERS},
                    "seconds": elapsed,
                    **({} if result.masks is None else {"mask_area": float(result.masks[k].float().mean())}),
                    **({} if result.attributions is None else {
                        "attribution_sparseness": float(sparseness(result.attributions[k : k + 1])[0]),
                        "attribution_complexity": float(complexity(result.attributions[k : k + 1])[0])}),
                    **(null_rows[k] if null_rows else {}),
                }
            )
        return rows

    def _null_batch(self, network: torch.nn.Module, indices: list[int], ids: list[str], x: torch.Tensor,
                    targets: torch.Tensor) -> list[dict[str, Any]]:
        """The null edit (`Method.null_edit`) of the samples ``indices``, from the same
        per-sample randomness as their counterfactuals: saved under ``null/`` and judged by
        the classifier on the saved image (``null_success``: it shows the target)."""
        handle = make_handle(self.method_cls.access, network, len(indices))
        result = self.null_method.explain(x, targets.to(self.device), handle, SampleRNG(self.spec.seed, ids))
        self._check(result, x, ids)
        nulls = quantize(result.images)
        logits = self._logits(network, nulls)
        rows = []
        for k, (index, sample_id) in enumerate(zip(indices, ids)):
            self.record.save_image("null", sample_id, nulls[k])
            rows.append({"index": index, "null_logit": float(logits[k]), "null_pred": int(logits[k] > 0),
                         "null_success": bool(int(logits[k] > 0) == int(targets[k]))})  # fmt: skip
        return rows

    @staticmethod
    def _check(result: Counterfactuals, x: torch.Tensor, ids: list[str]) -> None:
        if not isinstance(result, Counterfactuals) or result.images.shape != x.shape:
            raise CfbenchError(f"the method returned counterfactuals of the wrong shape for samples {ids[0]}…")
        bad = ~torch.isfinite(result.images).flatten(1).all(dim=1)
        if bad.any():
            names = [ids[i] for i in bad.nonzero().flatten().tolist()]
            raise CfbenchError(
                f"the method produced NaN/inf for {', '.join(names)}; earlier samples are saved, "
                "check the method's settings (--set) before resuming."
            )

    # -- evaluation -------------------------------------------------------------------
    @staticmethod
    def load_pairs(record: RunRecord, table: pd.DataFrame, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = table["id"].iloc[rows]
        originals = torch.stack([record.load_image("originals", i) for i in ids])
        counterfactuals = torch.stack([record.load_image("counterfactuals", i) for i in ids])
        return originals, counterfactuals

    def _eval_data(self, record: RunRecord, table: pd.DataFrame, network: torch.nn.Module) -> EvalData:
        return EvalData(
            table=table,
            load=lambda rows: self.load_pairs(record, table, rows),
            classifier=network,
            device=self.device,
            batch_size=self.spec.batch_size,
            dataset=self.spec.dataset,
            attribute=self.attribute,
            networks=dict(self.spec.networks),
            _loaded=dict(self.eval_networks),
        )

    def other_seeds(self) -> list[RunRecord]:
        """Finished runs beside this one that differ from it only by the seed (σL, DiME eq. 11)."""
        siblings = []
        for path in sorted(self.record.path.parent.glob("*/run.json")):
            other = RunRecord(path.parent)
            identity = (other.read_info() or {}).get("identity", {})
            if other.path != self.record.path and identity.get("seed") != self.spec.seed and {
                **identity, "seed": self.spec.seed
            } == self.identity and other.table_path.exists():
                siblings.append(other)
        return siblings

    def _metrics(self, table: pd.DataFrame, network: torch.nn.Module) -> dict[str, Any]:
        data = self._eval_data(self.record, table, network)
        for other in self.other_seeds():
            rows = other.read_table()
            rows = rows[rows["index"] < self.spec.n].reset_index(drop=True)
            data.other_seeds.append(self._eval_data(other, rows, network))
        results = {}
        for name in self.metric_names:
            metric = METRICS.get(name)()
            results[name] = {**metric.compute(data).to_dict(), "higher_is_better": metric.higher_is_better}
            flags = [text for text, metrics in self.flags.items() if name in metrics]
            if flags:
                results[name]["flags"] = flags
        return results

    def _write_grid(self, table: pd.DataFrame) -> None:
        rows = list(range(min(GRID_SAMPLES, len(table))))
        originals, counterfactuals = self.load_pairs(self.record, table, rows)
        ids = table["id"].iloc[rows]
        masks, pre = (
            torch.stack([self.record.load_image(kind, i) for i in ids])
            if all(self.record.has_image(kind, i) for i in ids) else None
            for kind in ("masks", "pre_explanations")
        )
        attributions = (torch.stack([self.record.load_array("attributions", i) for i in ids])
                        if all(self.record.has_array("attributions", i) for i in ids) else None)  # fmt: skip
        grid = comparison_grid(originals, counterfactuals, masks, pre, attributions)
        atomic_write_bytes(self.record.path / "grid.png", png_bytes(grid))
