"""The audit against a reference model, strangers, the re-learning attack and the code-book attack, on tiny models
(protocol toy-v1: a random identity network, so these test the measurements' plumbing and invariants, not face
recognition)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

import guide_unlearn
from guide_unlearn.config import EraseConfig
from guide_unlearn.errors import ConfigError, InputError, ReferenceMismatchError
from guide_unlearn.images import tensor_to_pil
from guide_unlearn.pipelines import audit as A
from guide_unlearn.testing import tiny_eraser

QUICK = dict(protocol="toy-v1", samples=4, projector_steps=3, leakage_starts=1, leakage_steps=1, progress=False)
EVERYTHING = ("reinvert", "leakage", "relearn", "code_book")


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny():
    """A tiny StyleGAN2 eraser, a patch erasing the first of 8 rendered 'people', and those pictures."""
    eraser = tiny_eraser("stylegan2", inverter_steps=3)
    g = torch.Generator().manual_seed(3)
    ws = eraser.generator.mapping(torch.randn(8, eraser.generator.z_dim, generator=g), None)
    patch = eraser.erase(ws[:1], config=EraseConfig(iterations=5), measure=False, progress=False).patch
    return eraser, patch, [tensor_to_pil(x) for x in eraser.synthesize(ws)]


@pytest.fixture(scope="module")
def same_as_base(tiny):
    """An audit with every part on, against a reference built exactly as the base (its own copy)."""
    eraser, patch, pics = tiny
    before = _digest(eraser.generator)
    reference = tiny_eraser("stylegan2", inverter_steps=3)
    report = guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:3], others=pics[3:5], reference=reference,
                                 strangers=pics[5:8], attacks=EVERYTHING, relearn_steps=4, **QUICK)
    return report, before, _digest(eraser.generator)


def test_a_reference_identical_to_the_base_gives_zero_differences(same_as_base):
    report, _, _ = same_as_base
    rows = report.details["comparison"]
    assert {r["figure"] for r in rows} >= {"held_out_recognised", "reinversion_default_recognised",
                                          "reinversion_scratch_recognised", "others_kept", "fd_pre",
                                          "relearn_recognised", "membership_default", "membership_scratch"}
    for row in rows:
        assert row["reference_minus_before"] == pytest.approx(0.0, abs=1e-9), row["figure"]
        assert row["after_minus_reference"] == pytest.approx(row["after"] - row["before"], abs=1e-9)
    assert report.details["membership"]["default"]["reference"] == report.details["membership"]["default"]["before"]


def test_the_reference_figures_are_metric_keys_with_their_difference(same_as_base):
    m = same_as_base[0].metrics
    for key in ("reinversion_default_recognised", "held_out_recognised", "others_kept", "relearn_recognised"):
        assert math.isfinite(m[f"reference_{key}"]) and math.isfinite(m[f"{key}_minus_reference"])
    assert m["reference_fd_pre"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(m["reference_fid_pre"]) and "fd_*" in same_as_base[0].details["not_run"]["reference_fid_pre"]
    assert same_as_base[0].networks["reference"]["name"] == "tiny-stylegan2"


def test_the_generator_is_bit_identical_after_an_audit_that_fine_tunes_copies_of_it(same_as_base):
    _, before, after = same_as_base
    assert before == after


def test_strangers_produce_membership_scores_with_a_percentile_and_a_spread(same_as_base):
    report = same_as_base[0]
    for role in ("before", "after", "reference"):
        r = report.details["membership"]["scratch"][role]
        assert len(r["strangers"]) == 3 and len(r["person"]) == 3
        assert math.isfinite(r["score"]) and 0.0 <= r["percentile"] <= 1.0 and r["std"] >= 0.0
    assert report.metrics["membership_scratch_after"] == report.details["membership"]["scratch"]["after"]["score"]


def test_the_membership_score_is_the_persons_mean_fidelity_minus_the_strangers():
    from guide_unlearn.pipelines.audit.membership import membership_score

    out = membership_score(np.array([0.9, 0.8, np.nan]), np.array([0.5, 0.6, 0.7, 0.9]), seed=0)
    assert out["score"] == pytest.approx(0.85 - 0.675)
    assert out["percentile"] == pytest.approx(0.75)  # 3 of 4 strangers below the person's mean 0.85
    assert out["std"] > 0
    assert math.isnan(membership_score(np.array([0.9]), np.array([np.nan]), seed=0)["score"])


def test_the_report_answers_the_four_questions_first_then_pictures_table_and_folded_networks(same_as_base, tmp_path):
    report = same_as_base[0]
    found = A.verdicts(report)
    assert [q for q in A.QUESTIONS if any(v.question == q for v in found)] == list(A.QUESTIONS)
    relearn = next(v for v in found if v.figure == "relearn_recognised_after")
    ref = report.metrics["reference_relearn_recognised"]
    assert relearn.passed == (report.metrics["relearn_recognised_after"] <= ref + 0.10)
    assert f"{ref + 0.10:.2f}" in relearn.threshold
    page = (report.save(tmp_path / "rep") / "report.html").read_text(encoding="utf-8")
    marks = ["<h2>Verdicts", "<h2>Side by side", "<h2>Pictures", "<h2>Metrics", "<details>", "</details>"]
    assert [page.index(m) for m in marks] == sorted(page.index(m) for m in marks)
    assert page.index("base_fingerprint") > page.index("<details>")
    for name in ("relearn.png", "membership.png", "reference.png"):
        assert f"alt='{name}'" in page


def test_the_relearning_attack_moves_the_rendering_toward_the_photo():
    eraser = tiny_eraser("stylegan2")
    gen = eraser.generator
    g = torch.Generator().manual_seed(1)
    ws = gen.mapping(torch.randn(3, gen.z_dim, generator=g), None).detach()
    photo = eraser.synthesize(ws[1:2])  # another "person": the pivot code does not render it
    twin = A.relearn.tuned_copy(A.AuditedModel("after", eraser))
    shots = A.pivotal_tuning(twin, ws[:1], photo, None, eraser.perceptual, steps=30, probe=ws[2:], probe_cameras=None,
                             seed=0, lr=3e-3, checkpoints=(0, 10, 30))
    error = {k: float((v[:1] - photo).square().mean()) for k, v in shots.items()}
    assert error[30] < 0.5 * error[0] and error[10] < error[0]
    assert not torch.equal(shots[30][1:], shots[0][1:])  # the held-out probe moves with the weights
    assert torch.equal(shots[0], eraser.synthesize(ws[[0, 2]]))  # k = 0 is the model as it was


def test_pivotal_tuning_of_a_copy_draws_the_same_curve_twice():
    eraser = tiny_eraser("stylegan2")
    ws = eraser.generator.mapping(torch.randn(2, eraser.generator.z_dim, generator=torch.Generator().manual_seed(2)),
                                  None).detach()
    photo = eraser.synthesize(ws[1:])

    def run():
        twin = A.relearn.tuned_copy(A.AuditedModel("before", eraser))
        return A.pivotal_tuning(twin, ws[:1], photo, None, eraser.perceptual, steps=5, probe=ws[1:],
                                probe_cameras=None, checkpoints=(5,))[5]

    assert torch.equal(run(), run())


def test_a_reference_of_another_family_or_resolution_is_refused_before_any_work(tiny):
    from guide_unlearn import IdentityEraser
    from guide_unlearn.families import get_family

    eraser, patch, pics = tiny
    smaller = IdentityEraser(get_family("stylegan2").tiny(img_resolution=16), name="tiny-16")
    with pytest.raises(ReferenceMismatchError, match="16 px"):
        guide_unlearn.audit(eraser, patch, pics[:1], reference=smaller, **QUICK)
    with pytest.raises(ReferenceMismatchError, match="'eg3d'"):
        guide_unlearn.audit(eraser, patch, pics[:1], reference="tiny-eg3d", **QUICK)
    with pytest.raises(ConfigError, match="itself"):
        guide_unlearn.audit(eraser, patch, pics[:1], reference=eraser, **QUICK)


@pytest.mark.parametrize("options, match", [
    ({"referense": "tiny-stylegan2"}, "referense"),
    ({"relearn_steps": 0}, "relearn_steps"),
    ({"relearn_steps": 5000}, "relearn_steps"),
    ({"relearn_steps": 2.5}, "relearn_steps"),
    ({"relearn_lr": 0.0}, "relearn_lr"),
    ({"relearn_lr": 1.0}, "relearn_lr"),
    ({"code_book_drop": "everyone"}, "code_book_drop"),
])
def test_unknown_or_out_of_range_options_are_refused(tiny, options, match):
    eraser, patch, pics = tiny
    with pytest.raises(ConfigError, match=match):
        guide_unlearn.audit(eraser, patch, pics[:1], attacks=("relearn", "code_book"), **options, **QUICK)


def test_a_missing_strangers_folder_is_an_input_error(tiny, tmp_path):
    eraser, patch, pics = tiny
    with pytest.raises(InputError, match="does not exist"):
        guide_unlearn.audit(eraser, patch, pics[:1], strangers=tmp_path / "nobody", **QUICK)


def test_without_reference_or_strangers_the_report_keys_are_as_before(tiny):
    eraser, patch, pics = tiny
    rep = guide_unlearn.audit(eraser, patch, pics[:1], attacks=(), **QUICK)
    assert tuple(rep.metrics) == A.METRIC_KEYS and "comparison" not in rep.details


def _toy_code_book(eraser, pics, threshold=1e-3):
    """A code book of the pictures' z codes with toy descriptors: an entry matches only its own picture."""
    from guide_unlearn.adapters.projector import CodeBook
    from guide_unlearn.adapters.toy import ToyIdentityNet
    from guide_unlearn.images import pil_to_tensor

    net = ToyIdentityNet(seed=0)
    describe = lambda crops: net.embed(crops.float()).detach().double().numpy()  # noqa: E731
    crops = torch.cat([pil_to_tensor(p, eraser.generator.img_resolution) for p in pics])
    z = torch.randn(len(pics), eraser.generator.z_dim, generator=torch.Generator().manual_seed(3))
    return CodeBook(z, describe(crops), describe, threshold), crops


def test_a_code_book_drops_the_entries_near_a_persons_photos_and_keeps_the_rest_in_order(tiny):
    eraser, _, pics = tiny
    book, crops = _toy_code_book(eraser, pics)
    assert book.entries_near(crops[[2, 5]]) == [2, 5]
    kept = book.without([2, 5])
    assert len(kept) == 6 and torch.equal(kept.codes, book.codes[[0, 1, 3, 4, 6, 7]])
    assert kept.threshold == book.threshold and kept.entries_near(crops[[2]]) == []
    with pytest.raises(InputError, match="not all in"):
        book.without([8])
    with pytest.raises(InputError, match="empty"):
        book.without(range(8))


def test_the_code_book_attack_drops_the_persons_entries_from_a_fresh_default_inverter(tiny, monkeypatch):
    from guide_unlearn.adapters.projector import CodeInverter

    eraser, patch, pics = tiny
    book, _ = _toy_code_book(eraser, pics)
    made = []

    def fresh(e):
        made.append(CodeInverter(e.generator, e.perceptual, starts=2, steps=2, refine_steps=1, book_refine_steps=1,
                                 code_book=book, progress=False))
        return made[-1]

    monkeypatch.setattr(A.attacks, "fresh_default_inverter", fresh)
    rep = guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:3], attacks=("code_book",), **QUICK)
    assert rep.metrics["code_book_person_entries"] == 3.0  # the request and the two held-out pictures
    assert rep.details["code_book"]["before"]["dropped"] == [0, 1, 2]
    assert all(len(inv.code_book) == 5 for inv in made) and len(book) == 8  # the shipped book is untouched
    assert math.isfinite(rep.metrics["reinversion_default_without_entry_recognised_after"])
    assert "no reference" in rep.details["not_run"]["reference_reinversion_default_without_entry_recognised"]


def test_the_code_book_attack_says_why_it_did_not_run_on_a_model_without_a_book(tiny):
    eraser, patch, pics = tiny
    rep = guide_unlearn.audit(eraser, patch, pics[:1], attacks=("code_book",), **QUICK)
    assert math.isnan(rep.metrics["code_book_person_entries"])
    assert rep.details["not_run"]["code_book_person_entries"] == "the model's default inverter uses no code book"


@pytest.mark.slow
def test_cli_audit_with_a_reference_strangers_and_the_relearn_attack(tiny, tmp_path, capsys):
    import json

    from guide_unlearn.cli import main

    _, patch, pics = tiny
    folder = patch.save_pretrained(tmp_path / "patch")
    for i, p in enumerate(pics[:5]):
        p.save(tmp_path / f"p{i}.png")
    out = tmp_path / "audit"
    code = main(["audit", str(folder), "--model", "tiny-stylegan2", "--photo", str(tmp_path / "p0.png"),
                 "--held-out", str(tmp_path / "p1.png"), "--strangers", str(tmp_path / "p3.png"),
                 str(tmp_path / "p4.png"), "--reference", "tiny-stylegan2", "--attacks", "relearn",
                 "--relearn-steps", "2", "--protocol", "toy-v1", "--samples", "4", "--projector-steps", "2",
                 "--quiet", "--out", str(out)])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metrics"]
    assert metrics["relearn_recognised_minus_reference"] is not None
    assert metrics["reference_held_out_recognised"] == metrics["held_out_recognised_before"]
    assert metrics["membership_scratch_after"] is not None and (out / "relearn.png").is_file()


def test_cli_refuses_a_malformed_option_before_loading(tmp_path, capsys):
    from guide_unlearn.cli import EXIT_USER_ERROR, main

    code = main(["audit", str(tmp_path / "patch"), "--model", "tiny-stylegan2", "--photo", str(tmp_path / "p.png"),
                 "--option", "not an option", "--out", str(tmp_path / "audit")])
    assert code == EXIT_USER_ERROR
    assert "--option takes KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()


def test_with_no_entry_to_drop_the_code_book_attack_is_the_default_reinversion(tiny, monkeypatch):
    from guide_unlearn.adapters.projector import CodeInverter

    eraser, patch, pics = tiny
    book, _ = _toy_code_book(eraser, pics[3:])  # nobody of the audited person is in it
    monkeypatch.setattr(A.attacks, "fresh_default_inverter", lambda e: CodeInverter(
        e.generator, e.perceptual, starts=2, steps=2, refine_steps=1, code_book=book, progress=False))
    rep = guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:3], attacks=("reinvert", "code_book"),
                              **QUICK)
    assert rep.metrics["code_book_person_entries"] == 0.0
    for when in ("before", "after"):
        assert rep.metrics[f"reinversion_default_without_entry_recognised_{when}"] == \
            rep.metrics[f"reinversion_default_recognised_{when}"]
        assert torch.equal(rep.gallery[f"code_book_{when}"], rep.gallery["attack_default"][when == "after"])


def test_a_reference_with_the_bases_weights_is_flagged_as_a_stand_in(same_as_base):
    report = same_as_base[0]
    assert report.details["reference"]["stand_in"] is True
    relearn = next(v for v in A.verdicts(report) if v.figure == "relearn_recognised_after")
    assert "stand-in" in relearn.note


def test_a_reference_with_other_weights_is_no_stand_in(tiny):
    from guide_unlearn.pipelines.audit.compared import is_stand_in

    eraser, _, _ = tiny
    assert not is_stand_in(tiny_eraser("stylegan2", seed=1), eraser)
    assert is_stand_in(tiny_eraser("stylegan2", seed=0), eraser)
