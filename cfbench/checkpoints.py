"""Reading published checkpoint files as they are, and loading them strictly: every
problem (no file, not a checkpoint, a missing, extra or wrongly shaped key) is one
`CfbenchError` line that names the file and the key."""
from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cfbench.errors import CfbenchError


def read_torch(path: Path, what: str, published: str | None = None, *, inert_globals: bool = False) -> Any:
    """``torch.load`` without executing code (``weights_only``): the containers the
    papers publish are dicts of tensors, which load this way. A file that does not load
    is one `CfbenchError` line saying what it is (empty, a web page, truncated, another
    format, pickled code) and what to do, with ``published`` as where to get it.

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
        except pickle.UnpicklingError as refused:
            if not inert_globals:
                raise
            try:
                names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:  # not the zip format (legacy, damaged): the refusal says why
                raise refused from None
            with torch.serialization.safe_globals([(_inert(name), name) for name in names]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # the unpickler's errors on a damaged file include IndexError and struct.error
        why = _diagnosis(path, e, published)
        raise CfbenchError(f"{path} is not a readable {what}: {why}") from None


_ZIP = b"PK\x03\x04"
_LEGACY = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # the magic number torch.save pickles first in its legacy format
_FORMATS = {  # leading bytes of files that turn up in place of a checkpoint
    b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
    b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip archive", b"\x89HDF\r\n\x1a\n": "an HDF5 file",
    b"\x93NUMPY": "a NumPy array file", _ZIP: "a zip archive that torch.save did not write",
    b"\x80": "a Python pickle that torch.save did not write",
}


def _diagnosis(path: Path, error: Exception, published: str | None) -> str:
    """What the file at ``path`` is, given that ``torch.load`` failed with ``error``, and
    what to do: the end of a one-line message, naming ``published`` in the advice."""
    source = f" from {published}" if published else ""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"it cannot be read ({e.strerror or type(e).__name__})."
    if size == 0:
        return f"it is empty (0 bytes), so the download did not complete; download it again{source}."
    code = _pickled_code(path, error)
    if code:
        instead = f", such as the one published at {published}" if published else ""
        return (f"it holds pickled code ({code}), which cfbench does not execute; give a file of tensors only "
                f"(torch.save(model.state_dict(), path)){instead}.")
    if _torch_damaged(path, head):
        return f"it is truncated or corrupt ({size} byte{'s' * (size != 1)}); download it again{source}."
    page = _page(head)
    if page:
        return f"it is {page}; download the file itself{source}."
    kind = _format(head, size) or f"{size} bytes in no format cfbench recognises"
    again = f", or download it again{source}" if published else ""
    return f"it is not a PyTorch checkpoint ({kind}); check the path{again}."


def _pickled_code(path: Path, error: Exception) -> str | None:
    """The first global (``module.name``) the safe loader refused, when that is why
    ``error`` happened, else None."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # a legacy-format file, or a torch without it: the error names the global
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        names = [found.group(1)] if found and _pickles_whole(path) else []  # not a name cut short
    return names[0] if names else None


def _pickles_whole(path: Path, count: int = 4) -> bool:
    """Whether the first ``count`` pickles of a legacy-format file (magic number, protocol,
    system info, the object) are whole, read as opcodes only: nothing is unpickled."""
    try:
        with path.open("rb") as f:
            for _ in range(count):
                for _ in pickletools.genops(f):
                    pass
    except Exception:  # genops raises ValueError, among others, where a pickle is cut short
        return False
    return True


def _torch_damaged(path: Path, head: bytes) -> bool:
    """Whether the file starts as ``torch.save`` writes but is cut short or corrupt: a zip
    without its directory, or with a pickle (``data.pkl``) that does not load, or the
    legacy format's magic number."""
    if head.startswith(b"\x80") and _LEGACY.startswith(head[2:2 + len(_LEGACY)]):
        return True
    if not (head.startswith(_ZIP) or _ZIP.startswith(head)):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return True


def _page(head: bytes) -> str | None:
    """What a text file is (a web page, a Git LFS pointer, other text) and how it came to
    stand in for the checkpoint, or None for a binary file."""
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"<"):
        kind = "an XML page" if head[:5].lower() == b"<?xml" else "an HTML page"
        why = "a download link that returned a web page, e.g. a sign-in or virus-scan notice"
        return f"{kind}, not a checkpoint ({why})"
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the file itself (a clone of the repository without git-lfs)"
    text = head.decode("utf-8", "replace")
    printable = sum(c != "\ufffd" and (c.isprintable() or c in "\t\n\r") for c in text)
    if text and printable >= 0.95 * len(text):
        return "a text file, not a checkpoint (a download link that returned a message instead of the file)"
    return None


def _format(head: bytes, size: int) -> str | None:
    """The format a file's leading bytes show (a PNG image, a safetensors file…), or None."""
    header = int.from_bytes(head[:8], "little")
    if len(head) > 8 and head[8:9] == b"{" and 0 < header <= size - 8:
        return "a safetensors file"
    return next((kind for magic, kind in _FORMATS.items() if head.startswith(magic)), None)


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
        shapes = [f"{k!r}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} expected" for k in wrong]
        kinds = [_keys(kind, items, sep) for kind, items, sep in (
            ("missing key", [repr(k) for k in missing], ", "), ("unexpected key", [repr(k) for k in unexpected], ", "),
            ("wrongly shaped key", shapes, "; ")) if items]
        raise CfbenchError(f"{source} does not fit {what}: {', '.join(kinds)}.")
    model.load_state_dict({k: state[names.get(k, k)].to(v.dtype) for k, v in model.state_dict().items()})
    return model


def _keys(kind: str, items: list[str], sep: str, shown: int = 3) -> str:
    """``missing key 'a'`` for one key, ``2 missing keys ('a', 'b')`` for more: at most
    ``shown`` of them, joined by ``sep``, then an ellipsis."""
    if len(items) == 1:
        return f"{kind} {items[0]}"
    listed = sep.join(items[:shown]) + (f"{sep}…" if len(items) > shown else "")
    return f"{len(items)} {kind}s ({listed})"
