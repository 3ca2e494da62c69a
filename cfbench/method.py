"""The Method contract: a config dataclass of paper hyperparameters, an optional `fit`
and `explain`.

A method gets a batch of images in [0, 1], the target label of each, a classifier
handle of the kind it declared (`access`): white-box (differentiable) or black-box
(query-only), and the batch's `SampleRNG` (every random draw comes from it, so that a
counterfactual does not depend on its batch). It returns `Counterfactuals`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from cfbench.errors import CfbenchError
from cfbench.handles import ClassifierHandle
from cfbench.randomness import SampleRNG

Access = Literal["white-box", "black-box"]
COUNTERS = ("diffusion_evals", "diffusion_gradients", "classifier_queries", "classifier_gradients")


def hparam(default: Any, section: str, help: str = "", *, choices: tuple[Any, ...] | None = None,
           low: float | None = None, high: float | None = None) -> Any:
    """A config field with its paper default and the paper section it comes from; a
    value outside ``choices`` or the range [``low``, ``high``] is refused (`MethodConfig.validate`)."""
    kwargs = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(metadata={"section": section, "help": help, "choices": choices, "low": low, "high": high}, **kwargs)


@dataclass
class MethodConfig:
    """Base of every method's hyperparameters; subclasses declare fields with `hparam`."""

    def replace(self, overrides: dict[str, str]) -> "MethodConfig":
        """A copy with ``--set key=value`` strings parsed to each field's type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        values = {}
        for key, text in overrides.items():
            if key not in fields:
                known = ", ".join(fields) or "none"
                raise CfbenchError(f"--set {key}: {type(self).__name__} has no such key (keys: {known}).")
            values[key] = _parse(key, text, getattr(self, key))
        return dataclasses.replace(self, **values)

    def validate(self, overrides: dict[str, str] | None = None) -> "MethodConfig":
        """Check every field against its ``choices`` and range; the message names the
        ``--set`` that gave a bad value."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            values = value if isinstance(value, (list, tuple)) else [value]
            choices, low, high = meta.get("choices"), meta.get("low"), meta.get("high")
            where = f"--set {f.name}={overrides[f.name]}" if overrides and f.name in overrides else f"{f.name}={value!r}"
            if choices is not None and any(v not in choices for v in values):
                raise CfbenchError(f"{where}: {f.name} must be one of {', '.join(map(str, choices))}.")
            if any((low is not None and v < low) or (high is not None and v > high) for v in values):
                bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
                raise CfbenchError(f"{where}: {f.name} must be {bounds}.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _scalar(kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError
        return lowered in ("true", "1", "yes")
    return kind(text)


def _parse(key: str, text: str, current: Any) -> Any:
    kind = type(current)
    try:
        if kind in (list, tuple):
            item = type(current[0]) if current else str
            return kind(_scalar(item, v) for v in text.split(",") if v != "")
        return _scalar(kind, text)
    except (ValueError, TypeError):  # TypeError: a field whose default (None) gives no type
        raise CfbenchError(f"--set {key}={text}: expected a {kind.__name__}, like {current!r}.") from None


@dataclass
class Counterfactuals:
    """What `Method.explain` returns for a batch of N images.

    ``images`` are in [0, 1] with the input's shape; ``success`` is the method's own
    view (the harness re-decides success on the saved image); optional ``masks``
    (N, 1, H, W), ``pre_explanations`` (N, C, H, W: an intermediate image the method
    refines, ACE's x′), ``attributions`` (N, 1, H, W), ``directions`` (N, D) and
    ``path_logits`` (N, L: the classifier's logits along the method's path to the
    counterfactual, GCD's line search); ``candidate_success`` maps each candidate a method
    chose among (GCD's directions) to its own (N,) success, saved as ``success_<name>``;
    ``counters`` maps each name of `COUNTERS` to an (N,) integer tensor.
    """

    images: torch.Tensor
    success: torch.Tensor
    masks: torch.Tensor | None = None
    pre_explanations: torch.Tensor | None = None
    attributions: torch.Tensor | None = None
    directions: torch.Tensor | None = None
    path_logits: torch.Tensor | None = None
    candidate_success: dict[str, torch.Tensor] = field(default_factory=dict)
    counters: dict[str, torch.Tensor] = field(default_factory=dict)


class Method:
    """Base class of method plugins.

    Subclasses set ``Config``, ``access`` and ``paper``, may give per-dataset
    config overrides in ``dataset_configs``, named ``profiles`` (``quick`` /
    ``paper``), overrides of a profile on one dataset in ``dataset_profiles``
    (``{(dataset, profile): {...}}``) and the ``row_settings`` that give a run a leaderboard row of its own,
    and implement `explain`.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    access: ClassVar[Access] = "white-box"
    paper: ClassVar[str] = ""
    dataset_configs: ClassVar[dict[str, dict[str, Any]]] = {}
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}}
    dataset_profiles: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    default_profile: ClassVar[str] = "paper"
    #: config fields shown after the profile in a run's leaderboard ``variant`` (``quick/naive``)
    row_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MethodConfig, device: torch.device | str = "cpu"):
        self.config = config.validate()
        self.device = torch.device(device)
        #: whether long phases (a fit) show a progress bar; the harness follows ``--no-progress``
        self.progress = True

    @classmethod
    def resolve_config(cls, dataset: str, profile: str | None, overrides: dict[str, str],
                       query: str | None = None) -> MethodConfig:
        """Paper defaults, then the dataset's config, then the profile (and its override on
        this dataset), then ``--set``; ``query`` (smile, age, …) is there for methods whose
        paper settings depend on it."""
        profile = profile or cls.default_profile
        if profile not in cls.profiles:
            raise CfbenchError(f"--profile {profile}: unknown; this method has {', '.join(cls.profiles)}.")
        base = dataclasses.replace(cls.Config(), **cls.dataset_configs.get(dataset, {}))
        base = dataclasses.replace(base, **{**cls.profiles[profile], **cls.dataset_profiles.get((dataset, profile), {})})
        return base.replace(overrides).validate(overrides)

    def loss_networks(self) -> dict[str, str]:
        """The loss networks (`cfbench.losses`) the objective uses, by the paper's name of
        the term (``{"L_perc": "vgg19-imagenet"}``); the harness records them and keeps
        them apart from the evaluation networks."""
        return {}

    def networks(self) -> dict[str, torch.nn.Module]:
        """Every network the method loaded, by a name of its choice: run.json records the
        digest of each, and a resumed run must hold the same weights."""
        return {}

    def null_edit(self) -> "Method | None":
        """The method at its own settings with no guidance (a diffusion method's edit-free
        round trip through its backbone), or None. The harness runs it on every image with
        the same per-sample randomness and reports its flip rate, ``fr_null``, beside ``fr``:
        a method is credited only with what it adds to what its backbone does unasked."""
        return None

    def fit(self, split: Any, classifier: ClassifierHandle, generator: torch.Generator,
            directory: Path) -> dict[str, int]:
        """Learn before explaining (GCD's proxy and directions) from the dataset ``split``
        (its ``batch(indices) -> (ids, images, labels)``), writing whatever `load_fit` needs
        into ``directory``; returns its counters (``diffusion_evals``). The harness counts
        the classifier's queries and gradients (the handle pools them), times it, and skips
        it when a run resumes after a finished fit. Methods that learn nothing leave it."""
        raise NotImplementedError

    def load_fit(self, directory: Path) -> None:
        """Restore what `fit` wrote into ``directory``."""
        raise NotImplementedError

    @classmethod
    def fits(cls) -> bool:
        """Whether the method learns before it explains (it overrides `fit`)."""
        return cls.fit is not Method.fit

    def explain(self, images: torch.Tensor, targets: torch.Tensor, classifier: ClassifierHandle,
                rng: SampleRNG) -> Counterfactuals:
        raise NotImplementedError
