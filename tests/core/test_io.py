"""Atomic writes: the file appears whole, with the mode of a normally created file."""

from __future__ import annotations

import os
import stat

from guide_unlearn.io import atomic_write_bytes


def test_atomic_write_gives_the_normal_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"xyz")
        (tmp_path / "b.bin").write_bytes(b"xyz")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o644
    assert (tmp_path / "a.bin").read_bytes() == b"xyz"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
