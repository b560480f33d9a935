"""Issue #18 part B: patches are applied, removed, merged and checked by the core (guide_unlearn.patching) without
an eraser; run options (progress, logging, checkpoints, state folder, trackers) stay out of the patch and its
digest; run_erase returns an EraseRun."""

import json

import pytest
import torch

from guide_unlearn import EraseConfig, EraseRun, RunOptions, patching
from guide_unlearn.adapters.perceptual import MultiScaleGradL1
from guide_unlearn.engine import run_erase
from guide_unlearn.errors import ConfigError, PatchMismatchError, PatchStateError
from guide_unlearn.testing import tiny_generator

CFG = EraseConfig(iterations=4, adjacency_samples=1, global_samples=1)
QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def made():
    gen = tiny_generator()
    g = torch.Generator().manual_seed(3)
    ws = gen.mapping(torch.randn(2, gen.z_dim, generator=g)).detach()
    run = run_erase(gen, ws[:1], CFG, MultiScaleGradL1(), run=QUIET)
    return gen, ws, run


def _render(gen, ws):
    with torch.no_grad():
        return gen.synthesis(ws, None, noise_mode="const").images


def test_run_erase_returns_an_erase_run_with_the_patch_targets_history_and_time(made):
    gen, ws, run = made
    assert isinstance(run, EraseRun)
    assert run.w_target.shape == (1, gen.num_ws, gen.w_dim)
    assert [int(h["step"]) for h in run.history] == [0, 1, 2, 3]
    assert run.seconds > 0 and run.run == RunOptions(progress=False)
    assert run["patch"] is run.patch and run["w_target"] is run.w_target  # key access, as diffusers' outputs
    with pytest.raises(TypeError, match="not a tuple"):
        patch, w_t, history, seconds, options = run


def test_apply_then_remove_without_an_eraser_restores_the_base_exactly(made):
    gen, ws, run = made
    base = _render(gen, ws)
    patching.apply(gen, run.patch)
    assert patching.applied(gen) == [run.patch]
    changed = _render(gen, ws)
    patching.remove(gen, run.patch.patch_id)
    assert patching.applied(gen) == []
    assert float((changed - base).abs().max()) > 1e-4
    assert torch.equal(_render(gen, ws), base)


def test_check_refuses_a_second_application_and_another_base(made):
    gen, _, run = made
    patching.check(gen, run.patch)  # fine on its base, and changes nothing
    with patching.applied_temporarily(gen, run.patch):
        with pytest.raises(PatchStateError, match="already applied"):
            patching.check(gen, run.patch)
    with pytest.raises(PatchMismatchError, match="base weights"):
        patching.check(tiny_generator(seed=1), run.patch)
    with pytest.raises(PatchStateError, match="not applied"):
        patching.remove(gen, run.patch)


def test_merge_without_an_eraser_folds_the_patch_into_the_weights(made):
    gen = tiny_generator()
    _, ws, run = made
    patching.apply(gen, run.patch)
    applied = _render(gen, ws)
    records = patching.merge(gen)
    assert [r["patch_id"] for r in records] == [run.patch.patch_id]
    assert patching.applied(gen) == [] and patching.merged(gen)[0]["patch_id"] == run.patch.patch_id
    assert torch.allclose(_render(gen, ws), applied, atol=1e-5)
    with pytest.raises(PatchStateError, match="already applied"):
        patching.apply(gen, run.patch)


def test_run_options_change_neither_the_digest_nor_the_recorded_recipe(made, tmp_path):
    gen, ws, run = made
    with pytest.raises(ConfigError, match="RunOptions"):  # how a run behaves is never part of the recipe
        CFG.replace(progress=True, log_every=2, checkpoint_every=3)
    other = run_erase(gen, ws[:1], CFG, MultiScaleGradL1(),
                      run=RunOptions(progress=False, log_every=2, checkpoint_every=2, state_dir=tmp_path))
    assert [int(h["step"]) for h in other.history] == [0, 2, 3]
    assert torch.equal(other.patch.tensors[next(iter(other.patch.tensors))],
                       run.patch.tensors[next(iter(run.patch.tensors))])  # same recipe, same patch
    recorded = json.dumps(other.patch.metadata["erase_config"])
    assert not {"progress", "log_every", "checkpoint_every", "state_dir", "trackers"} & set(
        other.patch.metadata["erase_config"]), recorded


def test_run_options_are_validated_and_not_given_twice(made, tmp_path):
    gen, ws, _ = made
    with pytest.raises(ConfigError, match="log_every"):
        RunOptions(log_every=0)
    with pytest.raises(ConfigError, match="trackers"):
        RunOptions(trackers="tensorboard")
    with pytest.raises(ConfigError, match="RunOptions"):
        run_erase(gen, ws[:1], CFG, MultiScaleGradL1(), run={"state_dir": tmp_path})
