"""Name -> file: cache (huggingface_hub layout), download with progress from a local HTTP server, offline errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from ckpt_writers import render, tiny_generator, write_nvidia_pickle
from guide_unlearn.checkpoints import CheckpointSource, cache_root, download, resolve_file
from guide_unlearn.errors import CheckpointError
from guide_unlearn.pipelines.loading import load_generator, load_inverter
from guide_unlearn.pipelines.registry import CheckpointEntry, resolve_checkpoint


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _ShortBody(_Quiet):
    def do_GET(self):  # announces 1000 bytes, sends 10
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")


def _serve(handler, directory: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = _serve(_Quiet, root)
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_into_cache_with_hub_layout_then_load(served, capsys):
    root, base = served
    g = tiny_generator(seed=31)
    write_nvidia_pickle(root / "stylegan2-tiny.pkl", g)
    digest = hashlib.sha256((root / "stylegan2-tiny.pkl").read_bytes()).hexdigest()
    entry = CheckpointEntry("tiny-sg2", "stylegan2-tiny.pkl", "nvidia-pkl", "generator", "test",
                            url=f"{base}/stylegan2-tiny.pkl", sha256=digest)
    loaded = load_generator(entry, allow_download=True)
    assert torch.equal(render(loaded), render(g))
    repo = cache_root() / "models--guide-unlearn--tiny-sg2"
    assert (repo / "blobs" / digest).is_file()
    revision = (repo / "refs" / "main").read_text()
    snap = repo / "snapshots" / revision / "stylegan2-tiny.pkl"
    assert snap.is_symlink() and snap.resolve() == (repo / "blobs" / digest).resolve()
    assert "stylegan2-tiny.pkl" in capsys.readouterr().err  # the tqdm progress bar


def test_second_resolve_uses_the_cache_without_network(served):
    root, base = served
    (root / "f.bin").write_bytes(b"payload")
    src = CheckpointSource("cached-once", "f.bin", url=f"{base}/f.bin")
    first = resolve_file(src, allow_download=True, progress=False)
    (root / "f.bin").unlink()  # the server no longer has it
    assert resolve_file(src, allow_download=False) == first


def test_digest_mismatch_discards_the_download(served, tmp_path):
    root, base = served
    (root / "f.bin").write_bytes(b"changed file")
    with pytest.raises(CheckpointError, match="sha256"):
        download(f"{base}/f.bin", tmp_path / "out" / "f.bin", sha256="0" * 64, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_short_download_is_refused_and_leaves_nothing(tmp_path):
    server = _serve(_ShortBody, tmp_path)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        with pytest.raises(CheckpointError, match="of 1000 bytes|failed"):
            download(url, tmp_path / "dl" / "x.pkl", progress=False, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "dl" / "x.pkl").exists()
    assert [p.name for p in (tmp_path / "dl").iterdir()] == []


def test_http_404_is_a_checkpoint_error(served, tmp_path):
    _, base = served
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download(f"{base}/missing.pkl", tmp_path / "m.pkl", progress=False)


def test_only_http_urls_are_downloaded(tmp_path):
    with pytest.raises(CheckpointError, match="refusing"):
        download(f"file://{tmp_path}/x", tmp_path / "y", progress=False)


def test_offline_error_names_the_file_and_where_to_put_it():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by tests/conftest.py
    with pytest.raises(CheckpointError) as info:
        load_generator("stylegan2-ffhq")
    msg = str(info.value)
    assert "stylegan2-ffhq-1024x1024.pkl" in msg and "offline" in msg
    assert str(cache_root() / "models--guide-unlearn--stylegan2-ffhq" / "snapshots" / "manual") in msg


def test_browser_only_source_says_where_to_get_it():
    with pytest.raises(CheckpointError, match="e4e_ffhq_encode.pt.*github.com/omertov/encoder4editing"):
        load_inverter("e4e-ffhq")


def test_file_dropped_in_the_manual_snapshot_is_found(tmp_path):
    g = tiny_generator(seed=32)
    manual = cache_root() / "models--guide-unlearn--stylegan2-ffhq" / "snapshots" / "manual"
    manual.mkdir(parents=True, exist_ok=True)
    try:
        write_nvidia_pickle(manual / "stylegan2-ffhq-1024x1024.pkl", g)
        assert torch.equal(render(load_generator("stylegan2-ffhq")), render(g))
    finally:
        (manual / "stylegan2-ffhq-1024x1024.pkl").unlink()


def test_checkpoint_folders_env_is_searched(tmp_path, monkeypatch):
    (tmp_path / "ffhq.pkl").write_bytes(b"x")
    monkeypatch.setenv("GUIDE_UNLEARN_CHECKPOINTS", str(tmp_path))
    path, entry = resolve_checkpoint("stylegan2-ada-ffhq")
    assert path == tmp_path / "ffhq.pkl" and entry.name == "stylegan2-ada-ffhq"


def test_unknown_name_lists_known_names():
    with pytest.raises(CheckpointError, match="known names: .*e4e-ffhq"):
        load_generator("stylegan2-imaginary")


def test_missing_path_is_reported_as_a_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_generator(tmp_path / "nowhere" / "net.pkl")


def test_generator_and_inverter_names_are_not_confused(tmp_path, monkeypatch):
    (tmp_path / "encoder_FFHQ.pt").write_bytes(b"x")
    (tmp_path / "stylegan2-ffhq-1024x1024.pkl").write_bytes(b"x")
    monkeypatch.setenv("GUIDE_UNLEARN_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="load_inverter"):
        load_generator("goae-ffhq")
    with pytest.raises(CheckpointError, match="e4e-ffhq"):
        load_inverter("stylegan2-ffhq")


def test_downloaded_file_gets_the_normal_file_mode(served, tmp_path):
    """A shared cache stays readable to other users: umask 022 gives 0o644, not mkstemp's 0o600."""
    import stat

    root, base = served
    (root / "f.bin").write_bytes(b"payload")
    old = os.umask(0o022)
    try:
        dest = download(f"{base}/f.bin", tmp_path / "cache" / "f.bin", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644 and dest.read_bytes() == b"payload"
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]
