"""Class 2: what torch's zip reader would unpickle is exactly what was scanned — in .pt files, in the storage bytes
of NVIDIA pickles and in model folders (whose pickle weights are refused)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from guide_unlearn.checkpoints import load_torch_file, read_nvidia_pickle
from guide_unlearn.errors import CheckpointError, UnsafeCheckpointError
from guide_unlearn.pipelines.loading import load_generator
from guide_unlearn.testing import tiny_generator
from hostile import Asm, deflated_zeros, rewrite_zip, system_pickle, torch_bytes, two_directory_zip, write


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _evil_zip(sentinel: Path, rename: str) -> bytes:
    """A torch.save zip whose data.pkl runs a command, stored under the name ``rename(data.pkl entry)``."""
    good = torch_bytes({"w": torch.ones(2)})
    return rewrite_zip(good, lambda n, d: (n.replace("data.pkl", rename), system_pickle(f"touch {sentinel}"))
                       if n.endswith("data.pkl") else (n, d))


@pytest.mark.parametrize("spelling", ["DATA.PKL", "data.PKL", "Data.pkl", "x.Pkl"])
def test_differently_spelled_pickle_entry_is_refused_before_torch_reads_it(tmp_path, sentinel, spelling):
    path = write(tmp_path / "m.pt", _evil_zip(sentinel, spelling))
    with pytest.raises(UnsafeCheckpointError, match="refused pickle entry"):  # by the scan, not by torch
        load_torch_file(path)
    assert not sentinel.exists()


def test_a_second_pickle_entry_is_refused(tmp_path, sentinel):
    good = torch_bytes({"w": torch.ones(2)})
    prefix = zipfile.ZipFile(write(tmp_path / "g.pt", good)).namelist()[0].split("/")[0]
    data = rewrite_zip(good, lambda n, d: (n, d), extra=((f"{prefix}/constants.pkl", system_pickle("true")),))
    with pytest.raises(UnsafeCheckpointError, match="pickle entry"):
        load_torch_file(write(tmp_path / "m.pt", data))


def test_two_entries_equal_but_for_case_are_refused(tmp_path):
    good = torch_bytes({"w": torch.ones(2)})
    prefix = zipfile.ZipFile(write(tmp_path / "g.pt", good)).namelist()[0].split("/")[0]
    data = rewrite_zip(good, lambda n, d: (n, d), extra=((f"{prefix}/BYTEORDER", b"little"),))
    with pytest.raises(UnsafeCheckpointError, match="same name"):
        load_torch_file(write(tmp_path / "m.pt", data))


def test_an_entry_outside_the_archive_folder_is_refused(tmp_path):
    good = torch_bytes({"w": torch.ones(2)})
    data = rewrite_zip(good, lambda n, d: (n, d), extra=(("other/data.pkl", system_pickle("true")),))
    with pytest.raises(UnsafeCheckpointError):
        load_torch_file(write(tmp_path / "m.pt", data))


def test_a_legitimate_torch_file_still_loads(tmp_path):
    out = load_torch_file(write(tmp_path / "m.pt", torch_bytes({"w": torch.arange(3.0)})))
    assert torch.equal(out["w"], torch.arange(3.0))


def test_storage_bytes_inside_an_nvidia_pickle_are_scanned_by_torchs_rule(tmp_path, sentinel):
    evil = _evil_zip(sentinel, "DATA.PKL")
    data = Asm().glob("torch.storage", "_load_from_bytes").bytes(evil).tuple1().reduce().stop()
    with pytest.raises(UnsafeCheckpointError, match="refused pickle entry"):
        read_nvidia_pickle(write(tmp_path / "n.pkl", data))
    assert not sentinel.exists()


def test_a_deflate_bomb_entry_is_refused_without_inflating_it(tmp_path):
    good = torch_bytes({"w": torch.ones(2)})
    data = rewrite_zip(good, lambda n, d: (n, d + b"\0" * (64 << 20)) if n.endswith("data/0") else (n, d),
                       compression=zipfile.ZIP_DEFLATED)
    assert len(data) < 1 << 20
    with pytest.raises(CheckpointError, match="decompression bomb"):
        load_torch_file(write(tmp_path / "m.pt", data))


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.bin", "pytorch_model.bin", "weights.PT"])
def test_model_folder_with_pickle_weights_is_refused(tmp_path, sentinel, name):
    folder = tmp_path / "model"
    tiny_generator("stylegan2").save_pretrained(str(folder))
    (folder / name).write_bytes(torch_bytes({"x": 1}))
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="pickle weights"):
        load_generator(folder)
    assert not sentinel.exists()


def test_a_second_central_directory_that_inflates_a_storage_is_refused_without_inflating_it(tmp_path):
    # torch's reader would allocate 2 GiB for data/0 (a deflated entry declaring that size) from a small file;
    # Python's zipfile sees 12 honest bytes. (The stream inflates to 16 MiB only: the refusal comes before.)
    bomb = deflated_zeros(16 << 20)
    data = two_directory_zip(torch_bytes({"w": torch.ones(3)}),
                             lambda n, d: (8, bomb, 1 << 31) if n.endswith("data/0") else None)
    assert len(data) < 4 << 20 and zipfile.ZipFile(write(tmp_path / "m.pt", data)).infolist()[-3].file_size < 100
    with pytest.raises(UnsafeCheckpointError, match="central directories disagree"):
        load_torch_file(tmp_path / "m.pt")


def test_a_second_central_directory_hiding_another_pickle_is_refused(tmp_path, sentinel):
    evil = system_pickle(f"touch {sentinel}")
    data = two_directory_zip(torch_bytes({"w": torch.ones(3)}),
                             lambda n, d: (0, evil, len(evil)) if n.endswith("data.pkl") else None)
    with pytest.raises(UnsafeCheckpointError):
        load_torch_file(write(tmp_path / "m.pt", data))
    assert not sentinel.exists()


def test_a_second_central_directory_in_storage_bytes_of_an_nvidia_pickle_is_refused(tmp_path):
    inner = two_directory_zip(torch_bytes(torch.ones(3).untyped_storage()),
                              lambda n, d: (8, deflated_zeros(1 << 20), 1 << 30) if "/data/" in n else None)
    data = Asm().glob("torch.storage", "_load_from_bytes").bytes(inner).tuple1().reduce().stop()
    with pytest.raises(UnsafeCheckpointError, match="central directories disagree"):
        read_nvidia_pickle(write(tmp_path / "n.pkl", data))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_entries_compressed_with_a_method_torch_does_not_write_are_refused(tmp_path, method):
    data = rewrite_zip(torch_bytes({"w": torch.ones(2)}), lambda n, d: (n, d), compression=method)
    with pytest.raises(UnsafeCheckpointError, match="compressed with method"):
        load_torch_file(write(tmp_path / "m.pt", data))
