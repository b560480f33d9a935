"""The erase verdict judged by identity (#29): an erase whose identity judge still recognises the person is not a
success, targets are someone else for the judge, and a verdict without a judge says identity was not checked.

Tiny models and toy judges on codes: a code is "the person" when it lies within ``radius`` of the person's own
code. Such a judge sees no pixels, so a patch that moved every pixel still leaves the person recognised — the
situation of the issue (pixels moved to the target, the target still the person)."""

from __future__ import annotations

import json

import pytest
import torch

from guide_unlearn.cli import main
from guide_unlearn.errors import TargetError
from guide_unlearn.protocols import Recognition
from guide_unlearn.pipelines.audit import SamePersonRule
from guide_unlearn.targets import ufo_target
from guide_unlearn.testing import tiny_eraser


class NearCodeJudge:
    """Recognises a code as row r's person when ||code - w_u[r]|| < radius."""

    name = "toy-near-code"

    def __init__(self, w_u: torch.Tensor, radius: float):
        self.w_u, self.radius = w_u.detach().clone(), radius
        self.rule = SamePersonRule("toy-near-code", "euclidean", radius, "tests")
        self.calls = 0

    def recognise(self, ws, rows):
        self.calls += 1
        d = (ws.detach().cpu() - self.w_u.cpu()[rows]).flatten(1).norm(dim=1).double()
        return Recognition(score=d, cosine=torch.zeros_like(d), face=torch.ones(len(d), dtype=torch.bool),
                           recognised=d < self.radius)


def near(radius: float):
    """A judge factory for erase(judge=...)."""
    return lambda eraser, inputs, w_u, person_of: NearCodeJudge(w_u, radius)


@pytest.fixture(scope="module")
def eraser():
    return tiny_eraser(seed=0)


@pytest.fixture(scope="module")
def codes(eraser):
    g = torch.Generator().manual_seed(7)
    return eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=g)).detach()


def _target_distance(eraser, codes):
    from guide_unlearn.engine import resolve_distances

    d, _ = resolve_distances(eraser.default_config(), eraser.generator)
    w_t = ufo_target(codes, eraser.generator.w_avg, "extrapolate", d)
    return float((w_t - codes).flatten(1).norm())


def test_the_verdict_fails_while_the_judge_still_recognises_the_person(eraser, codes):
    gap = _target_distance(eraser, codes)
    result = eraser.erase(codes, judge=near(0.5 * gap), progress=False)  # the code itself stays "the person"
    v = result.verdict
    assert v["erasure_ratio"] <= 0.5  # the pixels moved to the target (on the last of the three runs)...
    assert v["identity_checked"] is True and v["identity"]["recognised"] is True  # ...the person is still seen
    assert v["succeeded"] is False and v["erased"] is False
    assert v["identity"]["judge"] == "toy-near-code" and v["identity"]["score"] == pytest.approx(0.0, abs=1e-4)
    assert any(p.startswith("STILL RECOGNISED") for p in v["problems"])


def test_an_erase_still_recognised_runs_again_with_a_farther_target_at_most_twice(eraser, codes):
    from guide_unlearn.targets import resolve_distances

    gap = _target_distance(eraser, codes)
    result = eraser.erase(codes, judge=near(0.5 * gap), iterations=2, progress=False)
    assert result.verdict.identity["retries"] == 2 and result.patch.metadata["identity_retries"] == 2
    d0, _ = resolve_distances(eraser.default_config(), eraser.generator)
    d2, _ = resolve_distances(eraser.default_config().replace(**{
        "target_distance": result.patch.metadata["erase_config"]["target_distance"]}), eraser.generator)
    assert d2 == pytest.approx(d0 * 1.25 ** 2, rel=1e-6)


def test_the_verdict_passes_when_the_judge_no_longer_recognises_the_person(eraser, codes):
    result = eraser.erase(codes, judge=near(0.0), progress=False)
    v = result.verdict
    assert v["identity_checked"] is True and v["identity"]["recognised"] is False
    assert v["succeeded"] is True and v["notes"] == [] and v["identity"]["retries"] == 0
    assert "identity_retries" not in result.patch.metadata


def test_a_verdict_without_a_judge_says_identity_was_not_checked(eraser, codes):
    v = eraser.erase(codes, judge=None, progress=False).verdict
    assert v["identity_checked"] is False and v["identity"]["recognised"] is None
    assert v["notes"] and v["notes"][0].startswith("identity not checked")


def test_a_target_the_judge_recognises_is_moved_before_training_and_recorded(eraser, codes):
    gap = _target_distance(eraser, codes)
    judge = near(1.1 * gap)  # the UFO target is within reach: recognised; 1.25x as far is not
    result = eraser.erase(codes, judge=judge, iterations=2, progress=False, measure=False)  # one run, no retry
    record = result.patch.metadata["target_identity"]
    assert record["judge"] == "toy-near-code" and record["moved"] == 1
    assert record["codes"][0]["attempt"] >= 1 and record["codes"][0]["score"] >= 1.1 * gap
    moved = float((result.w_target - codes).flatten(1).norm())
    assert moved >= 1.1 * gap


def test_an_erase_is_refused_before_training_when_no_target_is_someone_else(eraser, codes):
    before = [p.patch_id for p in eraser.applied_patches]
    with pytest.raises(TargetError, match="after 8 tries"):
        eraser.erase(codes, judge=near(1e9), progress=False)
    assert [p.patch_id for p in eraser.applied_patches] == before


def test_strict_exits_3_when_the_judge_still_recognises_the_person(tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from guide_unlearn.pipelines import identity_check

    e = tiny_eraser(seed=0)
    ws = e.generator.mapping(torch.randn(1, e.generator.z_dim, generator=torch.Generator().manual_seed(7))).detach()
    save_file({"ws": ws}, str(tmp_path / "ws.safetensors"))
    monkeypatch.setattr(identity_check, "DEFAULT_JUDGE", near(0.5 * _target_distance(e, ws)))
    args = ["erase", "--latent", str(tmp_path / "ws.safetensors"), "--model", "tiny-stylegan2", "--quiet",
            "--strict", "--out", str(tmp_path / "p")]
    assert main(args) == 3
    out, err = capsys.readouterr()
    line = json.loads(out.strip().splitlines()[-1])
    assert line["erased"] is False and line["verdict"]["identity"]["recognised"] is True
    assert "STILL RECOGNISED" in err


def test_the_erase_check_and_the_audit_judge_by_the_same_rule_object(eraser, codes, shared_dir):
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit import judge_dlib, judge_toy
    from guide_unlearn.pipelines.identity_check import request_judge

    photo = shared_dir / "faces" / "facenet_pytorch_test" / "paul_rudd_aligned.png"
    for protocol, rule in (("toy-v1", judge_toy.RULE), ("offline-v1", judge_dlib.RULE)):
        audit_judge = A.make_judge(A.get_protocol(protocol), eraser)
        erase_judge, why = request_judge(eraser, [photo], codes, protocol=protocol)
        assert why is None and erase_judge.reference.startswith("the request photos")
        assert audit_judge.same_person is rule and erase_judge.rule is rule


def test_the_dlib_rule_is_calibrated_and_keeps_the_published_cut_beside_it():
    from guide_unlearn.pipelines.audit import judge_dlib

    rule = judge_dlib.RULE
    assert rule.metric == "euclidean" and rule.cut == pytest.approx(0.6165) and rule.cosine_cut == pytest.approx(0.915)
    assert rule.details["published_cut"] == 0.6 and "false-accept rate 0.01" in rule.how_chosen


def test_each_persons_verdict_of_a_joint_erase_is_judged_by_identity(eraser):
    g = torch.Generator().manual_seed(9)
    ws = eraser.generator.mapping(torch.randn(2, eraser.generator.z_dim, generator=g)).detach()
    result = eraser.erase_many({"a": ws[:1], "b": ws[1:]}, iterations=2, progress=False, judge=near(1e-3))
    for rid in ("a", "b"):
        v = result.verdicts[rid]
        assert v.identity_checked is True and v.identity["recognised"] is True and v.succeeded is False
    assert result.patch.metadata["target_identity"]["moved"] == 0
