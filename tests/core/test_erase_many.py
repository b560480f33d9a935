"""erase_many: several people in one run and one patch, their targets kept apart, the person schedule, bad input,
and continual erases (a later patch must not bring an earlier person back)."""

import json
import math

import pytest
import torch

from guide_unlearn import EraseConfig
from guide_unlearn.methods.joint import PersonSchedule
from guide_unlearn.errors import ConfigError, InputError, LatentError
from guide_unlearn.targets import separated_targets, target_similarity, ufo_target
from guide_unlearn.testing import interrupted_at, tiny_eraser, tiny_generator


def _codes(eraser, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return eraser.generator.mapping(torch.randn(n, eraser.generator.z_dim, generator=g)).detach()


def _mse(a, b):
    return float((a - b).square().mean())


def test_each_person_moves_toward_their_own_target_and_the_patch_lists_the_request_ids():
    eraser = tiny_eraser()
    ws = _codes(eraser, 3)
    requests = {"req-a": ws[0:1], "req-b": ws[1:2], "req-c": ws[2:3]}
    result = eraser.erase_many(requests, EraseConfig.joint(iterations=30), measure=False, progress=False)
    before = {r: _mse(eraser.synthesize(result.w_source[r]), eraser.synthesize(result.w_target[r])) for r in requests}
    eraser.apply_patch(result.patch)
    after = {r: _mse(eraser.synthesize(result.w_source[r]), eraser.synthesize(result.w_target[r])) for r in requests}
    for r in requests:
        assert after[r] < 0.9 * before[r], (r, before[r], after[r])
    listed = result.patch.metadata["requests"]
    assert [e["request_id"] for e in listed] == ["req-a", "req-b", "req-c"]
    assert all(math.isfinite(e["final_losses"]["local"]) for e in listed)
    assert set(listed[0]) == {"request_id", "final_losses", "last_step"}  # no code, target or direction


def test_a_joint_patch_stores_no_code_or_target_of_anyone(tmp_path):
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    result = eraser.erase_many({"x": ws[:1], "y": ws[1:]}, EraseConfig.joint(iterations=2), measure=False,
                               progress=False)
    folder = result.patch.save_pretrained(tmp_path / "p")
    meta = json.loads((folder / "forget_patch.json").read_text())

    def vectors(node):  # every list of numbers anywhere in the metadata
        if isinstance(node, dict):
            return [v for x in node.values() for v in vectors(x)]
        if isinstance(node, list):
            numeric = node and all(isinstance(x, (int, float)) for x in node)
            return [node] if numeric else [v for x in node for v in vectors(x)]
        return []

    assert max(len(v) for v in vectors(meta)) < eraser.generator.w_dim  # no code-sized vector anywhere
    single = eraser.erase(ws[:1], EraseConfig(iterations=1), measure=False, progress=False).patch
    assert set(result.patch.tensors) == set(single.tensors)  # only the LoRA factors, as a single erase


def test_targets_of_alike_people_are_kept_apart():
    eraser = tiny_eraser()
    g = torch.Generator().manual_seed(0)
    avg = eraser.generator.w_avg
    shared = torch.randn(eraser.generator.num_ws, eraser.generator.w_dim, generator=g)
    ws = avg + 3 * shared + 0.3 * torch.randn(4, eraser.generator.num_ws, eraser.generator.w_dim, generator=g)
    person = torch.arange(4)
    plain = target_similarity(ufo_target(ws, avg, "extrapolate", 5.0), person, avg)
    apart = target_similarity(separated_targets(ws, person, avg, "extrapolate", 5.0), person, avg)
    assert plain["latent_cosine_max"] > 0.9
    assert abs(apart["latent_cosine_max"]) < 1e-4
    result = eraser.erase_many({str(i): ws[i:i + 1] for i in range(4)}, EraseConfig.joint(iterations=1))
    assert result.target_similarity["ufo_latent_cosine_max"] > 0.9 > 0.01 > abs(result.target_similarity[
        "latent_cosine_max"])
    # every target stays on the UFO sphere, still on the far side of w_avg from its person
    for i in range(4):
        t = result.w_target[str(i)][0]
        assert abs(float((t - avg).norm()) - float((ufo_target(ws[i:i + 1], avg, "extrapolate", 1.0)[0] - avg).norm())
                   * result.patch.metadata["target_distance_used"]) < 1e-3
        assert float(((t - avg) * (ws[i] - avg)).sum()) < 0


def test_the_schedule_visits_every_person_regularly_with_a_bounded_batch():
    person_of = torch.tensor([0, 0, 1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 9])
    schedule = PersonSchedule(person_of, per_step=3, seed=0)
    last = {p: -1 for p in range(10)}
    for step in range(40):
        people = schedule.people(step)
        assert len(people) == len(set(people)) == 3
        for p in people:
            assert step - last[p] <= math.ceil(10 / 3)
            last[p] = step
        rows = schedule.rows(step)
        assert sorted(set(person_of[rows].tolist())) == sorted(people)
        assert float(schedule.weights[rows].sum()) == pytest.approx(3.0)  # each person's codes weigh 1 together
    assert all(step >= 40 - math.ceil(10 / 3) for step in last.values())


def test_a_run_of_many_people_renders_only_the_scheduled_people_per_iteration(monkeypatch):
    import guide_unlearn.engine as engine

    eraser = tiny_eraser()
    ws = _codes(eraser, 12)
    seen = []
    real = engine.ltu_loss

    def spy(u, s, k, *args, **kwargs):
        seen.append(k)
        return real(u, s, k, *args, **kwargs)

    monkeypatch.setattr(engine, "ltu_loss", spy)
    cfg = EraseConfig.joint(iterations=6, persons_per_step=4)
    result = eraser.erase_many({f"p{i}": ws[i:i + 1] for i in range(12)}, cfg, measure=False, progress=False)
    assert seen == [4] * 6
    assert sorted(e["last_step"] for e in result.patch.metadata["requests"]) == [3] * 4 + [4] * 4 + [5] * 4


def test_duplicate_ids_empty_requests_and_foreign_codes_are_refused():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    cfg = EraseConfig.joint(iterations=1)
    with pytest.raises(InputError, match="twice"):
        eraser.erase_many([("a", ws[:1]), ("a", ws[1:])], cfg)
    with pytest.raises(InputError, match="'b'.*empty"):
        eraser.erase_many({"a": ws[:1], "b": []}, cfg)
    with pytest.raises(InputError, match="no requests"):
        eraser.erase_many({}, cfg)
    other = tiny_generator(w_dim=16)  # another model: its codes are [1, 8, 16], this one's [1, 8, 32]
    foreign = other.mapping(torch.randn(1, other.z_dim)).detach()
    with pytest.raises(LatentError, match="'b'"):
        eraser.erase_many({"a": ws[:1], "b": foreign}, cfg)
    assert eraser.applied_patches == [] and not any("lora" in n for n, _ in eraser.generator.named_parameters())


@pytest.mark.slow
def test_a_later_erase_on_top_brings_an_earlier_person_partly_back_without_keep():
    # The measurement that motivated keep_erased (docs/queue.md): stacking alone lets the second patch undo part
    # of the first on this tiny model (measured: MSE to A's target 0.84 -> 0.12 after A's patch -> 0.34 after B's).
    eraser = tiny_eraser()
    ws = _codes(eraser, 2, seed=11)
    cfg = EraseConfig(iterations=40)
    first = eraser.erase(ws[:1], cfg, measure=False, progress=False)
    target_a = eraser.synthesize(first.w_target)
    eraser.apply_patch(first.patch)
    after_first = _mse(eraser.synthesize(ws[:1]), target_a)
    eraser.apply_patch(eraser.erase(ws[1:], cfg, measure=False, progress=False).patch)
    assert _mse(eraser.synthesize(ws[:1]), target_a) > 1.5 * after_first


@pytest.mark.slow
def test_keeping_the_earlier_person_stops_a_later_erase_from_bringing_them_back():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2, seed=11)
    cfg = EraseConfig.joint(iterations=40)
    first = eraser.erase(ws[:1], cfg, measure=False, progress=False)
    target_a = eraser.synthesize(first.w_target)
    before_a = _mse(eraser.synthesize(ws[:1]), target_a)
    eraser.apply_patch(first.patch)
    after_first = _mse(eraser.synthesize(ws[:1]), target_a)
    second = eraser.erase(ws[1:], cfg, measure=False, keep_erased=ws[:1])
    assert second.patch.metadata["kept_erased"] == 1 and "requests" not in second.patch.metadata
    eraser.apply_patch(second.patch)
    after_second = _mse(eraser.synthesize(ws[:1]), target_a)
    assert after_second < after_first + 0.1 * (before_a - after_first), (before_a, after_first, after_second)
    target_b = eraser.synthesize(second.w_target)
    eraser.remove_patch(second.patch)
    before_b = _mse(eraser.synthesize(ws[1:]), target_b)
    eraser.apply_patch(second.patch)
    assert _mse(eraser.synthesize(ws[1:]), target_b) < 0.9 * before_b  # the new person is still erased


def test_joint_balance_weighs_the_global_term_once_per_visited_erased_person():
    from guide_unlearn.methods.joint import JointBalance

    cfg = EraseConfig.joint(global_weight=2.0, joint_balance=1.0)
    balance = JointBalance(cfg, erased_people=3)  # persons 0..2 erased, 3.. kept from earlier patches
    assert balance([0, 1, 1, 2]).global_weight == 6.0  # three people visited (a person listed twice counts once)
    assert balance([2, 3, 4]).global_weight == 2.0  # kept people do not count
    assert balance([0, 2, 3]).global_weight == 4.0
    assert JointBalance(cfg.replace(joint_balance=0.5), 3)([0, 1, 2]).global_weight == 4.0  # 1 + .5·2
    assert JointBalance(cfg, erased_people=1)([0, 1, 2]) is cfg  # one erased person + kept ones
    assert JointBalance(cfg.replace(joint_balance=0.0), 3)([0, 1, 2]).global_weight == 2.0
    with pytest.raises(ConfigError, match="joint_balance"):
        EraseConfig.joint(joint_balance=1.5)


def test_joint_balance_leaves_a_single_person_erase_unchanged():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2, seed=5)
    for keep in (None, ws[1:]):
        patches = [eraser.erase(ws[:1], EraseConfig.joint(iterations=3, joint_balance=b), measure=False,
                                keep_erased=keep).patch for b in (1.0, 0.0)]
        assert set(patches[0].tensors) == set(patches[1].tensors)
        assert all(torch.equal(patches[0].tensors[n], patches[1].tensors[n]) for n in patches[0].tensors)


@pytest.mark.slow
def test_a_balanced_joint_run_changes_other_faces_less_than_an_unbalanced_one():
    eraser = tiny_eraser()
    ws = _codes(eraser, 4, seed=7)
    others = _codes(eraser, 16, seed=99)
    before = eraser.synthesize(others)
    changed, moved = {}, {}
    for balance in (1.0, 0.0):
        cfg = EraseConfig.joint(iterations=60, joint_balance=balance)
        result = eraser.erase_many({f"p{i}": ws[i:i + 1] for i in range(4)}, cfg, measure=False, progress=False)
        targets = eraser.synthesize(torch.cat(list(result.w_target.values())))
        start = _mse(eraser.synthesize(ws), targets)
        eraser.apply_patch(result.patch)
        changed[balance] = _mse(eraser.synthesize(others), before)
        moved[balance] = _mse(eraser.synthesize(ws), targets) / start
        eraser.remove_patch(result.patch)
    assert changed[1.0] < 0.2 * changed[0.0], changed
    assert moved[1.0] < 0.9, moved  # the people still move toward their targets


def test_person_progress_drops_a_person_whose_local_loss_fell_to_the_ratio_and_takes_them_back_above_it():
    from guide_unlearn.methods.joint import PersonProgress

    progress = PersonProgress(0.5, erased_people=2, people=3)  # person 2 is kept from an earlier patch
    progress.update([0, 0, 1, 2], [4.0, 2.0, 1.0, 0.0], step=0)  # starts: person 0 = 3 (mean of its codes), 1 = 1
    assert progress.start[:2] == [3.0, 1.0] and progress.active([0, 1, 2]).tolist() == [True, True, True]
    progress.update([0, 1, 2], [1.5, 0.6, 0.0], step=4)  # person 0 at half its start: done; person 1 not yet
    assert progress.active([0, 0, 1, 2]).tolist() == [False, False, True, True] and progress.done_step[0] == 4
    assert not progress.finished
    progress.update([0, 1], [1.6, 0.5], step=7)  # person 0 pulled back above: rejoins; person 1 done
    assert progress.active([0, 1]).tolist() == [True, False] and progress.done_step == [None, 7, None]
    progress.update([0], [1.0], step=9)
    assert progress.finished and progress.done_step == [9, 7, None]  # kept people never count


@pytest.mark.slow
def test_a_joint_run_with_a_done_ratio_stops_training_done_people_and_ends_when_all_are_done():
    eraser = tiny_eraser()
    ws = _codes(eraser, 3, seed=13)
    requests = {f"p{i}": ws[i:i + 1] for i in range(3)}
    cfg = EraseConfig.joint(iterations=150, joint_done_ratio=0.6)
    result = eraser.erase_many(requests, cfg, measure=False, progress=False)
    meta = result.patch.metadata
    assert meta["stopped_at_step"] is not None and meta["stopped_at_step"] < 149
    assert len(result.history) < 150 + 2 and result.history[-1]["step"] == meta["stopped_at_step"]
    done = [e["done_at_step"] for e in meta["requests"]]
    assert all(d is not None and d <= meta["stopped_at_step"] for d in done), done
    assert len(set(done)) > 1, done  # people finish at different steps: the early ones stopped training
    targets = eraser.synthesize(torch.cat(list(result.w_target.values())))
    start = _mse(eraser.synthesize(ws), targets)
    eraser.apply_patch(result.patch)
    assert _mse(eraser.synthesize(ws), targets) < 0.9 * start


def test_a_done_ratio_leaves_a_single_person_erase_unchanged():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2, seed=5)
    for keep in (None, ws[1:]):
        patches = [eraser.erase(ws[:1], EraseConfig.joint(iterations=3, joint_done_ratio=r),
                                measure=False, keep_erased=keep).patch for r in (0.9, 0.0)]
        assert all(torch.equal(patches[0].tensors[n], patches[1].tensors[n]) for n in patches[0].tensors)
    with pytest.raises(ConfigError, match="joint_done_ratio"):
        EraseConfig.joint(joint_done_ratio=1.0)


@pytest.mark.slow
def test_identity_aware_preservation_keeps_random_faces_identity_closer_to_the_source():
    from guide_unlearn.losses import identity_distance

    eraser = tiny_eraser()
    ws = _codes(eraser, 3, seed=17)
    probes = _codes(eraser, 32, seed=123)  # random faces the run never saw
    identity = eraser.identity_model
    before = eraser.synthesize(probes)
    drift = {}
    for weight in (0.0, 2000.0):
        cfg = EraseConfig.joint(iterations=40, id_weight=0.0, global_id_weight=weight)
        result = eraser.erase_many({f"p{i}": ws[i:i + 1] for i in range(3)}, cfg, measure=False, progress=False)
        assert (result.patch.metadata["identity_model"] is not None) == (weight > 0)
        eraser.apply_patch(result.patch)
        with torch.no_grad():
            drift[weight] = float(identity_distance(identity, eraser.synthesize(probes), before).mean())
        eraser.remove_patch(result.patch)
    assert drift[2000.0] < 0.7 * drift[0.0], drift


def test_identity_aware_preservation_without_an_identity_model_is_refused():
    eraser = tiny_eraser()
    eraser.identity_model = None
    with pytest.raises(ConfigError, match="global_id_weight"):
        eraser.erase(_codes(eraser, 1), EraseConfig.joint(iterations=2, global_id_weight=1.0),
                     measure=False, progress=False)


@pytest.mark.slow
def test_a_resumed_joint_run_with_a_done_ratio_equals_an_uninterrupted_one(tmp_path):
    from guide_unlearn.config import RunOptions
    from guide_unlearn.engine import run_erase
    from guide_unlearn.resume import STATE_FILE

    eraser = tiny_eraser()
    ws = _codes(eraser, 3, seed=13)
    people = torch.arange(3)
    cfg = EraseConfig.joint(iterations=150, joint_done_ratio=0.6)

    def erase(state_dir=None):
        run = RunOptions(progress=False, checkpoint_every=2, state_dir=state_dir)
        return run_erase(eraser.generator, ws, cfg, eraser.perceptual, eraser.identity_model, person_of=people,
                         person_ids=["a", "b", "c"], run=run)

    straight = erase()
    stop = straight.patch.metadata["stopped_at_step"]
    first_done = min(e["done_at_step"] for e in straight.patch.metadata["requests"])
    assert first_done < stop - 2  # the checkpoint below holds someone already done
    with interrupted_at(stop), pytest.raises(KeyboardInterrupt):  # dies during step stop - 1, after a checkpoint
        erase(tmp_path)
    assert (tmp_path / STATE_FILE).is_file()
    resumed = erase(tmp_path)
    assert resumed.patch.patch_id == straight.patch.patch_id
    assert resumed.patch.metadata["requests"] == straight.patch.metadata["requests"]


# -- the method that runs, refusals before any work, the settings erase_many takes, and its verdicts -------------
def test_erase_many_refuses_a_method_that_erases_one_person_before_any_work(monkeypatch):
    import guide_unlearn.pipelines.photos as photos

    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    monkeypatch.setattr(photos, "codes", lambda *a, **k: pytest.fail("inverted before the refusal"))
    requests = {"a": ws[:1], "b": ws[1:]}
    with pytest.raises(ConfigError, match=r"method 'robust' erases one person per patch.*method='joint'"):
        eraser.erase_many(requests, EraseConfig.preset("robust"))  # ran the plain loop under a 'robust' card
    for method in ("robust", "lora", "paper"):
        with pytest.raises(ConfigError, match=f"method '{method}' erases one person"):
            eraser.erase_many(requests, method=method)


def test_erase_batch_refuses_joint_groups_with_a_one_person_method_before_any_work(tmp_path, capsys):
    from guide_unlearn.cli import main

    for rid in ("a", "b"):
        (tmp_path / "req" / rid).mkdir(parents=True)
        (tmp_path / "req" / rid / "x.png").write_bytes(b"not opened before the refusal")
    args = ["erase-batch", str(tmp_path / "req"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "out"),
            "--joint", "2"]
    assert main(args + ["--method", "robust"]) == 2
    err = capsys.readouterr().err
    assert "--method robust erases one person per patch" in err and "--method joint" in err
    assert not (tmp_path / "out").exists()


def test_keep_erased_with_a_method_that_cannot_keep_is_refused_before_any_work(monkeypatch):
    import guide_unlearn.pipelines.photos as photos

    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    monkeypatch.setattr(photos, "codes", lambda *a, **k: pytest.fail("inverted before the refusal"))
    for method in ("lora", "robust"):
        with pytest.raises(ConfigError, match=f"method '{method}' cannot keep earlier people erased.*'joint'"):
            eraser.erase(ws[1:], method=method, keep_erased=ws[:1])


def test_erase_many_takes_the_keyword_settings_erase_takes():
    eraser = tiny_eraser()
    ws = _codes(eraser, 2)
    result = eraser.erase_many({"a": ws[:1], "b": ws[1:]}, iterations=3, persons_per_step=1, joint_balance=0.5,
                               measure=False, progress=False)
    used = result.patch.metadata["erase_config"]
    assert result.patch.metadata["method"] == used["method"] == "joint"
    assert used["iterations"] == 3 and len(result.history) == 3
    assert (used["method_config"]["persons_per_step"], used["method_config"]["joint_balance"]) == (1, 0.5)
    with pytest.raises(ConfigError, match="did you mean iterations"):
        eraser.erase_many({"a": ws[:1], "b": ws[1:]}, iteratons=3)


def test_erase_many_judges_each_person_with_the_figures_erase_measures():
    from guide_unlearn.outputs import EraseRun, Verdict
    from guide_unlearn.pipelines.measure import erasure_result

    eraser = tiny_eraser()
    ws = _codes(eraser, 2, seed=21)
    result = eraser.erase_many({"a": ws[:1], "b": ws[1:]}, iterations=20, progress=False)
    assert set(result.verdicts) == set(result.metrics) == {"a", "b"}
    for rid in ("a", "b"):
        alone = erasure_result(eraser.generator, EraseRun(result.patch, result.w_target[rid], [], 0.0),
                               result.w_source[rid], config=EraseConfig.from_dict(
                                   result.patch.metadata["erase_config"]),  # judged as erase judges one person
                               identity=result.verdicts[rid].identity)  # with the same identity check
        assert result.metrics[rid] == pytest.approx(alone.metrics)
        verdict = result.verdicts[rid]
        assert isinstance(verdict, Verdict) and verdict == alone.verdict
        assert verdict.erasure_ratio < 1.0 and verdict.succeeded is verdict["succeeded"]
    assert result.succeeded == all(v.succeeded for v in result.verdicts.values())
