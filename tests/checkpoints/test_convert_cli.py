"""``guide-unlearn convert``: official file -> our folder; generator folder -> official layouts."""

from __future__ import annotations

import argparse

import pytest
import torch

from ckpt_writers import render, tiny_generator, write_nvidia_pickle
from guide_unlearn.cli import convert as cli_convert
from guide_unlearn.errors import CheckpointError, SaveError
from guide_unlearn.pipelines.loading import load_generator


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_convert.add_parser(sub)
    args = parser.parse_args(["convert", *argv])
    return args.func(args)


def test_convert_nvidia_pickle_to_folder_loads_identically(tmp_path):
    g = tiny_generator(seed=11)
    src = write_nvidia_pickle(tmp_path / "net.pkl", g)
    assert _run(str(src), str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "config.json").is_file()
    assert torch.equal(render(load_generator(tmp_path / "out")), render(g))


@pytest.mark.parametrize("layout", ["nvidia", "rosinality"])
def test_convert_folder_to_official_layout(tmp_path, layout):
    g = tiny_generator(seed=12)
    g.save_pretrained(tmp_path / "erased")
    assert _run(str(tmp_path / "erased"), str(tmp_path / f"e-{layout}"), "--to", layout) == 0
    out = tmp_path / f"e-{layout}.safetensors"
    assert torch.equal(render(load_generator(out)), render(g))


def test_convert_refuses_to_overwrite(tmp_path):
    g = tiny_generator()
    g.save_pretrained(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("keep")
    with pytest.raises(SaveError, match="--overwrite"):
        _run(str(tmp_path / "a"), str(tmp_path / "b"))
    with pytest.raises(SaveError, match="never replaced"):
        _run(str(tmp_path / "a"), str(tmp_path / "b"), "--overwrite")
    assert (tmp_path / "b" / "x").read_text() == "keep"


def test_convert_missing_source_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        _run(str(tmp_path / "nope.pkl"), str(tmp_path / "out"))


def test_cli_main_prints_one_line_and_exits_nonzero(tmp_path, capsys):
    from guide_unlearn.cli import main

    bad = tmp_path / "page.pkl"
    bad.write_bytes(b"<!DOCTYPE html><html>Google Drive - Virus scan warning</html>")
    assert main(["convert", str(bad), str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HTML" in err[0]
