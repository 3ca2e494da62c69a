"""Downloading and checking the published weights of `cfbench.weights`, with the
standard library only (urllib): ``cfbench weights fetch | verify``.

A download goes to ``<file>.part`` beside its destination and resumes from there with
an HTTP ``Range`` request (after a cut connection, within one call and across calls);
only a complete file whose size and sha256 match the entry's pins, and that is not a
web page, is renamed (atomically) to its name. ``CFBENCH_OFFLINE=1`` forbids any
network access. Every failure is one `CfbenchError` line.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cfbench.errors import CfbenchError
from cfbench.files import exclusive_lock
from cfbench.weights import PublishedFile, PublishedWeights, entry, published_as

CHUNK = 1 << 20
#: bytes sniffed at the start of a file to tell a web page from the file
HEAD = 1024
#: file names that are text by nature (a page check must not refuse them for being text)
TEXT_SUFFIXES = (".json", ".txt", ".yaml", ".yml", ".md")


def offline() -> bool:
    """Whether ``CFBENCH_OFFLINE`` forbids the network (any value but empty, 0, false, no)."""
    return os.environ.get("CFBENCH_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # unreachable


# -- what a file is --------------------------------------------------------------------------
def page_kind(head: bytes, text_expected: bool = False) -> str | None:
    """What the leading bytes of a file show that stands in for the file: a web page (a
    sign-in, quota or virus-scan notice of a download link), a Git LFS pointer, or (for
    a binary file) a text message; None for a plausible file."""
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<!--")) or (
        stripped.startswith(b"<") and b"<html" in stripped[:HEAD]
    ):
        return "an HTML page, not the file (a download link that returned a web page, e.g. a Google Drive notice)"
    if stripped.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer, not the file"
    if text_expected or not head:
        return None
    text = head.decode("utf-8", "replace")
    printable = sum(c != "\ufffd" and (c.isprintable() or c in "\t\n\r") for c in text)
    if printable >= 0.95 * len(text):
        return "a text message, not the file (a download link that returned a message instead of the file)"
    return None


def expects_text(name: str) -> bool:
    return name.lower().endswith(TEXT_SUFFIXES)


@dataclass(frozen=True)
class Check:
    """The result of checking one file: ``status`` is ok, unpinned or bad."""

    status: str
    detail: str
    sha256: str | None = None

    @property
    def bad(self) -> bool:
        return self.status == "bad"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, size: int | None, sha256: str | None, name: str = "") -> Check:
    """``path`` against the pins ``size`` and ``sha256`` (a full digest or a prefix):
    empty, a web page, truncated, too long, a damaged zip (a torch checkpoint cut short)
    or a wrong digest is ``bad``; no pin is ``unpinned`` with the digest."""
    actual = path.stat().st_size
    if actual == 0:
        return Check("bad", "empty file")
    with open(path, "rb") as f:
        head = f.read(HEAD)
    page = page_kind(head, expects_text(name or path.name))
    if page:
        return Check("bad", page)
    if size is not None and actual < size:
        return Check("bad", f"truncated: {actual} of {size} bytes")
    if size is not None and actual > size:
        return Check("bad", f"{actual} bytes, {size} expected")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path):
                pass
        except (zipfile.BadZipFile, OSError, ValueError):
            return Check("bad", "truncated or damaged: a zip archive (torch.save's format) without its directory")
    digest = sha256_of(path)
    if sha256 is None:
        return Check("unpinned", f"unpinned: sha256 {digest} (no published checksum to compare)", digest)
    if not digest.startswith(sha256.lower()):
        kind = "sha256" if len(sha256) == 64 else "sha256 prefix"
        return Check("bad", f"{kind} mismatch: sha256 {digest}, {sha256} expected", digest)
    return Check("ok", f"sha256 {digest}" + (" (matches the published prefix)" if len(sha256) < 64 else ""), digest)


# -- downloading -----------------------------------------------------------------------------
class _Cut(Exception):
    """The transfer stopped before the end; the bytes so far are in the ``.part`` file."""


def _user_agent() -> str:
    try:
        from cfbench import __version__
    except ImportError:  # pragma: no cover
        __version__ = "0"
    return f"cfbench/{__version__} (+urllib)"


def _open(url: str, have: int, timeout: float, what: str):
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # nothing after the bytes we have: the checks decide whether they are whole
            return None
        raise CfbenchError(f"{what}: {url} answered HTTP {e.code} {e.reason}.") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise _Cut(f"no answer within {timeout:g} s") from None
        if isinstance(reason, ConnectionError) and not isinstance(reason, ConnectionRefusedError):
            raise _Cut(f"{type(reason).__name__}: {reason}") from None  # reset or closed before answering
        raise CfbenchError(f"{what}: cannot reach {url} ({reason}).") from None


def _transfer(url: str, part: Path, size: int | None, what: str, progress: bool, timeout: float,
              text: bool) -> None:  # fmt: skip
    """Bring ``part`` up to the end of ``url``: resume after its bytes where the server
    honours ``Range``, else start over. Raises `_Cut` when the body ends early."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    response = _open(url, have, timeout, what)
    if response is None:
        return
    with response:
        if have and response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink()
                raise _Cut(f"the server resumed at {match.group(1) if match else '?'} instead of byte {have}")
        elif have:  # 200: the server sends the whole file again
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else size
        from tqdm.auto import tqdm

        with open(part, "ab" if have else "wb") as f, tqdm(
            total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
            disable=None if progress else True, leave=False, file=sys.stderr,  # None: only on a terminal
        ) as bar:  # fmt: skip
            first = not have
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                    raise _Cut(f"{type(e).__name__}: {e}") from None
                if not chunk:
                    break
                if first:
                    page = page_kind(chunk[:HEAD], text)
                    if page:
                        f.close()
                        part.unlink()
                        raise CfbenchError(f"{what}: {url} returned {page}; nothing was kept.")
                    first = False
                f.write(chunk)
                bar.update(len(chunk))
            received = f.tell()
    if expected is not None and received < expected:
        raise _Cut(f"the connection closed after {received} of {expected} bytes")


def download(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None, what: str | None = None,
             progress: bool = True, attempts: int = 3, timeout: float = 60.0) -> Check:  # fmt: skip
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed, ``attempts`` tries),
    check it against the pins and rename it into place. Returns the check (ok or
    unpinned); a web page, a wrong size or digest is one `CfbenchError` line and the
    file is not kept; a download cut ``attempts`` times keeps its ``.part`` to resume."""
    what = what or dest.name
    if offline():
        raise CfbenchError(f"{what}: CFBENCH_OFFLINE is set, so {url} is not downloaded (unset it to download, "
                           f"or put the file at {dest}).")  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with exclusive_lock(dest.with_name(f".{dest.name}.lock"), wait=False, what=f"the download of {dest}"):
        for attempt in range(1, attempts + 1):
            try:
                _transfer(url, part, size, what, progress, timeout, expects_text(dest.name))
                break
            except _Cut as cut:
                if attempt == attempts:
                    kept = part.stat().st_size if part.is_file() else 0
                    raise CfbenchError(f"{what}: the download from {url} stopped {attempts} times ({cut}); {kept} "
                                       f"bytes are kept in {part}: run the same command again to resume.") from None
        if not part.is_file():
            raise CfbenchError(f"{what}: {url} sent nothing.")
        result = check_file(part, size, sha256, dest.name)
        if result.bad:
            part.unlink()
            raise CfbenchError(f"{what}: the file downloaded from {url} is {result.detail}; it was not kept.")
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(part, dest)
    return result


# -- the registry's commands -----------------------------------------------------------------
def verify(item: PublishedWeights) -> list[tuple[PublishedFile, Path, Check | None]]:
    """Each file of ``item`` with its check, or None where it is not here."""
    return [(part, path, check_file(path, part.size, part.sha256, part.name) if path.is_file() else None)
            for part, path in item.file_paths()]  # fmt: skip


def fetch(name: str, *, progress: bool = True, attempts: int = 3, timeout: float = 60.0) -> list[str]:
    """Bring the entry ``name`` into the cache: one line per file (already there,
    downloaded, with its digest). An entry without a direct link, offline mode, a file
    already there that fails its check, or a failed download is one `CfbenchError` line."""
    item = entry(name)
    if item.package:
        found = item.path()
        if not found.is_file():
            raise CfbenchError(f"{name}: {found} is missing from the installed {item.package} package; reinstall it.")
        return [f"{name}: ships with the {item.package} package, nothing to download: {found}"]
    lines, todo = [], []
    for part, path in item.file_paths():
        if path.is_file():
            result = check_file(path, part.size, part.sha256, part.name)
            if result.bad:
                raise CfbenchError(f"{name}: {path} is already there but is {result.detail}; delete it and fetch "
                                   "again.")  # fmt: skip
            lines.append(f"{name}: already at {path}: {result.detail}")
        else:
            todo.append((part, path))
    if not todo:
        return lines
    if not item.direct:
        raise CfbenchError(f"{name}: no direct link is known; download it by hand from {item.url}"
                           f"{published_as(item)} and save it as {item.path()}.")  # fmt: skip
    for part, path in todo:
        what = f"{name}/{part.name}" if item.files else name
        result = download(part.url, path, size=part.size, sha256=part.sha256, what=what, progress=progress,
                          attempts=attempts, timeout=timeout)  # fmt: skip
        lines.append(f"{name}: {path} ({human(path.stat().st_size)}): {result.detail}")
    return lines


__all__ = ["Check", "check_file", "download", "fetch", "offline", "page_kind", "verify"]
