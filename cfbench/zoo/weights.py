"""Reading and writing zoo weights: ``<name>.safetensors`` beside a ``<name>.json``
(architecture arguments, training record, measured figures) and a ``<name>.md`` model
card, in ``cfbench/zoo/weights/``.

Storage is fp16, or ``int8`` for the largest models (the tracked tree's budget): every
weight matrix or kernel of at least `INT8_MIN_ELEMENTS` values is stored as symmetric
int8 with one fp32 scale per output channel (``<key>::scale``); biases and norms stay
fp16. Reading restores fp32 values q·scale; the model cards state the effect measured
against fp16."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from cfbench.checkpoints import load_strict
from cfbench.errors import CfbenchError
from cfbench.files import atomic_write_bytes

WEIGHTS_DIR = Path(__file__).parent / "weights"


INT8_MIN_ELEMENTS = 1024
SCALE = "::scale"


def _int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantisation: (int8 values, fp32 scales)."""
    w = weight.float()
    scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127.0
    return (w / scale).round_().clamp_(-127, 127).to(torch.int8), scale


def save_weights(model: nn.Module, path: Path, storage: str = "fp16") -> None:
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if storage == "int8" and value.is_floating_point() and value.dim() >= 2 and value.numel() >= INT8_MIN_ELEMENTS:
            state[key], state[key + SCALE] = _int8(value)
        else:
            state[key] = value.to(torch.float16) if value.is_floating_point() else value
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}, metadata={"storage": storage}))


def stored_format(path: Path) -> str:
    """fp16 or int8, as `save_weights` recorded it (files without the record are fp16)."""
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("storage", "fp16")


def _dequantised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    scales = {k[: -len(SCALE)]: state.pop(k) for k in [k for k in state if k.endswith(SCALE)]}
    for key, scale in scales.items():
        if key not in state:
            raise CfbenchError(f"int8 scale {key}{SCALE} has no weight {key}")
        state[key] = state[key].float() * scale
    return state


def load_weights(model: nn.Module, path: Path, name: str) -> nn.Module:
    """Load strictly; a missing or wrong file is one clear error naming it."""
    if not path.exists():
        raise CfbenchError(f"zoo weights {name!r} not found at {path}; train them with `cfbench zoo train {name}`.")
    try:
        state = _dequantised(load_file(str(path)))
    except (SafetensorError, OSError) as e:
        raise CfbenchError(f"{path} is not a readable safetensors file ({e}).") from None
    except CfbenchError as e:
        raise CfbenchError(f"{path}: {e}.") from None
    return load_strict(model, state, path, repr(name))


def read_card(name: str, directory: Path = WEIGHTS_DIR) -> dict[str, Any]:
    path = directory / f"{name}.json"
    if not path.exists():
        raise CfbenchError(f"zoo model {name!r} has no record at {path}; train it with `cfbench zoo train {name}`.")
    return json.loads(path.read_text())
