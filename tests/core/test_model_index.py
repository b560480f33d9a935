"""A saved eraser folder carries what ``IdentityEraser.from_pretrained(name)`` gave (``model_index.json``, as a
diffusers pipeline folder does): the inverter choice and its code book, the recommended erase settings, the
licence and the card. Loading the same weights by name or by path gives the same eraser."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from guide_unlearn import IdentityEraser
from guide_unlearn.errors import CheckpointError
from guide_unlearn.models import bundled_model_dir
from guide_unlearn.testing import tiny_generator

DEMO = bundled_model_dir("demo_faces")


@pytest.fixture
def inverter_calls(monkeypatch):
    """The (inverter name, code book path) each eraser asks the loader for; nothing is built."""
    from guide_unlearn.pipelines import loading

    calls = []

    def fake(name, device="cpu", generator=None, allow_download=None, code_book=None):
        calls.append((name, None if code_book is None else Path(code_book).resolve()))
        return "an inverter"

    monkeypatch.setattr(loading, "load_inverter", fake)
    return calls


def _choice(eraser, calls):
    calls.clear()
    eraser.inverter  # noqa: B018  (built at first use)
    return calls[0] if calls else None


def test_a_saved_eraser_loads_back_with_its_recommended_settings(tmp_path):
    eraser = IdentityEraser.from_pretrained("tiny-stylegan2")
    eraser.erase_defaults = {"iterations": 7, "global_samples": 3}
    eraser.save_pretrained(tmp_path / "e")
    again = IdentityEraser.from_pretrained(str(tmp_path / "e"))
    assert again.erase_defaults == {"iterations": 7, "global_samples": 3}
    assert again.default_config().iterations == 7


def test_the_demo_folder_by_path_gets_what_the_demo_name_gets(inverter_calls):
    by_name = IdentityEraser.from_pretrained("demo-faces")
    by_path = IdentityEraser.from_pretrained(str(DEMO))
    assert by_path.erase_defaults == by_name.erase_defaults != {}
    assert _choice(by_path, inverter_calls) == _choice(by_name, inverter_calls) == (
        "code-projector", (DEMO / "code_book.safetensors").resolve())


def test_a_saved_demo_eraser_keeps_its_inverter_code_book_settings_licence_and_card(tmp_path, inverter_calls):
    from guide_unlearn.pipelines.registry import base_license

    IdentityEraser.from_pretrained("demo-faces").save_pretrained(tmp_path / "e")
    again = IdentityEraser.from_pretrained(str(tmp_path / "e"))
    assert again.erase_defaults == IdentityEraser.from_pretrained("demo-faces").erase_defaults
    assert _choice(again, inverter_calls) == ("code-projector", (tmp_path / "e" / "code_book.safetensors").resolve())
    assert base_license(str(tmp_path / "e")) == base_license("demo-faces")
    index = json.loads((tmp_path / "e" / "model_index.json").read_text())
    assert index["card"] == "README.md" and (tmp_path / "e" / "README.md").is_file()


def test_a_converted_demo_folder_keeps_the_recipe_and_the_code_book(tmp_path, inverter_calls):
    from guide_unlearn.cli import main

    assert main(["convert", "demo-faces", str(tmp_path / "c")]) == 0
    converted = IdentityEraser.from_pretrained(str(tmp_path / "c"))
    assert converted.erase_defaults == IdentityEraser.from_pretrained("demo-faces").erase_defaults
    assert _choice(converted, inverter_calls) == ("code-projector",
                                                  (tmp_path / "c" / "code_book.safetensors").resolve())


def test_a_converted_registry_model_records_its_inverter_choice(tmp_path, monkeypatch):
    """A generator loaded by a registry name (not a folder) carries the entry's choice into the folder it is
    saved to, so `convert NAME DIR` keeps it."""
    from guide_unlearn.lineage import read_model_index
    from guide_unlearn.pipelines import loading, registry

    entry = registry.CheckpointEntry("tiny-with-e4e", "", "tiny", "generator", "test entry", family="stylegan2",
                                     default_inverter="e4e-ffhq", erase_defaults={"iterations": 9})
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    loading.load_generator("tiny-with-e4e").save_pretrained(tmp_path / "g")
    index = read_model_index(tmp_path / "g")
    assert index["inverter"] == "e4e-ffhq" and index["erase_defaults"] == {"iterations": 9}


def test_a_merged_export_keeps_the_recipe(tmp_path, inverter_calls):
    from guide_unlearn.adapters.perceptual import MultiScaleGradL1

    eraser = IdentityEraser.from_pretrained("demo-faces", identity_model=None, perceptual=MultiScaleGradL1())
    w = eraser.generator.mapping(torch.zeros(1, eraser.generator.z_dim))
    patch = eraser.erase(w, iterations=1, global_samples=1, adjacency_samples=1, progress=False,
                         measure=False).patch
    eraser.apply_patch(patch)
    eraser.merge_patches()
    eraser.save_pretrained(tmp_path / "m")
    merged = IdentityEraser.from_pretrained(str(tmp_path / "m"))
    assert merged.merged_patches[0]["patch_id"] == patch.patch_id
    assert merged.erase_defaults == IdentityEraser.from_pretrained("demo-faces").erase_defaults
    assert _choice(merged, inverter_calls)[0] == "code-projector"


def test_a_folder_without_model_index_warns_once_and_uses_the_generic_settings(tmp_path, caplog):
    tiny_generator(seed=2).save_pretrained(tmp_path / "g")
    assert not (tmp_path / "g" / "model_index.json").exists()
    with caplog.at_level(logging.WARNING):
        first = IdentityEraser.from_pretrained(str(tmp_path / "g"))
        IdentityEraser.from_pretrained(str(tmp_path / "g"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "model_index.json" in r.getMessage()]
    assert len(warnings) == 1 and "generic" in warnings[0].getMessage()
    assert first.erase_defaults == {}


@pytest.mark.parametrize("bad, match", [
    ("[1, 2]", "not a JSON object"),
    ('{"inverter": "no-such-inverter"}', "no-such-inverter"),
    ('{"inverter": "stylegan2-ffhq"}', "not an inverter"),
    ('{"erase_defaults": {"iteratons": 3}}', "iteratons"),
    ('{"erase_defaults": {"iterations": -3}}', "erase_defaults"),
    ('{"code_book": "../elsewhere.safetensors"}', "plain file name"),
    ('{"license": "mit"}', "license"),
])
def test_a_malformed_model_index_is_refused_saying_what_to_do(tmp_path, bad, match):
    tiny_generator().save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "model_index.json").write_text(bad)
    with pytest.raises(CheckpointError, match=match) as info:
        IdentityEraser.from_pretrained(str(tmp_path / "g"))
    assert "model_index.json" in str(info.value)


def test_an_oversized_model_index_is_refused_before_it_is_parsed(tmp_path):
    tiny_generator().save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "model_index.json").write_text('{"card": "' + "x" * (2 << 20) + '"}')
    with pytest.raises(CheckpointError, match="limit"):
        IdentityEraser.from_pretrained(str(tmp_path / "g"))


def test_every_bundled_model_folder_has_the_model_index_its_registry_entry_describes():
    from guide_unlearn.lineage import read_model_index
    from guide_unlearn.pipelines.registry import REGISTRY, entry_index

    bundled = [e for e in REGISTRY.values() if e.bundled]
    assert bundled
    for entry in bundled:
        assert read_model_index(bundled_model_dir(entry.bundled)) == entry_index(entry).to_json(), entry.name
