"""Registry of the classifiers to explain.

An entry is a factory ``f(attribute: str) -> nn.Module`` whose module maps images in
[0, 1] to one logit per image for that attribute. Datasets name their default
classifier per attribute (`Dataset.classifiers`).

``--classifier`` also takes a classifier of yours (`parse_classifier`): ``module:factory``
(a callable returning an ``nn.Module``, called with the attribute name when it has a
required argument), a TorchScript file (``.pt``/``.ts``, read with ``torch.jit.load``,
never a pickle), or a ``.yaml``/``.yml``/``.json`` file with ``path`` or ``factory`` and
the declarations of `OPTIONS`: the input ``range`` it expects, the ``index`` of the query
among its outputs, ``logits=2`` for a softmax pair, its ``resolution``. It is wrapped to
the contract above and tried once on a probe batch when loaded.
"""
from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cfbench.errors import CfbenchError
from cfbench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

CLASSIFIERS = Registry("classifier", "cfbench.classifiers")
CLASSIFIERS.lazy(
    "synthfaces-densenet",
    "cfbench.zoo:synthfaces_densenet",
    description="synthfaces DenseNet-BC (k=12), one logit per attribute, trained by cfbench zoo",
    paper="cfbench zoo (stands in for the DiME/ACE CelebA DenseNet-121)",
)
CLASSIFIERS.lazy(
    "synthfaces-shortcut-smile",
    "cfbench.zoo:synthfaces_shortcut_smile",
    description="synthfaces Smiling classifier trained where Rosy_Cheeks always co-occurs (planted shortcut)",
    paper="cfbench zoo",
)
CLASSIFIERS.lazy(
    "celeba-densenet121",
    "cfbench.published_classifiers:celeba_densenet121",
    description="DiVE/DiME CelebA DenseNet-121, 40 attribute logits, 128 px (classifier.pth in the weights cache)",
    paper="Rodriguez et al., ICCV 2021 (DiVE); explained by DiME, ACCV 2022 and ACE, CVPR 2023",
)
CLASSIFIERS.lazy(
    "celebahq-densenet",
    "cfbench.published_classifiers:celebahq_densenet",
    description="STEEX CelebA-HQ DecisionDensenet (DenseNet-121): Male, Smiling, Young; 256 px (its checkpoint.tar)",
    paper="Jacob et al., ECCV 2022 (STEEX); explained by ACE, CVPR 2023, LDCE and GCD, ECCV 2024",
)


#: what a classifier of yours declares (``--classifier-opt KEY=VALUE`` or a classifier file's keys)
OPTIONS = {
    "range": "the input range the network expects, LOW,HIGH: 0,1 (default) or -1,1; the harness gives [0, 1]",
    "index": "which output is the query's logit, for a network with K > 1 outputs (N, K)",
    "logits": "1 (default): logits as they are; 2: a softmax pair (N, 2), logit = l[index] - l[1 - index], index 1 "
              "by default",
    "resolution": "the input size the network expects: images are resized to it; an image folder's default",
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
SCRIPT_SUFFIXES = (".pt", ".ts")
#: the probe batch's input size when neither the classifier nor the dataset says one
PROBE_SIZE = 128


@dataclass(frozen=True)
class ClassifierSpec:
    """A resolved ``--classifier``: a registered name (``kind="registered"``), a
    ``module:factory`` (``"factory"``) or a TorchScript file (``"torchscript"``), with what
    it declares. ``name`` is how run records name it (declarations included)."""

    kind: str
    target: str
    name: str
    low: float = 0.0
    high: float = 1.0
    index: int | None = None
    logits: int = 1
    resolution: int | None = None
    search: tuple[str, ...] = ()  # folders a module:factory is also imported from


def _number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")) or isinstance(value, bool):
        raise CfbenchError(f"{what}: {value!r} is not a number.")
    return number


def _declarations(raw: dict[str, object]) -> dict[str, object]:
    """Validated declarations (`OPTIONS`) from strings or a file's values."""
    out: dict[str, object] = {}
    for key, value in raw.items():
        what = f"classifier option {key}={value}"
        if key not in OPTIONS:
            raise CfbenchError(f"unknown classifier option {key!r}; known: {', '.join(OPTIONS)}.")
        if key == "range":
            parts = list(value) if isinstance(value, (list, tuple)) else str(value).strip("[]() ").split(",")
            if len(parts) != 2:
                raise CfbenchError(f"{what}: write the input range as LOW,HIGH, e.g. range=-1,1.")
            low, high = (_number(str(p).strip(), what) for p in parts)
            if not low < high:
                raise CfbenchError(f"{what}: LOW must be below HIGH.")
            out["low"], out["high"] = low, high
        else:
            text = str(value).strip()
            if isinstance(value, bool) or not text.lstrip("-").isdigit():
                raise CfbenchError(f"{what}: not an integer.")
            number = int(text)
            if key == "index" and number < 0 or key == "resolution" and number < 1:
                raise CfbenchError(f"{what}: must be {'0 or more' if key == 'index' else 'positive'}.")
            if key == "logits" and number not in (1, 2):
                raise CfbenchError(f"{what}: 1 (logits as they are) or 2 (a softmax pair).")
            out[key] = number
    return out


def parse_classifier(text: str, options: dict[str, str] | None = None) -> ClassifierSpec:
    """What ``--classifier TEXT`` (with ``--classifier-opt`` ``options``) names, checked
    without loading anything: a registered name; a classifier file ``.yaml``/``.yml``/``.json``
    (keys ``path`` or ``factory``, and `OPTIONS`; YAML needs PyYAML); a TorchScript file
    (``.pt``/``.ts``, or any existing file); or ``module:factory``."""
    from pathlib import Path

    text, options = text.strip(), dict(options or {})
    suffix = Path(text).suffix.lower()
    if text in CLASSIFIERS and ":" not in text and suffix not in (*CONFIG_SUFFIXES, *SCRIPT_SUFFIXES):
        if options:
            raise CfbenchError(f"--classifier-opt declares a module:factory or TorchScript classifier; the registered "
                               f"{text!r} already takes [0, 1] images and gives one logit.")  # fmt: skip
        return ClassifierSpec("registered", text, text)
    path = Path(text).expanduser()
    raw: dict[str, object] = {}
    search: tuple[str, ...] = (str(Path.cwd()),)
    if path.suffix.lower() in CONFIG_SUFFIXES:
        from cfbench.datasets.imagefolder import read_mapping

        if not path.is_file():
            raise CfbenchError(f"classifier file {path} does not exist.")
        data = read_mapping(path, "classifier file")
        unknown = sorted(set(data) - {"path", "factory", *OPTIONS})
        if unknown:
            raise CfbenchError(f"classifier file {path}: unknown key {unknown[0]!r}; known: path, factory, "
                               f"{', '.join(OPTIONS)}.")  # fmt: skip
        if ("path" in data) == ("factory" in data):
            raise CfbenchError(f"classifier file {path}: give one of path (a TorchScript file) or factory "
                               "(module:callable).")  # fmt: skip
        raw = {k: v for k, v in data.items() if k in OPTIONS}
        search = (str(path.parent.resolve()),)
        if "path" in data:  # relative to the classifier file's folder
            kind, target = "torchscript", str(path.parent / Path(str(data["path"])).expanduser())
        else:
            kind, target = "factory", str(data["factory"]).strip()
    elif path.suffix.lower() in SCRIPT_SUFFIXES or path.is_file():
        kind, target = "torchscript", text
    elif ":" in text:
        kind, target = "factory", text
    else:
        try:
            CLASSIFIERS.entry(text)
        except CfbenchError as e:
            raise CfbenchError(f"{str(e).rstrip('.')}; --classifier also takes module:factory, a TorchScript .pt/.ts "
                               "file or a .yaml/.json classifier file.") from None  # fmt: skip
        return ClassifierSpec("registered", text, text)
    if kind == "factory":
        module, _, attr = target.partition(":")
        if not module.strip() or not attr.strip():
            raise CfbenchError(f"--classifier {target}: write a factory as module:callable (e.g. mynets:make).")
    declared = _declarations({**raw, **options})  # the command line wins over the file
    shown = []
    if "low" in declared and (declared["low"], declared["high"]) != (0.0, 1.0):
        shown.append(f"range={declared['low']:g},{declared['high']:g}")
    shown += [f"{k}={declared[k]}" for k in ("index", "logits", "resolution") if k in declared]
    name = f"{text} [{' '.join(shown)}]" if shown else text
    return ClassifierSpec(kind, target, name, search=search, **declared)  # type: ignore[arg-type]


def load_classifier(name: str | ClassifierSpec, attribute: str, options: dict[str, str] | None = None,
                    image_size: int | None = None) -> nn.Module:
    """The classifier network ``name`` (see `parse_classifier`) for ``attribute``, in eval
    mode, mapping images in [0, 1] to one logit (N,). A classifier of yours is wrapped to
    its declarations and tried once on a batch of ``image_size`` images (else its declared
    resolution, else 128): every problem is a `CfbenchError` before anything runs."""
    spec = name if isinstance(name, ClassifierSpec) else parse_classifier(name, options)
    if spec.kind == "registered":
        factory = CLASSIFIERS.get(spec.target)
        supported = getattr(factory, "attributes", None)
        if supported is not None and attribute not in supported:
            raise CfbenchError(
                f"classifier {spec.target!r} does not predict {attribute!r} (it predicts {', '.join(supported)})."
            )
        return factory(attribute).eval()
    network = _load_torchscript(spec) if spec.kind == "torchscript" else _call_factory(spec, attribute)
    wrapped = _declared_classifier()(network, spec).eval()
    _probe(wrapped, spec, image_size or spec.resolution or PROBE_SIZE)
    return wrapped


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _load_torchscript(spec: ClassifierSpec) -> nn.Module:
    """A TorchScript archive, read with ``torch.jit.load`` (never a pickle)."""
    from pathlib import Path

    import warnings

    import torch

    path = Path(spec.target).expanduser()
    if not path.is_file():
        raise CfbenchError(f"classifier file {path} does not exist.")
    hint = ("save your network with torch.jit.save(torch.jit.script(net), PATH) or torch.jit.trace; "
            "pickled files (torch.save) are never loaded")  # fmt: skip
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if not any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise CfbenchError(f"classifier file {path} is not a TorchScript file: {hint}.")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 calls TorchScript deprecated; it still loads
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure of the archive is the user's file
        raise CfbenchError(f"classifier file {path}: torch.jit.load failed ({_one_line(e)}); {hint}.") from None


def _call_factory(spec: ClassifierSpec, attribute: str) -> nn.Module:
    """``module:callable`` imported (from sys.path, then the current folder or the classifier
    file's) and called, with the attribute name when it has a required argument."""
    import functools
    import importlib
    import inspect
    import sys

    from torch import nn

    module_name, _, attr = (part.strip() for part in spec.target.partition(":"))
    added = [folder for folder in spec.search if folder not in sys.path]
    sys.path.extend(added)
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                raise CfbenchError(f"classifier factory {spec.target}: no module named {e.name!r} (put its folder on "
                                   "PYTHONPATH or run from it).") from None  # fmt: skip
            failed = e
        except Exception as e:  # noqa: BLE001 - the user's module
            failed = e
        else:
            failed = None
        if failed is not None:
            raise CfbenchError(f"classifier factory {spec.target}: importing {module_name} failed "
                               f"({_one_line(failed)}).")  # fmt: skip
        try:
            factory = functools.reduce(getattr, attr.split("."), module)
        except AttributeError:
            raise CfbenchError(f"classifier factory {spec.target}: module {module_name} has no {attr!r}.") from None
        if not callable(factory):
            raise CfbenchError(f"classifier factory {spec.target}: {attr!r} is not callable.")
        try:
            parameters = [p for p in inspect.signature(factory).parameters.values()
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]  # fmt: skip
        except (TypeError, ValueError):
            parameters = []
        takes_attribute = any(p.default is p.empty or p.name == "attribute" for p in parameters)
        try:
            network = factory(attribute) if takes_attribute else factory()
        except Exception as e:  # noqa: BLE001 - the user's factory
            called = f"{attr}({attribute!r})" if takes_attribute else f"{attr}()"
            raise CfbenchError(f"classifier factory {spec.target}: {called} raised {_one_line(e)}.") from None
    finally:
        for folder in added:
            sys.path.remove(folder)
    if not isinstance(network, nn.Module):
        raise CfbenchError(
            f"classifier factory {spec.target} returned a {type(network).__name__}, not a torch.nn.Module."
        )
    return network


@functools.lru_cache(maxsize=None)
def _declared_classifier() -> type:
    """The wrapper class (defined on first use: listing classifiers must not import torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DeclaredClassifier(nn.Module):
        """A classifier of yours behind the harness' contract: images in [0, 1] (N, 3, H, W)
        -> one logit (N,), through its declared resolution, input range and output."""

        def __init__(self, net: nn.Module, spec: ClassifierSpec):
            super().__init__()
            self.net, self.spec = net, spec

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            size = self.spec.resolution
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=x.shape[-1] > size)  # fmt: skip
            if (self.spec.low, self.spec.high) != (0.0, 1.0):
                x = x * (self.spec.high - self.spec.low) + self.spec.low
            return self.query_logit(self.net(x), x.shape[0])

        def query_logit(self, out: object, n: int) -> torch.Tensor:
            spec, what = self.spec, f"classifier {self.spec.name}"
            if not isinstance(out, torch.Tensor):
                raise CfbenchError(f"{what} returns a {type(out).__name__}, not a tensor of logits (N,) or (N, K).")
            if out.dim() not in (1, 2) or out.shape[0] != n:
                raise CfbenchError(f"{what} returns shape {tuple(out.shape)} for {n} images, not (N,) or (N, K).")
            k = 1 if out.dim() == 1 else out.shape[1]
            index = spec.index
            if spec.logits == 2:
                index = 1 if index is None else index
                if k != 2:
                    raise CfbenchError(f"{what} declares logits=2 (a softmax pair) but returns {k} outputs per image.")
                if index > 1:
                    raise CfbenchError(f"{what}: index {index} is out of range for a softmax pair (0 or 1).")
                return out[:, index] - out[:, 1 - index]
            if k == 1:
                if index not in (None, 0):
                    raise CfbenchError(f"{what}: index {index} is out of range; the network returns 1 output "
                                       "per image.")  # fmt: skip
                return out.reshape(n)
            if index is None:
                raise CfbenchError(f"{what} returns {k} outputs per image: declare the query's with --classifier-opt "
                                   f"index=I (0…{k - 1}), or logits=2 for a softmax pair.")  # fmt: skip
            if index >= k:
                raise CfbenchError(f"{what}: index {index} is out of range for its {k} outputs (0…{k - 1}).")
            return out[:, index]

    return DeclaredClassifier


def _probe(network: nn.Module, spec: ClassifierSpec, size: int) -> None:
    """One forward pass on two grey images of ``size``: a network that fails, or whose
    output does not fit its declarations, is one error now rather than mid-run."""
    import torch

    x = torch.full((2, 3, size, size), 0.5)
    try:
        with torch.no_grad():
            network(x)
    except CfbenchError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's network
        hint = "" if spec.resolution else "; declare the input size it expects with resolution=R"
        raise CfbenchError(f"classifier {spec.name} failed on a batch of {size}x{size} RGB images in "
                           f"[{spec.low:g}, {spec.high:g}] ({_one_line(e)}){hint}.") from None  # fmt: skip
