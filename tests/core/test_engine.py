"""The erase loop: reproducibility, resume, failure modes, and a measured erasure on the tiny model."""

import math

import pytest
import torch

from guide_unlearn import EraseConfig
from guide_unlearn.resume import STATE_FILE
from guide_unlearn.errors import ConfigError, InputError, LatentError, TrainingDivergedError
from guide_unlearn.testing import interrupted_at, tiny_eraser


def _codes(eraser, n=1, seed=5):
    g = torch.Generator().manual_seed(seed)
    return eraser.generator.mapping(torch.randn(n, eraser.generator.z_dim, generator=g)).detach()


def test_same_seed_gives_an_identical_patch_and_another_seed_does_not():
    cfg = EraseConfig(iterations=8)
    e1, e2 = tiny_eraser(), tiny_eraser()
    w = _codes(e1)
    p1 = e1.erase(w, cfg, measure=False, progress=False).patch
    p2 = e2.erase(w, cfg, measure=False, progress=False).patch
    p3 = e2.erase(w, cfg.replace(seed=1), measure=False, progress=False).patch
    assert all(torch.equal(p1.tensors[k], p2.tensors[k]) for k in p1.tensors)
    assert p1.patch_id == p2.patch_id != p3.patch_id


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    cfg, run = EraseConfig(iterations=10), dict(checkpoint_every=4, progress=False)
    eraser = tiny_eraser()
    w = _codes(eraser)
    straight = eraser.erase(w, cfg, measure=False, **run)
    with interrupted_at(7), pytest.raises(KeyboardInterrupt):  # dies during step 6, after the checkpoint at step 4
        eraser.erase(w, cfg, state_dir=tmp_path, measure=False, **run)
    assert (tmp_path / STATE_FILE).is_file()
    assert eraser.applied_patches == [] and not any("lora" in n for n, _ in eraser.generator.named_parameters())
    resumed = eraser.erase(w, cfg, state_dir=tmp_path, measure=False, **run)
    assert resumed.patch.patch_id == straight.patch.patch_id
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert not (tmp_path / STATE_FILE).exists()  # the person's code is not kept after success


def test_resume_with_another_config_is_refused(tmp_path):
    cfg, run = EraseConfig(iterations=6), dict(checkpoint_every=2, progress=False)
    eraser = tiny_eraser()
    w = _codes(eraser)
    with interrupted_at(4), pytest.raises(KeyboardInterrupt):  # a state written at step 2, killed in step 3
        eraser.erase(w, cfg, state_dir=tmp_path, measure=False, **run)
    with pytest.raises(ConfigError, match=r"other settings \(lr\)"):
        eraser.erase(w, cfg.replace(lr=1e-3), state_dir=tmp_path, measure=False, **run)


def _state_of_an_earlier_version(path, dropped):
    """Rewrite a saved erase state as a version without the fields ``dropped`` would have written it."""
    import io

    state = torch.load(path, weights_only=True)
    for k in dropped:
        recipe = state["config"] if k in state["config"] else state["config"]["method_config"]
        del recipe[k]
    blob = io.BytesIO()
    torch.save(state, blob)
    path.write_bytes(blob.getvalue())


def test_a_state_saved_before_a_field_existed_resumes_when_the_field_is_at_its_default(tmp_path):
    cfg, run = EraseConfig(iterations=6, adjacency_weight=0.05), dict(checkpoint_every=2, progress=False)
    eraser = tiny_eraser()
    w = _codes(eraser)
    straight = eraser.erase(w, cfg, measure=False, **run)
    with interrupted_at(4), pytest.raises(KeyboardInterrupt):
        eraser.erase(w, cfg, state_dir=tmp_path, measure=False, **run)
    state = tmp_path / STATE_FILE
    saved = state.read_bytes()
    # fields this run leaves at their defaults: the earlier version ran them at the default too
    _state_of_an_earlier_version(state, ["lora_targets", "global_id_weight", "mixed_precision"])
    resumed = eraser.erase(w, cfg, state_dir=tmp_path, measure=False, **run)
    assert resumed.patch.patch_id == straight.patch.patch_id
    # a field this run sets away from its default cannot have been set by the earlier version: refused
    state.write_bytes(saved)
    _state_of_an_earlier_version(state, ["adjacency_weight"])
    with pytest.raises(ConfigError, match=r"other settings \(adjacency_weight\)"):
        eraser.erase(w, cfg, state_dir=tmp_path, measure=False, **run)

def test_erase_leaves_the_generator_as_it_was():
    eraser = tiny_eraser()
    w = _codes(eraser, 2)
    before = eraser.synthesize(w)
    params = {n: p.clone() for n, p in eraser.generator.state_dict().items()}
    eraser.erase(w, EraseConfig(iterations=3), measure=False, progress=False)
    assert torch.equal(eraser.synthesize(w), before)
    assert set(eraser.generator.state_dict()) == set(params)
    assert eraser.applied_patches == []


@pytest.mark.slow
def test_default_config_erases_and_preserves_on_the_tiny_model():
    """80 steps of the default config: measured with pixel MSE, which the loop does not optimise directly."""
    eraser = tiny_eraser()
    w = _codes(eraser)
    result = eraser.erase(w, EraseConfig(iterations=80), progress=False)
    m = result.metrics
    print(f"\nerased {m['erased_mse']:.4f} vs before {m['before_mse']:.4f}; preserved {m['preserved_mse']:.4f} "
          f"vs random pairs {m['random_pair_mse']:.4f}")
    assert m["erased_mse"] <= 0.5 * m["before_mse"]
    assert m["preserved_mse"] <= 0.1 * m["random_pair_mse"]
    assert result.images_before.shape == result.images_after.shape == (1, 3, 32, 32)
    assert result.history[-1]["local"] < result.history[0]["local"]


def test_paper_preset_trains_the_full_synthesis_and_stores_weight_differences():
    eraser = tiny_eraser()
    w = _codes(eraser)
    cfg = EraseConfig.paper(iterations=3, target_distance=1.0, target_distance_relative=True)
    result = eraser.erase(w, cfg, measure=False, progress=False)
    patch = result.patch
    assert patch.kind == "delta"
    assert set(patch.tensors) == set(eraser.generator.full_finetune_parameters())
    assert any(float(t.abs().max()) > 0 for t in patch.tensors.values())
    base = eraser.synthesize(w)
    eraser.apply_patch(patch)
    assert not torch.allclose(eraser.synthesize(w), base)
    eraser.remove_patch(patch)
    assert (eraser.synthesize(w) - base).abs().max() < 1e-5


def test_a_non_finite_loss_stops_with_a_clear_error():
    eraser = tiny_eraser()
    w = _codes(eraser)
    eraser.perceptual = lambda a, b: (a - b).abs().flatten(1).mean(1) * float("nan")
    with pytest.raises(TrainingDivergedError, match="lower lr"):
        eraser.erase(w, EraseConfig(iterations=5), measure=False, progress=False)
    assert eraser.applied_patches == []


@pytest.mark.parametrize("bad", [
    dict(iterations=0), dict(iterations=-3), dict(lr=0.0), dict(lr=float("nan")), dict(lora_rank=0),
    dict(target="nowhere"), dict(adjacency_alpha=(5.0, 1.0)), dict(mixed_precision="fp8"), dict(seed=-1),
    dict(target_distance=-1.0), dict(local_weight=0.0), dict(id_weight=float("inf")), dict(noise_mode="loud"),
])
def test_nonsensical_config_values_are_refused(bad):
    with pytest.raises(ConfigError):
        EraseConfig.preset("lora", **bad)


def test_presets_have_the_papers_numbers():
    paper = EraseConfig.paper()
    assert (paper.iterations, paper.lr, paper.method, paper.target_distance) == (1000, 1e-4, "paper", 30.0)
    assert (paper.adjacency_samples, paper.global_samples, paper.adjacency_alpha) == (2, 2, (0.0, 15.0))
    assert (paper.feature_mse_weight, paper.lpips_weight, paper.id_weight) == (1e-2, 1.0, 0.1)
    assert EraseConfig.from_dict(paper.to_dict()) == paper


@pytest.mark.parametrize("make, err", [
    (lambda e: torch.full((1, e.generator.num_ws, e.generator.w_dim), float("nan")), LatentError),
    (lambda e: torch.zeros(1, e.generator.num_ws + 1, e.generator.w_dim), LatentError),
    (lambda e: torch.zeros(1, e.generator.num_ws, e.generator.w_dim, dtype=torch.int64), LatentError),
    (lambda e: torch.zeros(0, 3, 32, 32), InputError),
    (lambda e: [], InputError),
])
def test_bad_latents_and_inputs_are_refused(make, err):
    eraser = tiny_eraser()
    with pytest.raises(err):
        eraser.erase(make(eraser), EraseConfig(iterations=1), progress=False)


def test_latents_on_another_device_are_refused():
    eraser = tiny_eraser()
    w = _codes(eraser).to("meta")
    with pytest.raises(LatentError, match="generator is on cpu"):
        eraser.erase(w, EraseConfig(iterations=1), progress=False)


def test_erase_from_aligned_image_tensors_inverts_first():
    eraser = tiny_eraser(inverter_steps=5)
    w = _codes(eraser, 2)
    photos = eraser.synthesize(w)  # [2, 3, 32, 32] stand-in photos of one "person"
    result = eraser.erase(photos, EraseConfig(iterations=2), measure=False, progress=False)
    assert result.w_source.shape == (2, eraser.generator.num_ws, eraser.generator.w_dim)
    assert result.patch.metadata["num_codes"] == 2
    assert math.isfinite(result.history[-1]["loss"])


def test_bf16_mixed_precision_runs_with_finite_losses():
    eraser = tiny_eraser()
    result = eraser.erase(_codes(eraser), EraseConfig(iterations=3, mixed_precision="bf16"), measure=False,
                          progress=False)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert result.patch.metadata["erase_config"]["mixed_precision"] == "bf16"


def test_tensorboard_tracker_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    eraser = tiny_eraser()
    eraser.erase(_codes(eraser), EraseConfig(iterations=2), trackers=["tensorboard"], state_dir=tmp_path,
                 measure=False, progress=False)
    assert list(tmp_path.rglob("events.out.tfevents.*"))


# -- methods by name, and the settings an erase call takes --------------------------------------------------------
def test_the_shipped_methods_are_listed_by_name():
    import guide_unlearn

    assert guide_unlearn.list_methods()[:4] == ["lora", "paper", "joint", "robust"]
    assert EraseConfig().method == "lora" and EraseConfig.preset("robust").method == "robust"
    assert EraseConfig.robust() == EraseConfig.preset("robust") and EraseConfig.paper().method == "paper"


def test_an_unknown_method_is_a_config_error_naming_the_methods():
    eraser = tiny_eraser()
    with pytest.raises(ConfigError, match=r"unknown erase method 'robusst' \(did you mean 'robust'\?\).*lora, paper"):
        eraser.erase(_codes(eraser), method="robusst")
    with pytest.raises(ConfigError, match="unknown erase method"):
        EraseConfig(method="nope")


def test_erase_keywords_go_to_the_recipe_or_to_the_method_and_unknown_ones_are_named():
    eraser = tiny_eraser()
    cfg = eraser.default_config("robust", iterations=5, adversarial_rounds=1, decoys=2)
    assert (cfg.iterations, cfg.method_config.adversarial_rounds, cfg.method_config.decoys) == (5, 1, 2)
    assert eraser.default_config(preset="robust", iterations=5, adversarial_rounds=1, decoys=2) == cfg
    with pytest.raises(ConfigError, match=r"did you mean adversarial_rounds\?.*method 'robust'"):
        eraser.erase(_codes(eraser), method="robust", adversarial_round=1)
    with pytest.raises(ConfigError, match=r"unknown erase settings \['decoys'\].*method 'lora'"):
        eraser.erase(_codes(eraser), decoys=1)  # a robust setting, for the default method
    with pytest.raises(ConfigError, match="full fine-tune of the synthesis is method 'paper'"):
        EraseConfig.robust(full_finetune=True)


def test_a_saved_state_of_another_method_is_refused_by_name(tmp_path):
    eraser = tiny_eraser()
    w = _codes(eraser)
    with interrupted_at(3), pytest.raises(KeyboardInterrupt):
        eraser.erase(w, iterations=4, state_dir=tmp_path, checkpoint_every=2, progress=False, measure=False)
    with pytest.raises(ConfigError, match="made by method 'lora', this run is 'joint'"):
        eraser.erase(w, method="joint", iterations=4, state_dir=tmp_path, checkpoint_every=2, progress=False,
                     measure=False)


def test_forget_patch_from_pretrained_takes_a_folder_or_hub_id_as_pretrained_model_name_or_path():
    import inspect

    from guide_unlearn import ForgetPatch

    first = next(iter(inspect.signature(ForgetPatch.from_pretrained).parameters))
    assert first == "pretrained_model_name_or_path"


def test_the_command_line_erases_with_the_method_it_names(tmp_path, capsys):
    import json

    from safetensors.torch import save_file

    from guide_unlearn.cli import main

    eraser = tiny_eraser()
    save_file({"ws": _codes(eraser)}, str(tmp_path / "ws.safetensors"))
    args = ["erase", "--latent", str(tmp_path / "ws.safetensors"), "--model", "tiny-stylegan2", "--iterations", "1",
            "--quiet"]
    assert main(args + ["--method", "paper", "--out", str(tmp_path / "p")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((tmp_path / "p" / "forget_patch.json").read_text())
    assert line["method"] == meta["method"] == "paper" and meta["kind"] == "delta"
    assert main(args + ["--preset", "paper", "--out", str(tmp_path / "q")]) == 0  # the former spelling
    assert json.loads((tmp_path / "q" / "forget_patch.json").read_text())["method"] == "paper"
    capsys.readouterr()
    assert main(args + ["--method", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "lora, paper, joint, robust" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(args + ["--method", "paper", "--rank", "8", "--out", str(tmp_path / "s")]) == 2  # no LoRA there
    assert "lora_rank" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_a_new_method_is_one_class_with_its_config_and_one_registration(monkeypatch):
    """What a later method (e.g. a Fisher-weighted preservation) needs: its settings, a penalty on the trained
    parameters, several people and continual erases from the joint method, and no loop of its own."""
    from dataclasses import dataclass

    from guide_unlearn.methods import LossTerm, register_method, registry
    from guide_unlearn.methods.joint import JointConfig, JointMethod

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

    @dataclass(frozen=True)
    class AnchorConfig(JointConfig):
        anchor_weight: float = 1.0

    class AnchorMethod(JointMethod):
        def start(self, parameters, source):
            self.params, self.anchor = parameters, {n: p.detach().clone() for n, p in parameters.items()}

        def extra_loss(self, step, rows, out_u, out_s):
            pull = sum((p - self.anchor[n]).square().sum() for n, p in self.params.items())
            return [LossTerm("anchor", pull, self.config.anchor_weight)]

    register_method("anchor", AnchorMethod, AnchorConfig)
    eraser = tiny_eraser()
    ws = _codes(eraser, 3, seed=8)
    one = eraser.erase(ws[:1], method="anchor", iterations=3, anchor_weight=2.0, keep_erased=ws[2:],
                       progress=False, measure=False)
    many = eraser.erase_many({"a": ws[:1], "b": ws[1:2]}, method="anchor", iterations=3, progress=False,
                             measure=False)
    assert one.patch.metadata["method"] == many.patch.metadata["method"] == "anchor"
    assert one.patch.metadata["erase_config"]["method_config"]["anchor_weight"] == 2.0
    assert one.history[0]["anchor"] == 0.0 < one.history[-1]["anchor"]
    assert one.patch.metadata["kept_erased"] == 1 and len(many.patch.metadata["requests"]) == 2
