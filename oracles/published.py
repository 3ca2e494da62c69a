"""Reading the published weight files of the evaluation networks (`cfbench.weights`)."""
from __future__ import annotations

from pathlib import Path

import torch

from cfbench.checkpoints import read_torch
from cfbench.errors import CfbenchError
from cfbench.weights import WEIGHTS, locate


def published_state(
    name: str, path: Path | None, what: str, key: str | None = None
) -> tuple[Path, dict[str, torch.Tensor]]:
    """The file of published weights ``name`` (``path``, else the weights cache) and the
    state dict it holds (its entry ``key`` where given), read with ``weights_only``; a
    missing file, or one that holds no state dict, is one `CfbenchError` line."""
    found = locate(name, path)
    content = read_torch(found, what, WEIGHTS[name].url)
    state = content.get(key) if key and isinstance(content, dict) else content
    if not isinstance(state, dict):
        holds = f"no {key!r} entry" if key else f"a {type(content).__name__}"
        raise CfbenchError(f"{found} is not a {what}: it holds {holds}, not a state dict.")
    return found, state
