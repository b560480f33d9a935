"""The ``sugar`` erase method (guide_unlearn/methods/sugar.py) on the tiny models: learned surrogate targets,
Fisher-weighted preservation, several people, continual erases, and what it refuses."""

import pytest
import torch

from guide_unlearn import EraseConfig, list_methods
from guide_unlearn.errors import ConfigError
from guide_unlearn.testing import tiny_eraser

FAST = dict(iterations=3, surrogate_steps=2, fisher_samples=2, progress=False)


def _codes(eraser, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return eraser.generator.mapping(torch.randn(n, eraser.generator.z_dim, generator=g)).detach()


def _mse(a, b):
    return float((a - b).square().mean())


def test_sugar_is_registered_for_several_people_and_continual_erases():
    from guide_unlearn.methods import get_method

    assert "sugar" in list_methods()
    cls = get_method("sugar").method_class
    assert cls.several_people and cls.keeps_erased and cls.trains == "lora"
    cfg = EraseConfig.preset("sugar", ewc_weight=10.0, surrogate_steps=5)
    assert cfg.method == "sugar" and cfg.method_config.ewc_weight == 10.0 and cfg.method_config.lora_rank == 16


@pytest.mark.parametrize("bad", [dict(ewc_weight=-1.0), dict(fisher_samples=0), dict(fisher_output="pixels"),
                                 dict(self_margin=2.0), dict(surrogate_steps=-1), dict(surrogate_lr=0.0)])
def test_bad_sugar_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        EraseConfig.preset("sugar", **bad)


def test_the_patch_holds_the_lora_factors_and_counts_never_targets_or_fisher():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    result = eraser.erase_many({"a": ws[:1], "b": ws[1:]}, method="sugar", measure=False, **FAST)
    patch = result.patch
    assert all(".lora_A." in k or ".lora_B." in k for k in patch.tensors)
    meta = patch.metadata
    assert meta["method"] == "sugar" and meta["fisher"] == {"samples": 2, "output": "image", "layers": 7}
    assert meta["surrogates"]["steps"] == 2 and set(meta["surrogates"]) == {
        "steps", "identity_model", "self_cos_max", "pair_cos_max"}
    assert all(isinstance(v, (int, float, str)) for v in meta["surrogates"].values())


def test_the_ewc_term_is_zero_at_the_first_step_and_grows_as_the_patch_trains():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    result = eraser.erase_many({"a": ws[:1], "b": ws[1:]}, method="sugar", measure=False,
                               **{**FAST, "iterations": 6})
    ewc = [h["ewc"] for h in result.history]
    assert ewc[0] == 0.0 and ewc[-1] > ewc[1] > 0


def test_without_an_identity_model_the_targets_are_the_joint_methods_and_the_patch_says_so():
    eraser = tiny_eraser()
    eraser.identity_model = None
    ws = _codes(eraser, 2)
    requests = {"a": ws[:1], "b": ws[1:]}
    sugar = eraser.erase_many(requests, method="sugar", measure=False, id_weight=0.0, **FAST)
    joint = eraser.erase_many(requests, method="joint", measure=False, id_weight=0.0, iterations=3, progress=False)
    assert sugar.patch.metadata["surrogates"] == {"steps": 0, "reason": "no differentiable identity model"}
    assert all(torch.equal(sugar.w_target[k], joint.w_target[k]) for k in requests)


def test_learned_surrogates_replace_the_ufo_targets():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    requests = {"a": ws[:1], "b": ws[1:]}
    learned = eraser.erase_many(requests, method="sugar", measure=False, **{**FAST, "surrogate_steps": 10})
    ufo = eraser.erase_many(requests, method="sugar", measure=False, **{**FAST, "surrogate_steps": 0})
    assert ufo.patch.metadata["surrogates"] == {"steps": 0}
    for k in requests:  # same sphere around w_avg, other place on it
        radius = lambda t: float((t - eraser.generator.w_avg).flatten().norm())  # noqa: E731
        assert radius(learned.w_target[k]) == pytest.approx(radius(ufo.w_target[k]), rel=1e-4)
        assert not torch.allclose(learned.w_target[k], ufo.w_target[k], atol=1e-3)


def test_fisher_of_the_identity_needs_an_identity_model():
    eraser = tiny_eraser()
    eraser.identity_model = None
    ws = _codes(eraser, 1)
    with pytest.raises(ConfigError, match="fisher_output='identity' needs an identity model"):
        eraser.erase(ws, method="sugar", fisher_output="identity", id_weight=0.0, **FAST)


def test_one_person_is_erased_with_a_surrogate_and_the_penalty():
    eraser = tiny_eraser()
    ws = _codes(eraser, 1, seed=5)
    result = eraser.erase(ws, method="sugar", measure=False, **FAST)
    assert result.patch.metadata["surrogates"]["pair_cos_max"] == 0.0  # nobody to keep apart
    assert "ewc" in result.history[-1] and result.patch.metadata["method"] == "sugar"


def test_a_continual_sugar_run_keeps_the_first_person_erased():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2, seed=11)
    settings = dict(iterations=40, surrogate_steps=5, fisher_samples=4, progress=False)
    first = eraser.erase(ws[:1], method="sugar", measure=False, **settings)
    target_a = eraser.synthesize(first.w_target)
    before_a = _mse(eraser.synthesize(ws[:1]), target_a)
    eraser.apply_patch(first.patch)
    after_first = _mse(eraser.synthesize(ws[:1]), target_a)
    assert after_first < 0.5 * before_a  # A erased
    second = eraser.erase(ws[1:], method="sugar", measure=False, keep_erased=ws[:1], **settings)
    assert second.patch.metadata["kept_erased"] == 1
    eraser.apply_patch(second.patch)
    after_second = _mse(eraser.synthesize(ws[:1]), target_a)
    assert after_second < after_first + 0.1 * (before_a - after_first), (before_a, after_first, after_second)


def test_a_joint_run_with_the_robust_method_is_refused_naming_the_methods_that_can():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    with pytest.raises(ConfigError, match=r"method 'robust' erases one person per patch.*'joint' or 'sugar'"):
        eraser.erase_many({"a": ws[:1], "b": ws[1:]}, method="robust")


@pytest.mark.slow
def test_erase_batch_runs_joint_groups_with_the_sugar_method(tmp_path, shared_dir):
    import json
    import shutil

    from guide_unlearn import ForgetPatch
    from guide_unlearn.cli import main

    for k, photo in enumerate(sorted((shared_dir / "faces" / "deepface_train").glob("*.jpg"))[:2]):
        (tmp_path / "req" / f"person-{k}").mkdir(parents=True)
        shutil.copy(photo, tmp_path / "req" / f"person-{k}" / photo.name)
    args = ["erase-batch", str(tmp_path / "req"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "out"),
            "--joint", "2", "--method", "sugar", "--iterations", "2", "--quiet"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[1:]]
    assert [r["status"] for r in rows] == ["done", "done"] and rows[0]["patch"] == rows[1]["patch"]
    patch = ForgetPatch.from_pretrained(tmp_path / "out" / rows[0]["patch"])
    assert patch.metadata["method"] == "sugar" and patch.metadata["num_persons"] == 2


def test_identity_early_stop_ends_the_run_once_every_person_is_erased_by_the_identity_model():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    requests = {"a": ws[:1], "b": ws[1:]}
    settings = {**FAST, "iterations": 30}
    stopped = eraser.erase_many(requests, method="sugar", measure=False, done_cosine=0.9999, **settings)
    meta = stopped.patch.metadata
    assert meta["stopped_at_step"] is not None and 0 < meta["stopped_at_step"] < 29
    assert all(r["done_at_step"] is not None for r in meta["requests"])
    never = eraser.erase_many(requests, method="sugar", measure=False, done_cosine=-0.999, **settings)
    assert never.patch.metadata["stopped_at_step"] is None and len(never.history) == 30


def test_identity_early_stop_needs_an_identity_model_and_excludes_the_l_local_stop():
    eraser = tiny_eraser()
    eraser.identity_model = None
    ws = _codes(eraser, 1)
    with pytest.raises(ConfigError, match="done_cosine needs an identity model"):
        eraser.erase(ws, method="sugar", done_cosine=0.8, id_weight=0.0, **FAST)
    with pytest.raises(ConfigError, match="one early stop"):
        EraseConfig.preset("sugar", done_cosine=0.8, joint_done_ratio=0.5)
