"""Reading published checkpoint files as they are, and loading them strictly: every
problem (no file, not a checkpoint, a missing, extra or wrongly shaped key) is one
`CfbenchError` line that names the file and the key."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cfbench.errors import CfbenchError


def read_torch(path: Path, what: str, published: str | None = None, *, inert_globals: bool = False) -> Any:
    """``torch.load`` without executing code (``weights_only``): the containers the
    papers publish are dicts of tensors, which load this way.

    ``inert_globals``: files that also pickle classes or functions (a PyTorch Lightning
    checkpoint keys its callback states by class, for one) still load without running
    code: every global that ``weights_only`` does not allow is replaced by an inert
    placeholder class, which only records the arguments it is given."""
    path = Path(path)
    if not path.is_file():
        where = f"; it is published at {published}" if published else ""
        raise CfbenchError(f"{what} not found at {path}{where}.")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            if not inert_globals:
                raise
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            with torch.serialization.safe_globals([(_inert(name), name) for name in names]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CfbenchError(f"{path} is not a readable {what} ({first}).") from None


def _inert(name: str) -> type:
    """A stand-in for the pickled global ``name`` (``module.qualname``): creating, calling
    or restoring it keeps the arguments in ``args`` / ``state`` and does nothing else."""
    module, _, qualname = name.rpartition(".")

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def setstate(self: Any, state: Any) -> None:
        self.state = state

    return type(qualname.rpartition(".")[2] or name, (), {
        "__module__": module, "__qualname__": qualname, "__new__": new, "__init__": init,
        "__setstate__": setstate, "__doc__": f"Inert placeholder for {name}."})


def load_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: Path | str, what: str,
    names: Mapping[str, str] | None = None,
) -> nn.Module:
    """Copy ``state`` into ``model`` after checking that the keys and shapes match exactly.

    ``names`` gives the file's name of a model key where the two differ (a Caffe-style
    ``conv2_1_3x3.weight`` for ``layer1.0.conv2.weight``); messages name the file's keys."""
    names = names or {}
    expected = {names.get(k, k): v for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        key = (missing or unexpected or wrong)[0]
        kind = "missing key" if missing else "unexpected key" if unexpected else "wrongly shaped key"
        detail = f" ({tuple(state[key].shape)} in the file, {tuple(expected[key].shape)} expected)" if wrong else ""
        count = len(missing) + len(unexpected) + len(wrong)
        more = f" and {count - 1} more" if count > 1 else ""
        raise CfbenchError(f"{source} does not fit {what}: {kind} {key!r}{detail}{more}.")
    model.load_state_dict({k: state[names.get(k, k)].to(v.dtype) for k, v in model.state_dict().items()})
    return model
