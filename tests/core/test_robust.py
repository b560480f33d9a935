"""The robust erase method (guide_unlearn.methods.robust) on the tiny StyleGAN2: each mechanism does what it claims."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from guide_unlearn import EraseConfig, RunOptions
from guide_unlearn.engine import run_erase
from guide_unlearn.errors import ConfigError
from guide_unlearn.methods.robust import RobustServices, augment_views, person_embedding
from guide_unlearn.targets import resolve_distances, ufo_target

SMALL = dict(iterations=15, adversarial_rounds=0, adversarial_iterations=15, attack_augmentations=0,
             repulsion_weight=0.0, bridge_samples=0, global_samples=1, adjacency_samples=1)


def _robust(**settings) -> EraseConfig:
    return EraseConfig.robust(**{**SMALL, **settings})


def run_robust(eraser, w_u, cfg, **services):
    """The one loop with the robust method and the given services (attack, repulsion_identity, ...)."""
    return run_erase(eraser.generator, w_u, cfg, eraser.perceptual, run=RunOptions(progress=False),
                     services=RobustServices(**services) if services else None)


@pytest.fixture(scope="module")
def eraser():
    from guide_unlearn.testing import tiny_eraser

    return tiny_eraser(inverter_steps=10)


def _codes(eraser, seed: int, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return eraser.generator.mapping(torch.randn(n, eraser.generator.z_dim, generator=g), None)


def _render(eraser, ws, patch=None):
    if patch is None:
        return eraser.synthesize(ws)
    eraser.apply_patch(patch)
    try:
        return eraser.synthesize(ws)
    finally:
        eraser.remove_patch(patch)


def test_robust_preset_is_the_lora_preset_with_attack_rounds_and_repulsion():
    from guide_unlearn.methods import get_method

    cfg = EraseConfig.preset("robust")
    mc = cfg.method_config
    assert mc.adversarial_rounds >= 1 and mc.repulsion_weight > 0 and mc.bridge_samples > 0
    assert cfg.method == "robust" and get_method("robust").method_class.trains == "lora"
    assert EraseConfig.preset("lora").method == "lora"
    assert EraseConfig.from_dict(cfg.to_dict()) == cfg


def test_default_config_applies_the_model_erase_defaults_to_the_robust_preset(eraser):
    eraser.erase_defaults = {"global_samples": 5}
    try:
        assert eraser.default_config(preset="robust").global_samples == 5
        assert eraser.default_config(method="robust").global_samples == 5
        assert (eraser.default_config(preset="robust").method_config.adversarial_rounds
                == EraseConfig.robust().method_config.adversarial_rounds)
        assert eraser.default_config(preset="paper").global_samples == EraseConfig.paper().global_samples
    finally:
        eraser.erase_defaults = {}


def test_robust_options_are_validated():
    with pytest.raises(ConfigError, match="adversarial_rounds"):
        EraseConfig.robust(adversarial_rounds=-1)
    with pytest.raises(ConfigError, match="full_finetune"):
        EraseConfig.robust(full_finetune=True)
    with pytest.raises(ConfigError, match="attack_steps"):
        EraseConfig.robust(attack_steps=0)


def test_adversarial_rounds_without_an_attack_are_refused(eraser):
    with pytest.raises(ConfigError, match="attack"):
        run_robust(eraser, _codes(eraser, 1), _robust(adversarial_rounds=1))


@pytest.mark.slow
def test_attacker_found_codes_join_the_erased_set(eraser):
    """A code the attacker returns is erased toward its own UFO target: after the run G_u renders it much closer
    to that target than the plain loop's patch (which never saw it) does."""
    w_u, w_f = _codes(eraser, 1), _codes(eraser, 2)
    calls = []

    def attack(round_):
        calls.append(round_)
        return w_f

    cfg = _robust(adversarial_rounds=1, iterations=10, adversarial_iterations=40)
    out = run_robust(eraser, w_u, cfg, attack=attack)
    plain = run_robust(eraser, w_u, cfg.replace(adversarial_rounds=0, iterations=50))
    assert calls == [1] and out.patch.metadata["robust"]["found_per_round"] == [1]
    d, _ = resolve_distances(cfg, eraser.generator)
    target = _render(eraser, ufo_target(w_f, eraser.generator.w_avg, cfg.target, d))
    err_robust = (_render(eraser, w_f, out.patch) - target).square().mean()
    err_plain = (_render(eraser, w_f, plain.patch) - target).square().mean()
    assert err_robust < 0.8 * err_plain
    assert "codes" not in str(out.patch.metadata["robust"])  # counts only, never a code


def test_attack_sees_the_current_patched_generator(eraser):
    """The attack runs while the generator renders G_u: its rendering of the request code differs from G_s's."""
    w_u = _codes(eraser, 3)
    before = _render(eraser, w_u)
    seen = []

    def attack(round_):
        seen.append((eraser.synthesize(w_u) - before).abs().mean().item())
        return w_u

    run_robust(eraser, w_u, _robust(adversarial_rounds=1), attack=attack)
    assert seen[0] > 1e-3
    assert torch.equal(_render(eraser, w_u), before)  # and the generator is left as it was


def test_repulsion_term_lowers_the_identity_similarity_it_targets(eraser):
    """With the toy identity network's biases zeroed (with them every tiny rendering sits at cosine ~0.998 to every
    other, so there is nothing to lower), the repulsion term takes G_u(w_u) further from the person's embedding
    than the same run without it."""
    from guide_unlearn.adapters.toy.identity import ToyIdentityNet

    ident = ToyIdentityNet(seed=3)
    with torch.no_grad():
        for m in ident.net:
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    w_u = _codes(eraser, 4)
    e_person = person_embedding(ident, _render(eraser, w_u))
    cfg = _robust(iterations=25)

    def similarity(patch):
        with torch.no_grad():
            return float(F.normalize(ident.embed(_render(eraser, w_u, patch)), dim=1)[0] @ e_person)

    plain = run_robust(eraser, w_u, cfg)
    repelled = run_robust(eraser, w_u, cfg.replace(repulsion_weight=20.0), repulsion_identity=ident,
                          person_embedding=e_person)
    assert "repulsion" in repelled.history[-1]
    assert similarity(repelled.patch) < similarity(plain.patch) - 0.03


def test_repulsion_without_a_differentiable_identity_network_is_refused(eraser):
    with pytest.raises(ConfigError, match="differentiable"):
        run_robust(eraser, _codes(eraser, 1), _robust(repulsion_weight=1.0))


def test_identity_aware_preservation_without_an_identity_model_is_refused_in_the_robust_loop(eraser):
    cfg = _robust(adversarial_rounds=0, decoys=1, global_id_weight=0.5)
    with pytest.raises(ConfigError, match="global_id_weight > 0 needs an identity model"):
        run_robust(eraser, _codes(eraser, 1), cfg)


@pytest.mark.slow
def test_decoys_are_erased_in_the_same_patch(eraser):
    """The decoy codes move toward their own UFO targets, as the person's code does; without decoys they do not."""
    from guide_unlearn.methods.robust import decoy_codes

    w_u = _codes(eraser, 5)
    cfg = _robust(decoys=2, iterations=30)
    out = run_robust(eraser, w_u, cfg)
    plain = run_robust(eraser, w_u, cfg.replace(decoys=0))
    dec = decoy_codes(eraser.generator, 2, cfg.truncation_psi, torch.Generator().manual_seed(cfg.seed))
    d, _ = resolve_distances(cfg, eraser.generator)
    target = _render(eraser, ufo_target(dec, eraser.generator.w_avg, cfg.target, d))
    err = lambda p: float((_render(eraser, dec, p) - target).square().mean())
    assert out.patch.metadata["robust"]["decoys"] == 2 and err(out.patch) < 0.97 * err(plain.patch)


def test_augmented_views_are_seeded_flips_crops_and_colour():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a = augment_views(x, 3, torch.Generator().manual_seed(0))
    b = augment_views(x, 3, torch.Generator().manual_seed(0))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b)
    assert torch.equal(a[:2], x.flip(-1)) and a.abs().max() <= 1
    assert augment_views(x, 0).shape[0] == 0


def test_erase_with_the_robust_preset_runs_the_attackers_and_returns_a_patch(eraser):
    w_u = _codes(eraser, 6)
    cfg = eraser.default_config(preset="robust", **{**SMALL, "adversarial_rounds": 1, "attack_steps": 3,
                                                     "attack_augmentations": 1, "bridge_samples": 1})
    result = eraser.erase(w_u, config=cfg, measure=False, progress=False)
    meta = result.patch.metadata
    assert meta["robust"]["found_per_round"] == [4]  # 2 attackers x (request + 1 augmented view)
    assert meta["method"] == meta["erase_config"]["method"] == "robust"
    assert meta["erase_config"]["method_config"]["adversarial_rounds"] == 1 and len(result.history) == 30
    assert not {"progress", "log_every", "checkpoint_every"} & set(meta["erase_config"])  # the recipe only


def test_round_attackers_choose_which_attackers_run_in_a_round(eraser):
    from guide_unlearn.pipelines.robust_attacks import build_attack

    images = eraser.synthesize(_codes(eraser, 8))
    both = build_attack(eraser, images, None, EraseConfig.robust(attack_steps=2, attack_augmentations=1))
    default_only = build_attack(eraser, images, None, EraseConfig.robust(attack_steps=2, attack_augmentations=1,
                                                                        round_attackers=("default",)))
    found_both, found_default = both(1), default_only(1)
    assert found_both.shape[0] == 4 and found_default.shape[0] == 2  # attackers x (request + 1 augmented view)
    # the default inverter's codes come first and are the same whether or not the projector also runs
    assert torch.equal(found_both[:2], found_default)


def test_round_attackers_are_validated():
    for bad in ((), ("default", "default"), ("gan-inversion",), "default", (1,), (["default"],)):
        with pytest.raises(ConfigError, match="round_attackers"):
            EraseConfig.robust(round_attackers=bad)
    recipe = EraseConfig.robust().to_dict()
    with pytest.raises(ConfigError, match="round_attackers"):  # nested lists from a JSON config
        nested = {**recipe["method_config"], "round_attackers": [["default"]]}
        EraseConfig.from_dict({**recipe, "method_config": nested})
    lists = EraseConfig.robust(round_attackers=["scratch"])
    assert lists.method_config.round_attackers == ("scratch",)  # lists are normalised


@pytest.mark.slow
def test_tracked_attacker_makes_the_projector_reconstruct_the_request_worse(eraser):
    """The tracked attacker follows the projector's objective on the request image through G_u while the patch
    trains: afterwards a fresh projector (from w_avg, as the audit's) reconstructs that image through G_u worse
    than through the patch of the same run without tracking."""
    from guide_unlearn.adapters.projector import OptimizationInverter

    w_u = _codes(eraser, 7)
    image = _render(eraser, w_u)
    cfg = _robust(iterations=60)
    plain = run_robust(eraser, w_u, cfg)
    tracked = run_robust(eraser, w_u, cfg.replace(tracking_steps=2, attack_steps=6), attack_images=image)
    projector = OptimizationInverter(eraser.generator, eraser.perceptual, steps=40, progress=False)

    def reconstruction_error(patch):
        eraser.apply_patch(patch)
        try:
            ws = projector.invert(image)
            return float((eraser.synthesize(ws) - image).square().mean())
        finally:
            eraser.remove_patch(patch)

    assert tracked.patch.metadata["robust"]["tracking_steps"] == 2
    assert reconstruction_error(tracked.patch) > 1.1 * reconstruction_error(plain.patch)


def test_tracking_without_attack_images_is_refused(eraser):
    with pytest.raises(ConfigError, match="attack_images"):
        run_robust(eraser, _codes(eraser, 1), _robust(tracking_steps=1))


def test_tracked_codes_join_the_erased_rows_only_after_attack_steps_projector_steps(eraser):
    """Before a tracked code has taken ``attack_steps`` projector steps it draws a generic face near w_avg and is
    not erased: with attack_steps above what the run takes, the patch equals the run without tracking."""
    w_u = _codes(eraser, 8)
    cfg = _robust(iterations=5)
    plain = run_robust(eraser, w_u, cfg)
    late = run_robust(eraser, w_u, cfg.replace(tracking_steps=1, attack_steps=6), attack_images=_render(eraser, w_u))
    assert late.patch.tensors.keys() == plain.patch.tensors.keys()
    assert all(torch.equal(v, late.patch.tensors[k]) for k, v in plain.patch.tensors.items())


def test_a_robust_erase_that_did_not_succeed_warns_like_any_other_method(eraser, caplog):
    import logging

    w_u = _codes(eraser, 9)
    with caplog.at_level(logging.WARNING):
        result = eraser.erase(w_u, method="robust", lr=1e-7, progress=False, **{**SMALL, "iterations": 2, "decoys": 1})
    assert result.succeeded is False and result.patch.metadata["method"] == "robust"
    assert "the erase did not succeed: NOT ERASED" in caplog.text
