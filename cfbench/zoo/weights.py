"""Reading and writing zoo weights: ``<name>.safetensors`` (fp16) beside a
``<name>.json`` (architecture arguments, training record, measured figures) and a
``<name>.md`` model card, in ``cfbench/zoo/weights/``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from cfbench.checkpoints import load_strict
from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_bytes

WEIGHTS_DIR = Path(__file__).parent / "weights"


def save_weights(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).cpu().contiguous()
             for k, v in model.state_dict().items()}  # fmt: skip
    atomic_write_bytes(path, save(state))


def load_weights(model: nn.Module, path: Path, name: str) -> nn.Module:
    """Load strictly; a missing or wrong file is one clear error naming it."""
    if not path.exists():
        raise CfbenchError(f"zoo weights {name!r} not found at {path}; train them with `cfbench zoo train {name}`.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CfbenchError(f"{path} is not a readable safetensors file ({e}).") from None
    return load_strict(model, state, path, repr(name))


def read_card(name: str, directory: Path = WEIGHTS_DIR) -> dict[str, Any]:
    path = directory / f"{name}.json"
    if not path.exists():
        raise CfbenchError(f"zoo model {name!r} has no record at {path}; train it with `cfbench zoo train {name}`.")
    return json.loads(path.read_text())
