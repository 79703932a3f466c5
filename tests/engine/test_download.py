"""Model lookup and the resumable downloader, against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from comfyui_ppd import catalogue
from comfyui_ppd import download as dl
from comfyui_ppd.errors import CheckpointError, PPDError
from comfyui_ppd.families.ppd import OFFICIAL_REPO
from comfyui_ppd.family import SLOTS

DATA = random.Random(0).randbytes(300_000)
CHUNK = 1 << 14


class _Server:
    """Serves DATA at /file (Range aware) and /redirect/file (302 to /file); records each request."""

    def __init__(self) -> None:
        self.ignore_range = False
        self.drops = 0  # how many of the next responses stop early
        self.drop_at = len(DATA) // 2  # body bytes sent before such a drop
        self.requests: list[tuple[str, str | None]] = []


def _handler(state: _Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            if self.path == "/redirect/file":
                self.send_response(302)
                self.send_header("Location", "/file")
                self.end_headers()
                return
            if self.path in ("/page", "/disguised-page"):   # a web page where the file should be
                body = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Log in</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8" if self.path == "/page"
                                 else "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path != "/file":
                self.send_error(404)
                return
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(m[1]) if m and not state.ignore_range else 0
            if start >= len(DATA) and start > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(DATA)}")
                self.end_headers()
                return
            body = DATA[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.drops:
                state.drops -= 1
                body = body[:state.drop_at]  # then the connection closes (HTTP/1.0)
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = _Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No real model folders, caches or proxies leak into these tests."""
    monkeypatch.delenv(catalogue.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file"


# ------------------------------------------------------------------------------ downloader


def test_full_download(server, tmp_path):
    dest = tmp_path / "m" / "model.pth"
    assert dl.download(server.url + "/file", dest, progress=False, chunk=CHUNK) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_suffix(".pth.part").exists()
    assert server.requests == [("/file", None)]


def test_resume_from_part_file(server, tmp_path):
    dest, half = tmp_path / "model.pth", len(DATA) // 2
    (tmp_path / "model.pth.part").write_bytes(DATA[:half])
    dl.download(server.url + "/file", dest, progress=False, chunk=CHUNK)
    assert server.requests == [("/file", f"bytes={half}-")]
    assert dest.read_bytes() == DATA


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    server.drops = 1
    dest = tmp_path / "model.pth"
    dl.download(server.url + "/file", dest, progress=False, chunk=CHUNK)
    assert server.requests == [("/file", None), ("/file", f"bytes={server.drop_at}-")]
    assert dest.read_bytes() == DATA


def test_connection_that_keeps_dropping_keeps_part_and_says_so(server, tmp_path):
    dest, part = tmp_path / "model.pth", tmp_path / "model.pth.part"
    part.write_bytes(DATA[:1000])
    server.drops, server.drop_at = 99, 0
    with pytest.raises(PPDError) as err:
        dl.download(server.url + "/file", dest, progress=False, chunk=CHUNK)
    msg = str(err.value)
    assert server.url + "/file" in msg and str(part) in msg and "resume" in msg
    assert not dest.exists() and part.read_bytes() == DATA[:1000]
    assert 1 < len(server.requests) < 10


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    dl.download(server.url + "/file", dest, progress=False, chunk=CHUNK)
    assert server.requests == [("/file", "bytes=5000-")]
    assert dest.read_bytes() == DATA


def test_redirect_keeps_range(server, tmp_path):
    dest, third = tmp_path / "model.pth", len(DATA) // 3
    (tmp_path / "model.pth.part").write_bytes(DATA[:third])
    dl.download(server.url + "/redirect/file", dest, progress=False, chunk=CHUNK)
    assert server.requests == [("/redirect/file", f"bytes={third}-"), ("/file", f"bytes={third}-")]
    assert dest.read_bytes() == DATA


def test_416_with_complete_part_finishes(server, tmp_path):
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(DATA)
    dl.download(server.url + "/file", dest, progress=False)
    assert server.requests == [("/file", f"bytes={len(DATA)}-")]
    assert dest.read_bytes() == DATA


def test_416_with_oversized_part_starts_over(server, tmp_path):
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(DATA + b"junk")
    dl.download(server.url + "/file", dest, progress=False, chunk=CHUNK)
    assert [r for _, r in server.requests] == [f"bytes={len(DATA) + 4}-", None]
    assert dest.read_bytes() == DATA


def test_existing_dest_is_kept_without_a_request(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(b"already here")
    assert dl.download(server.url + "/file", dest, progress=False) == dest
    assert dest.read_bytes() == b"already here" and server.requests == []


def test_http_error_names_url_and_target(server, tmp_path):
    with pytest.raises(PPDError, match="HTTP 404") as err:
        dl.download(server.url + "/missing", tmp_path / "x.pth", progress=False)
    assert server.url + "/missing" in str(err.value) and str(tmp_path / "x.pth") in str(err.value)


@pytest.mark.parametrize("path,sent", [("/page", "text/html; charset=utf-8"),
                                       ("/disguised-page", "application/octet-stream")])
def test_web_page_is_refused_and_nothing_is_left(server, tmp_path, path, sent):
    """An HTML answer (by Content-Type, or by a body that starts like HTML) is never saved as the model."""
    dest = tmp_path / "m" / "ppd.pth"
    with pytest.raises(PPDError) as err:
        dl.download(server.url + path, dest, progress=False)
    msg = str(err.value)
    assert f"the server sent a web page ({sent}) instead of the model file" in msg
    assert "nothing was saved" in msg and f"save it as {dest}" in msg and server.url + path in msg
    assert not dest.exists() and not dest.with_name("ppd.pth.part").exists()
    assert len(server.requests) == 1                  # refused at once, not retried


def test_progress_bar_on_stderr(server, tmp_path, capsys):
    dl.download(server.url + "/file", tmp_path / "model.pth", chunk=CHUNK)
    err = capsys.readouterr().err
    assert "\r" in err and "100.0%" in err and "MB/s" in err and "model.pth" in err


def test_network_failure_lists_url_and_target(tmp_path):
    url, dest = _closed_port_url(), tmp_path / "model.pth"
    with pytest.raises(PPDError) as err:
        dl.download(url, dest, progress=False, timeout=2)
    assert url in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists()


def _fake_catalogue(monkeypatch, url_a: str, url_b: str) -> None:
    monkeypatch.setattr(dl, "OFFICIAL_FILES", {f.name: f for f in (
        catalogue.ModelFile("a.pth", ("dit",), "da2", url_a, "~1 MB", "A."),
        catalogue.ModelFile("b.pth", ("encoder",), "da2", url_b, "~1 MB", "B."),
        catalogue.ModelFile("c.pth", ("dit",), "moge2", None, "~1 MB", "Get c.pth from the drive link."),
    )})


def test_download_official_offline_lists_every_file(tmp_path, monkeypatch):
    url = _closed_port_url()
    _fake_catalogue(monkeypatch, url + "?a", url + "?b")
    with pytest.raises(PPDError) as err:
        dl.download_official(None, tmp_path / "models", progress=False)
    msg = str(err.value)
    models = tmp_path / "models"
    for needed in (url + "?a", url + "?b", str(models / "a.pth"), str(models / "b.pth"),
                   "Get c.pth from the drive link.", str(models / "c.pth")):
        assert needed in msg


def test_download_official_fetches_and_explains_manual_files(server, tmp_path, monkeypatch, capsys):
    _fake_catalogue(monkeypatch, server.url + "/file", server.url + "/redirect/file")
    target = tmp_path / "models"
    got = dl.download_official(None, target, progress=False)
    assert got == [target / "a.pth", target / "b.pth"]
    assert (target / "a.pth").read_bytes() == DATA == (target / "b.pth").read_bytes()
    assert "Get c.pth from the drive link." in capsys.readouterr().err
    with pytest.raises(PPDError, match="drive link"):
        dl.download_official(["c.pth"], target, progress=False)
    (target / "c.pth").write_bytes(b"placed by hand")
    got = dl.download_official(["c.pth", "a.pth"], target, progress=False)
    assert got == [target / "c.pth", target / "a.pth"]
    with pytest.raises(PPDError, match="a.pth"):
        dl.download_official(["nope.pth"], target)


def test_official_catalogue():
    files = catalogue.OFFICIAL_FILES
    assert set(files) == {"ppd.pth", "ppd_moge.pth", "depth_anything_v2_vitl.pth", "moge2_vitl_normal.pt",
                          "ppvd.pth", "pi3.safetensors"}
    drive_only = ("ppd_moge.pth", "ppvd.pth")
    for name, f in files.items():
        assert name == f.name and set(f.slots) <= set(SLOTS) and f.semantics in ("da2", "moge2", "pi3")
        assert f.url.startswith("https://huggingface.co/") if name not in drive_only else f.url is None
    assert all(OFFICIAL_REPO in files[n].note for n in drive_only)
    assert files["pi3.safetensors"].url == "https://huggingface.co/yyfz233/Pi3/resolve/main/model.safetensors"
    assert {catalogue.DEFAULT_NAMES[r] for r in SLOTS} <= set(files)


# ---------------------------------------------------------------------------------- lookup


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"w")
    return path


def _fake_comfy(root: Path, marker: str = "main") -> Path:
    """A ComfyUI install with our pack in custom_nodes; returns the engine's download.py path there."""
    if marker == "main":
        _touch(root / "main.py")
        (root / "comfy").mkdir()
    elif marker == "folder_paths":
        _touch(root / "folder_paths.py")
    return _touch(root / "custom_nodes" / "comfyui-ppd" / "comfyui_ppd" / "download.py")


@pytest.mark.parametrize("marker", ["main", "folder_paths"])
def test_models_dirs_order_inside_comfyui(tmp_path, monkeypatch, marker):
    start = _fake_comfy(tmp_path / "ComfyUI", marker)
    monkeypatch.setenv(catalogue.ENV_VAR, str(tmp_path / "env"))
    assert catalogue.models_dirs(str(tmp_path / "flag"), start=start) == [
        tmp_path / "flag", tmp_path / "env", tmp_path / "ComfyUI" / "models" / "ppd",
        tmp_path / "xdg" / "comfyui-ppd"]


def test_models_dirs_ignores_non_comfyui_tree(tmp_path):
    start = _fake_comfy(tmp_path / "NotComfy", marker="none")
    assert catalogue.models_dirs(start=start) == [tmp_path / "xdg" / "comfyui-ppd"]


def test_find_model_search_order(tmp_path, monkeypatch):
    flag, env = _touch(tmp_path / "flag" / "ppd.pth"), _touch(tmp_path / "env" / "ppd.pth")
    monkeypatch.setenv(catalogue.ENV_VAR, str(env.parent))
    assert catalogue.find_model("ppd.pth", "dit", explicit=flag.parent) == flag
    assert catalogue.find_model(None, "dit", explicit=flag.parent) == flag
    assert catalogue.find_model("ppd.pth", "dit", explicit=tmp_path / "empty") == env
    assert catalogue.find_model(None, "dit") == env


def test_find_model_in_comfyui_folder(tmp_path):
    start = _fake_comfy(tmp_path / "ComfyUI")
    enc = _touch(tmp_path / "ComfyUI" / "models" / "ppd" / "depth_anything_v2_vitl.pth")
    assert catalogue.find_model(None, "encoder", start=start) == enc


def test_find_model_existing_path_as_is(tmp_path):
    path = _touch(tmp_path / "anywhere" / "my_dit.pth")
    assert catalogue.find_model(str(path), "dit") == path


def test_find_model_default_then_single_candidate(tmp_path):
    folder = tmp_path / "models"
    moge_dit, moge_enc = _touch(folder / "ppd_moge.pth"), _touch(folder / "moge2_vitl_normal.pt")
    assert catalogue.find_model(None, "dit", explicit=folder) == moge_dit
    assert catalogue.find_model(None, "encoder", explicit=folder) == moge_enc
    default = _touch(folder / "ppd.pth")
    assert catalogue.find_model(None, "dit", explicit=folder) == default


def test_missing_default_explains_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv(catalogue.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(CheckpointError) as err:
        catalogue.find_model(None, "encoder", explicit=tmp_path / "flag")
    msg = str(err.value)
    for part in (str(tmp_path / "flag"), str(tmp_path / "env"), str(tmp_path / "xdg" / "comfyui-ppd"),
                 catalogue.OFFICIAL_FILES["depth_anything_v2_vitl.pth"].url,
                 str(tmp_path / "flag" / "depth_anything_v2_vitl.pth"), "--download"):
        assert part in msg


def test_missing_ppd_moge_points_to_official_readme(tmp_path):
    with pytest.raises(CheckpointError) as err:
        catalogue.find_model("ppd_moge.pth", "dit", explicit=tmp_path / "flag")
    assert OFFICIAL_REPO in str(err.value) and str(tmp_path / "flag") in str(err.value)


def test_missing_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="ppd.pth") as err:
        catalogue.find_model("typo.pth", "dit", explicit=tmp_path)
    assert "typo.pth" in str(err.value)
    with pytest.raises(CheckpointError, match="no file at this path"):
        catalogue.find_model(str(tmp_path / "nowhere" / "ppd.pth"), "dit")
