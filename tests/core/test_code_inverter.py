"""The code-space inverter (z, then optionally w) and its registry wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guide_unlearn.adapters.projector import CodeInverter
from guide_unlearn.errors import CheckpointError, InputError
from guide_unlearn.testing import tiny_generator


@pytest.fixture(scope="module")
def gen():
    return tiny_generator("stylegan2", seed=0)


def _target(gen, seed=5):
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen.synthesis(gen.mapping(z, None), noise_mode="const").images


def _fit(inv, gen, ws, images):
    with torch.no_grad():
        return inv._loss(gen.synthesis(ws, noise_mode="const").images, images)


def test_optimising_z_beats_the_best_random_start(gen):
    images = _target(gen)
    start_only = CodeInverter(gen, starts=16, steps=0, refine_steps=0)
    optimised = CodeInverter(gen, starts=16, steps=60, refine_steps=0)
    g = lambda: torch.Generator().manual_seed(0)
    before = _fit(start_only, gen, start_only.invert(images, generator=g()), images)
    after = _fit(optimised, gen, optimised.invert(images, generator=g()), images)
    assert (after < 0.7 * before).all()


def test_codes_are_in_the_mapping_range(gen):
    ws = CodeInverter(gen, starts=4, steps=5, refine_steps=0).invert(_target(gen), generator=torch.Generator().manual_seed(0))
    assert ws.shape == (2, gen.num_ws, gen.w_dim)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))  # one w for every layer, as the mapping makes


@pytest.mark.slow
def test_same_seed_same_codes_and_batching_only_rounds(gen):
    images = _target(gen)
    inv = CodeInverter(gen, starts=8, steps=10)
    both = inv.invert(images, generator=torch.Generator().manual_seed(3))
    one = inv.invert(images[1:], generator=torch.Generator().manual_seed(3))
    again = inv.invert(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(both, again)
    # per-image starts and steps: the batch changes only float rounding in the batched convolutions, which 110
    # optimisation steps amplify (max 0.017-0.021 depending on the CPU and thread count) but which stays tiny
    # against what another seed's starts give the same image (max ~2.4, mean ~0.6)
    other = inv.invert(images[1:], generator=torch.Generator().manual_seed(4))
    batching, seeds = (both[1:] - one).abs(), (other - one).abs()
    assert batching.max() < 0.05 * seeds.max() and batching.mean() < 0.05 * seeds.mean()


def test_w_refinement_improves_the_fit(gen):
    images = _target(gen, seed=9)
    g = lambda: torch.Generator().manual_seed(0)
    z_only = CodeInverter(gen, starts=8, steps=20, refine_steps=0)
    a = _fit(z_only, gen, z_only.invert(images, generator=g()), images)
    for space in ("w", "w+"):
        refined = CodeInverter(gen, starts=8, steps=20, refine_steps=30, refine_lr=0.02, refine_space=space)
        b = _fit(refined, gen, refined.invert(images, generator=g()), images)
        assert (b < a).all(), space


def test_w_plus_refinement_gives_per_layer_codes(gen):
    ws = CodeInverter(gen, starts=4, steps=5, refine_steps=10, refine_lr=0.05).invert(_target(gen))
    assert not torch.equal(ws, ws[:, :1].expand_as(ws))


def test_generator_parameters_keep_their_grad_flags(gen):
    flags = {n: p.requires_grad for n, p in gen.named_parameters()}
    CodeInverter(gen, starts=2, steps=2).invert(_target(gen))
    assert flags == {n: p.requires_grad for n, p in gen.named_parameters()}


def test_bad_settings_and_images_are_refused(gen):
    with pytest.raises(InputError):
        CodeInverter(gen, starts=0)
    with pytest.raises(InputError, match="refine_space"):
        CodeInverter(gen, refine_space="z")
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        CodeInverter(gen, steps=1).invert(torch.zeros(3, 32, 32))


def test_registry_code_projector_needs_a_generator(gen):
    from guide_unlearn.pipelines.loading import load_inverter
    from guide_unlearn.pipelines.registry import resolve_checkpoint

    assert isinstance(load_inverter("code-projector", generator=gen), CodeInverter)
    with pytest.raises(CheckpointError, match="generator="):
        load_inverter("code-projector")
    with pytest.raises(CheckpointError, match="no file"):
        resolve_checkpoint("code-projector")


def test_missing_bundled_model_says_reinstall(monkeypatch, tmp_path):
    import guide_unlearn.models as models
    from guide_unlearn.pipelines.loading import load_generator

    monkeypatch.setattr(models, "bundled_model_dir", lambda name: tmp_path / name)
    with pytest.raises(CheckpointError, match="reinstall"):
        load_generator("demo-faces")


def test_frozen_weights_restores_mixed_flags_after_an_error():
    """Both inverters freeze the generator while fitting codes; a patch's trainable LoRA flags survive, even
    when the fit fails."""
    from guide_unlearn.adapters.projector.projector import frozen_weights

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net[0].requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_weights(net):
            assert not any(p.requires_grad for p in net.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]


# ---- the code book: known codes keyed by a descriptor --------------------------------------------------------


def _pixels(images):
    """A stand-in descriptor that is exactly reproducible: the 4x4 average-pooled crop. [N, 48]"""
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), 4).flatten(1).double().numpy()


def _book(gen, images, threshold=0.05, seed=11):
    from guide_unlearn.adapters.projector import CodeBook

    codes = torch.randn(len(images), gen.z_dim, generator=torch.Generator().manual_seed(seed))
    return CodeBook(codes, _pixels(images), _pixels, threshold)


def test_code_book_matches_known_crops_and_refuses_strangers(gen):
    known, stranger = _target(gen, seed=1), _target(gen, seed=2)[:1]
    book = _book(gen, known)
    index, dist = book.match(torch.cat([known, stranger]))
    assert index.tolist() == [0, 1, -1]
    assert dist[:2].max() < 1e-9 and dist[2] > book.threshold


def test_matched_photo_starts_from_its_training_code(gen):
    """steps and book refinement off: a known crop's code is exactly the mapping of its book code."""
    known = _target(gen, seed=1)
    book = _book(gen, known)
    inv = CodeInverter(gen, starts=4, steps=10, refine_steps=5, code_book=book, book_refine_steps=0)
    ws = inv.invert(known, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = gen.mapping(book.codes, None)
    assert torch.allclose(ws, expected, atol=1e-6)
    assert inv.last_matches.tolist() == [0, 1]


def test_unmatched_photo_is_inverted_as_without_a_book(gen):
    known, stranger = _target(gen, seed=1), _target(gen, seed=2)[:1]
    g = lambda: torch.Generator().manual_seed(0)
    plain = CodeInverter(gen, starts=8, steps=10, refine_steps=5).invert(stranger, generator=g())
    booked = CodeInverter(gen, starts=8, steps=10, refine_steps=5, code_book=_book(gen, known))
    mixed = booked.invert(torch.cat([known[:1], stranger]), generator=g())
    assert booked.last_matches.tolist() == [0, -1]
    assert (mixed[1:] - plain).abs().max() < 2e-2  # batch rounding only


def test_book_refinement_stops_after_its_own_steps(gen):
    """A matched photo is refined book_refine_steps times even when the others in the batch take more steps."""
    known, stranger = _target(gen, seed=1), _target(gen, seed=2)[:1]
    book = _book(gen, known)
    g = lambda: torch.Generator().manual_seed(0)
    alone = CodeInverter(gen, starts=4, steps=3, refine_steps=3, refine_lr=0.05, code_book=book,
                         book_refine_steps=3).invert(known[:1], generator=g())
    mixed = CodeInverter(gen, starts=4, steps=3, refine_steps=12, refine_lr=0.05, code_book=book,
                         book_refine_steps=3).invert(torch.cat([known[:1], stranger]), generator=g())
    with torch.no_grad():
        start = gen.mapping(book.codes[:1], None)
    assert (alone - start).abs().max() > 1e-3  # it did move
    assert (mixed[:1] - alone).abs().max() < 1e-4


def test_code_book_of_another_width_is_refused(gen):
    from guide_unlearn.adapters.projector import CodeBook

    book = CodeBook(torch.zeros(1, gen.z_dim + 1), torch.zeros(1, 3).numpy(), _pixels, 0.1)
    with pytest.raises(InputError, match="z_dim"):
        CodeInverter(gen, code_book=book)


def test_code_book_round_trip_and_registry_wiring(gen, tmp_path):
    from guide_unlearn.adapters.projector import CodeBook
    from guide_unlearn.pipelines.loading import load_inverter

    known = _target(gen, seed=1)
    book = _book(gen, known)
    path = book.save(tmp_path / "code_book.safetensors")
    again = CodeBook.load(path, describe=_pixels)
    assert torch.equal(again.codes, book.codes) and again.threshold == book.threshold
    assert np.allclose(again.descriptors, book.descriptors, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["code_book.safetensors"]  # no temp file left behind
    inv = load_inverter("code-projector", generator=gen, code_book=again)
    assert inv.code_book is again


def test_a_file_that_is_not_a_code_book_is_refused(tmp_path):
    from safetensors.torch import save_file

    from guide_unlearn.adapters.projector import CodeBook

    save_file({"codes": torch.zeros(2, 4)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CheckpointError, match="format"):
        CodeBook.load(tmp_path / "weights.safetensors", describe=_pixels)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        CodeBook.load(tmp_path / "broken.safetensors", describe=_pixels)


def test_code_book_without_dlib_falls_back_with_a_warning(gen, tmp_path, monkeypatch, caplog):
    """A model folder's book needs dlib to describe photos; without it the inverter still works (random starts)
    and says so."""
    from guide_unlearn.adapters.projector import CodeBook
    from guide_unlearn.errors import BackendUnavailableError
    from guide_unlearn.pipelines.loading import load_inverter

    path = _book(gen, _target(gen, seed=1)).save(tmp_path / "code_book.safetensors")

    def no_dlib(*args, **kwargs):
        raise BackendUnavailableError("dlib is not installed; pip install dlib-bin")

    monkeypatch.setattr(CodeBook, "load", no_dlib)
    with caplog.at_level("WARNING"):
        inv = load_inverter("code-projector", generator=gen, code_book=path)
    assert inv.code_book is None
    assert "needs dlib" in caplog.text
