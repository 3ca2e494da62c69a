"""The registry of published weights and `cfbench weights list | path | verify | fetch`:
downloads against a local HTTP server (127.0.0.1, started and stopped here) that
honours Range requests, can cut a connection, and can answer with a web page."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from cfbench import weights
from cfbench.download import check_file, download, fetch
from cfbench.errors import CfbenchError
from tests.conftest import assert_one_error_line, invoke

PAYLOAD = bytes(range(256)) * 2048  # 512 KiB, binary
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
PAGE = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>...</body></html>"


class Server:
    """``files``: URL path -> (body, content type). ``cut``: URL path -> bytes after which
    the first response closes the connection. ``requests``: (path, Range header) served."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body, kind = server.files[self.path]
                start = 0
                ranged = self.headers.get("Range")
                if ranged and not server.ignore_range:
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                limit = server.cut.pop(self.path, None)
                sent = body[start:] if limit is None else body[start:start + limit]
                self.wfile.write(sent)
                self.wfile.flush()
                if limit is not None:
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    running = Server()
    running.thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()
    running.thread.join(timeout=5)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CFBENCH_OFFLINE", raising=False)
    return tmp_path / "home"


def pin(monkeypatch: pytest.MonkeyPatch, name: str, **changes) -> weights.PublishedWeights:
    """Point the registry's entry ``name`` at the test server (or other pins)."""
    entry = dataclasses.replace(weights.WEIGHTS[name], **changes)
    monkeypatch.setitem(weights.WEIGHTS, name, entry)
    return entry


def kept(folder: Path) -> list[str]:
    """The files a download left in ``folder`` (its hidden lock files aside)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def serve(server: Server, monkeypatch, name="vgg16-imagenet", body=PAYLOAD, kind="application/octet-stream",
          **pins) -> weights.PublishedWeights:  # fmt: skip
    server.files["/w.bin"] = (body, kind)
    pins = {"size": len(PAYLOAD), "sha256": DIGEST, **pins}
    return pin(monkeypatch, name, url=server.url("/w.bin"), direct=True, **pins)


# -- downloads -------------------------------------------------------------------------------
def test_full_download_with_the_right_checksum(server, home, monkeypatch):
    entry = serve(server, monkeypatch)
    lines = fetch("vgg16-imagenet", progress=False)
    target = home / "weights" / "vgg16-397923af.pth"
    assert target.read_bytes() == PAYLOAD and not target.with_name(target.name + ".part").exists()
    assert entry.path() == target and weights.locate("vgg16-imagenet") == target
    assert len(lines) == 1 and DIGEST in lines[0] and "unpinned" not in lines[0]
    assert server.requests == [("/w.bin", None)]
    assert fetch("vgg16-imagenet", progress=False)[0].startswith("vgg16-imagenet: already at")
    assert len(server.requests) == 1  # already there: no request


def test_resume_after_a_cut_connection_within_one_fetch(server, home, monkeypatch):
    serve(server, monkeypatch)
    server.cut["/w.bin"] = 200_000
    fetch("vgg16-imagenet", progress=False)
    assert (home / "weights" / "vgg16-397923af.pth").read_bytes() == PAYLOAD
    assert server.requests == [("/w.bin", None), ("/w.bin", "bytes=200000-")]


def test_resume_a_partial_download_on_the_next_command(server, home, monkeypatch):
    serve(server, monkeypatch)
    server.cut["/w.bin"] = 100_000
    target = home / "weights" / "vgg16-397923af.pth"
    part = target.with_name(target.name + ".part")
    with pytest.raises(CfbenchError, match="run the same command again to resume") as error:
        download(server.url("/w.bin"), target, size=len(PAYLOAD), sha256=DIGEST, progress=False, attempts=1)
    assert "\n" not in str(error.value) and str(part) in str(error.value)
    assert part.read_bytes() == PAYLOAD[:100_000] and not target.exists()
    assert weights.cache_state(weights.WEIGHTS["vgg16-imagenet"]) == "partial"
    check = download(server.url("/w.bin"), target, size=len(PAYLOAD), sha256=DIGEST, progress=False)
    assert check.status == "ok" and target.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/w.bin", "bytes=100000-")


def test_a_server_that_ignores_range_starts_over(server, home, monkeypatch):
    serve(server, monkeypatch)
    target = home / "weights" / "vgg16-397923af.pth"
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(b"\x00" * 1000)  # not the file's first bytes
    server.ignore_range = True
    fetch("vgg16-imagenet", progress=False)
    assert target.read_bytes() == PAYLOAD


def test_a_wrong_checksum_is_one_line_and_no_file(server, home, monkeypatch):
    serve(server, monkeypatch, sha256="0" * 64)
    with pytest.raises(CfbenchError) as error:
        fetch("vgg16-imagenet", progress=False)
    message = str(error.value)
    assert "\n" not in message and "sha256 mismatch" in message and DIGEST in message and "not kept" in message
    assert kept(home / "weights") == []
    serve(server, monkeypatch, sha256=DIGEST[:8] + "0" * 4)  # a wrong prefix pin
    with pytest.raises(CfbenchError, match="sha256 prefix mismatch"):
        fetch("vgg16-imagenet", progress=False)


def test_an_html_page_is_one_line_and_no_file(server, home, monkeypatch):
    serve(server, monkeypatch, body=PAGE, kind="text/html; charset=utf-8", size=None, sha256=None)
    result = invoke("weights", "fetch", "vgg16-imagenet")
    assert result.exit_code == 2
    line = assert_one_error_line(result.stderr, result.output)
    assert "HTML page" in line and "nothing was kept" in line
    assert kept(home / "weights") == []


def test_a_download_in_progress_elsewhere_is_one_line(server, home, monkeypatch):
    from cfbench.files import exclusive_lock

    serve(server, monkeypatch)
    target = home / "weights" / "vgg16-397923af.pth"
    target.parent.mkdir(parents=True)
    with exclusive_lock(target.with_name(f".{target.name}.lock"), wait=True, what="test"):
        with pytest.raises(CfbenchError, match="in use by another cfbench process"):
            fetch("vgg16-imagenet", progress=False)
    assert server.requests == []


def test_offline_mode_never_touches_the_network(server, home, monkeypatch):
    serve(server, monkeypatch)
    monkeypatch.setenv("CFBENCH_OFFLINE", "1")
    result = invoke("weights", "fetch", "vgg16-imagenet")
    assert result.exit_code == 2
    assert "CFBENCH_OFFLINE" in assert_one_error_line(result.stderr, result.output)
    assert server.requests == [] and not (home / "weights" / "vgg16-397923af.pth").exists()


def test_an_http_error_is_one_line(server, home, monkeypatch):
    pin(monkeypatch, "vgg16-imagenet", url=server.url("/absent.bin"))
    with pytest.raises(CfbenchError, match=r"answered HTTP 404") as error:
        fetch("vgg16-imagenet", progress=False)
    assert "\n" not in str(error.value) and kept(home / "weights") == []


def test_unpinned_download_shows_its_digest(server, home, monkeypatch):
    serve(server, monkeypatch, name="minisd", size=None, sha256=None)
    result = invoke("weights", "fetch", "minisd")
    assert result.exit_code == 0, result.output
    assert f"unpinned: sha256 {DIGEST}" in result.stdout
    assert (home / "weights" / "miniSD.ckpt").read_bytes() == PAYLOAD


def test_a_multi_file_entry_fills_one_folder(server, home, monkeypatch):
    texts = {"vocab.json": b'{"a</w>": 320}', "merges.txt": b"#version: 0.2\na b\n", "config.json": b"{}"}
    for name, body in texts.items():
        server.files[f"/clip/{name}"] = (body, "text/plain")
    files = tuple(weights.PublishedFile(name, server.url(f"/clip/{name}")) for name in texts)
    pin(monkeypatch, "clip-vit-large-patch14", files=files)
    lines = fetch("clip-vit-large-patch14", progress=False)
    folder = home / "weights" / "clip-vit-large-patch14"
    assert len(lines) == 3 and all((folder / name).read_bytes() == body for name, body in texts.items())
    assert weights.locate("clip-vit-large-patch14") == folder


def test_fetch_of_an_entry_without_a_direct_link_says_where_to_get_it(home):
    result = invoke("weights", "fetch", "celebahq-oracle")
    line = assert_one_error_line(result.stderr, result.output)
    assert result.exit_code == 2 and "by hand" in line and "github.com/valeoai/STEEX/releases" in line
    assert "oracle_attribute/celebamaskhq/checkpoint.tar" in line and "steex-oracle-celebamaskhq.tar" in line
    unknown = invoke("weights", "fetch", "no-such-weights")
    assert "Unknown published weights" in assert_one_error_line(unknown.stderr, unknown.output)


# -- verify ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, status, says",
    [(PAYLOAD, 0, f"sha256 {DIGEST}"),
     (PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 1]) + PAYLOAD[1001:], 2, "sha256 mismatch"),
     (PAYLOAD[:4096], 2, f"truncated: 4096 of {len(PAYLOAD)} bytes"),
     (PAGE, 2, "HTML page")],
    ids=["good", "corrupted", "truncated", "html"],
)  # fmt: skip
def test_verify(home, monkeypatch, content, status, says):
    pin(monkeypatch, "vgg16-imagenet", size=len(PAYLOAD), sha256=DIGEST)
    target = home / "weights" / "vgg16-397923af.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    for args in (["weights", "verify", "vgg16-imagenet"], ["weights", "verify"]):
        result = invoke(*args)
        assert result.exit_code == status, result.output
        lines = [line for line in result.stdout.splitlines() if "vgg16-imagenet" in line]
        assert len(lines) == 1 and says in lines[0] and str(target) in lines[0]
        if status:
            assert "failed verification" in assert_one_error_line(result.stderr, result.output)


def test_verify_unpinned_reports_the_digest_and_passes(home):
    target = home / "weights" / "oracle.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    result = invoke("weights", "verify", "celeba-oracle")
    assert result.exit_code == 0, result.output
    assert f"unpinned: sha256 {DIGEST}" in result.stdout
    missing = invoke("weights", "verify", "ddpm-celeba128")
    assert missing.exit_code == 2 and "not here" in assert_one_error_line(missing.stderr, missing.output)


def test_verify_finds_a_torch_zip_cut_short_without_pins(tmp_path):
    import zipfile

    whole = tmp_path / "whole.pt"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("archive/data.pkl", PAYLOAD)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: len(PAYLOAD) // 2])
    assert check_file(whole, None, None).status == "unpinned"
    assert check_file(cut, None, None).bad


# -- list / path -----------------------------------------------------------------------------
def test_list_and_path(home):
    result = invoke("weights", "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert set(weights.WEIGHTS) <= set(rows)
    assert {"ddpm-celeba128", "celeba-densenet121", "celeba-oracle", "ddpm-celebahq256", "celebahq-densenet",
            "celebahq-oracle", "vggface2-resnet50", "simsiam-resnet50", "inception-v3-fid", "vgg16-imagenet",
            "vgg19-imagenet", "lpips-vgg-linear", "diffae-ffhq256", "diffae-celeba128", "minisd", "cin256-v2",
            "clip-vit-large-patch14"} <= set(weights.WEIGHTS)  # fmt: skip
    oracle = rows["celebahq-oracle"]
    assert "steex-oracle-celebamaskhq.tar" in oracle and "missing" in oracle and "unpinned" in oracle
    assert "published as oracle_attribute/celebamaskhq/checkpoint.tar" in result.stdout
    assert "sha256 prefix" in rows["vgg16-imagenet"] and "fetch: https://download.pytorch.org" in rows["vgg16-imagenet"]
    path = invoke("weights", "path", "cin256-v2")
    assert path.exit_code == 0 and path.stdout.strip() == str(home / "weights" / "cin256-v2.ckpt")
    assert "published as model.ckpt" in path.stderr
    assert invoke("list", "weights").stdout.startswith("weights:\n")


def test_registry_entries_are_complete():
    for name, entry in weights.WEIGHTS.items():
        assert entry.name == name and entry.filename and entry.url.startswith("https://") and entry.license
        for part in entry.parts():
            assert part.sha256 is None or (4 <= len(part.sha256) <= 64 and int(part.sha256, 16) >= 0)
        if entry.direct:
            assert all(" " not in part.url for part in entry.parts()), name
        assert not entry.loader or ":" in entry.loader, name
    cached = [e.filename for e in weights.WEIGHTS.values() if not e.package]
    assert len(cached) == len(set(cached))  # one cache name per file


def test_each_named_loader_exists():
    import importlib

    for name, entry in weights.WEIGHTS.items():
        if entry.loader:
            module, _, attribute = entry.loader.partition(":")
            assert hasattr(importlib.import_module(module), attribute.split(" ")[0]), (name, entry.loader)


def test_locate_keeps_working_for_its_callers(home, tmp_path):
    with pytest.raises(CfbenchError) as error:
        weights.locate("celebahq-oracle")
    message = str(error.value)
    assert "steex-oracle-celebamaskhq.tar not found at" in message and str(home / "weights") in message
    assert "https://github.com/valeoai/STEEX/releases" in message and "\n" not in message
    given = tmp_path / "mine.tar"
    given.write_bytes(b"x")
    assert weights.locate("celebahq-oracle", given) == given


def test_load_all_names_every_missing_file_and_keeps_a_single_ones_message(tmp_path, monkeypatch):
    from cfbench.errors import MissingWeights

    monkeypatch.setenv("CFBENCH_HOME", str(tmp_path))
    own = tmp_path / "mine.pth"
    with pytest.raises(MissingWeights) as one:
        weights.load_all(lambda: 1, lambda: weights.locate("vgg19-imagenet", own))
    assert one.value.names == ["vgg19-imagenet"] and f"not found at {own}" in str(one.value)
    with pytest.raises(MissingWeights) as two:
        weights.load_all(lambda: weights.locate("vgg19-imagenet"), lambda: 2, lambda: weights.locate("vgg16-imagenet"))
    assert two.value.names == ["vgg19-imagenet", "vgg16-imagenet"] and "\n" not in str(two.value)
    assert "vgg19-dcbb9e9d.pth not found" in str(two.value) and "vgg16-397923af.pth not found" in str(two.value)
    assert weights.load_all(lambda: 1, lambda: 2) == [1, 2]
