"""A truncated / corrupted / wrong-format file gives a typed error that says what the file seems to be."""

from __future__ import annotations

import gzip
import pickle

import pytest
import torch

from ckpt_writers import tiny_generator
from guide_unlearn.checkpoints import detect_format, load_torch_file
from guide_unlearn.errors import CheckpointError
from guide_unlearn.pipelines.loading import load_generator


def test_detects_each_supported_kind(tmp_path):
    from safetensors.torch import save_file

    torch.save({"a": torch.zeros(1)}, tmp_path / "z.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    save_file({"a": torch.zeros(1)}, str(tmp_path / "s.safetensors"))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    tiny_generator().save_pretrained(tmp_path / "folder")
    kinds = {n: detect_format(tmp_path / n).kind for n in ("z.pt", "l.pt", "s.safetensors", "p.pkl", "folder")}
    assert kinds == {"z.pt": "torch-zip", "l.pt": "torch-legacy", "s.safetensors": "safetensors", "p.pkl": "pickle",
                     "folder": "folder"}


def test_truncated_torch_zip_says_truncated(tmp_path):
    torch.save({"g_ema": {"w": torch.randn(1000)}}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="torch.save zip checkpoint but is truncated"):
        load_generator(tmp_path / "cut.pt")


def test_truncated_safetensors_says_truncated(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.randn(1000)}, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="safetensors file truncated"):
        load_generator(tmp_path / "cut.safetensors")


def test_html_download_page_is_named(tmp_path):
    (tmp_path / "e4e_ffhq_encode.pt").write_text("<!DOCTYPE html><html><title>Google Drive</title></html>")
    with pytest.raises(CheckpointError, match="HTML web page"):
        load_generator(tmp_path / "e4e_ffhq_encode.pt")


def test_gzip_file_is_named(tmp_path):
    (tmp_path / "net.pkl.gz").write_bytes(gzip.compress(b"hello"))
    with pytest.raises(CheckpointError, match="gzip"):
        load_generator(tmp_path / "net.pkl.gz")


def test_empty_file_is_named(tmp_path):
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_generator(tmp_path / "empty.pkl")


def test_random_bytes_are_an_unknown_format(tmp_path):
    (tmp_path / "noise.bin").write_bytes(bytes(range(7, 200)))
    with pytest.raises(CheckpointError, match="unknown file format"):
        load_generator(tmp_path / "noise.bin")


def test_folder_without_config_is_explained(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(CheckpointError, match="without config.json"):
        load_generator(tmp_path / "weights")


def test_torch_file_loader_refuses_a_pickle_and_says_what_it_is(tmp_path):
    (tmp_path / "x.pt").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="found a plain pickle"):
        load_torch_file(tmp_path / "x.pt")


def test_torch_checkpoint_of_unknown_content_lists_its_keys(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(1)}, "epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="'epoch', 'model'"):
        load_generator(tmp_path / "other.pt")
