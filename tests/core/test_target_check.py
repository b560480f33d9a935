"""The target check (guide_unlearn.targets.checked_targets): a target the identity judge still recognises as the
person is moved — farther from w_avg, then turned toward another face — until it is someone else, within a
bounded number of tries, or the erase is refused before anything is trained. Toy judges on codes stand in for a
face-recognition network (the core only calls the judge it is given)."""

from __future__ import annotations

import pytest
import torch

from guide_unlearn.errors import TargetError
from guide_unlearn.protocols import PersonJudge, Recognition
from guide_unlearn.pipelines.audit import SamePersonRule
from guide_unlearn.targets import TARGET_TRIES, checked_targets, ufo_target

W_DIM, NUM_WS = 8, 3


def mapping(z: torch.Tensor) -> torch.Tensor:
    return torch.tanh(z[:, :W_DIM]).unsqueeze(1).expand(-1, NUM_WS, -1).clone()


class CodeJudge:
    """Recognises a code when ``recognised(code - w_avg)`` says so; counts its calls."""

    name = "toy-code-judge"
    rule = SamePersonRule("toy-code-judge", "euclidean", 1.0, "tests")

    def __init__(self, recognised):
        self.recognised, self.calls = recognised, 0

    def recognise(self, ws, rows):
        self.calls += 1
        hit = torch.tensor([bool(self.recognised(w.flatten())) for w in ws])
        return Recognition(score=torch.where(hit, 0.5, 1.5).double(), cosine=torch.where(hit, 0.95, 0.5).double(),
                           face=torch.ones(len(ws), dtype=torch.bool), recognised=hit)


@pytest.fixture
def person():
    w_avg = torch.zeros(W_DIM)
    w_u = torch.randn(1, NUM_WS, W_DIM, generator=torch.Generator().manual_seed(3))
    return w_u, w_avg, ufo_target(w_u, w_avg, "extrapolate", 2.0)


def test_the_toy_judge_is_a_person_judge():
    assert isinstance(CodeJudge(lambda v: False), PersonJudge)


def test_a_target_the_judge_does_not_recognise_is_kept_as_it_is(person):
    w_u, w_avg, w_t = person
    judge = CodeJudge(lambda v: v.norm() < 0.5 * w_u.norm())  # only codes near w_avg... none of these
    out, record = checked_targets(w_u, w_t, judge, mapping, w_avg, W_DIM)
    assert torch.equal(out, w_t)
    assert record["moved"] == 0 and record["codes"][0]["attempt"] == 0 and record["codes"][0]["score"] == 1.5


def test_a_recognised_target_is_moved_farther_until_the_judge_no_longer_recognises_it(person):
    w_u, w_avg, w_t = person
    judge = CodeJudge(lambda v: v.norm() < 2.2)  # the target sits at distance 2: recognised; 2.5 is not
    out, record = checked_targets(w_u, w_t, judge, mapping, w_avg, W_DIM)
    assert record["codes"][0]["attempt"] == 1 and record["moved"] == 1
    assert out.flatten().norm().item() == pytest.approx(2.5, rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(out.flatten(), w_t.flatten(), dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-6)  # same direction, farther


def test_a_target_recognised_in_its_direction_is_turned_toward_another_face(person):
    w_u, w_avg, w_t = person
    own = w_t.flatten() / w_t.flatten().norm()
    judge = CodeJudge(lambda v: torch.dot(v / v.norm(), own) > 0.9)  # anything along the UFO direction
    out, record = checked_targets(w_u, w_t, judge, mapping, w_avg, W_DIM)
    assert record["codes"][0]["attempt"] == 2
    cos = torch.dot(out.flatten() / out.flatten().norm(), own).item()
    assert cos == pytest.approx(2 ** -0.5, abs=1e-5)  # turned by 45 degrees
    assert out.flatten().norm().item() == pytest.approx(2.0, rel=1e-5)


def test_the_erase_is_refused_after_the_bounded_number_of_tries(person):
    w_u, w_avg, w_t = person
    judge = CodeJudge(lambda v: True)
    with pytest.raises(TargetError, match="after 5 tries"):
        checked_targets(w_u, w_t, judge, mapping, w_avg, W_DIM, tries=5)
    assert judge.calls == 1 + 5  # the person's own code once, then each try


def test_the_default_bound_is_eight_tries(person):
    w_u, w_avg, w_t = person
    judge = CodeJudge(lambda v: True)
    with pytest.raises(TargetError):
        checked_targets(w_u, w_t, judge, mapping, w_avg, W_DIM)
    assert TARGET_TRIES == 8 and judge.calls == 9


def test_the_record_holds_numbers_about_the_target_never_a_code(person):
    w_u, w_avg, w_t = person
    _, record = checked_targets(w_u, w_t, CodeJudge(lambda v: v.norm() < 2.2), mapping, w_avg, W_DIM)
    values = [v for c in record["codes"] for v in c.values()]
    assert all(isinstance(v, (int, float, bool)) for v in values)
    assert record["judge"] == "toy-code-judge" and record["rule"] == {"network": "toy-code-judge", "metric": "euclidean", "cut": 1.0}


def test_each_code_of_a_request_is_checked_on_its_own():
    w_avg = torch.zeros(W_DIM)
    w_u = torch.randn(2, NUM_WS, W_DIM, generator=torch.Generator().manual_seed(4))
    w_t = ufo_target(w_u, w_avg, "extrapolate", 2.0)
    first = w_t[0].flatten() / w_t[0].flatten().norm()
    judge = CodeJudge(lambda v: torch.dot(v / v.norm(), first) > 0.99 and v.norm() < 2.2)
    out, record = checked_targets(w_u, w_t, judge, mapping, w_avg, W_DIM)
    assert [c["attempt"] for c in record["codes"]] == [1, 0]
    assert torch.equal(out[1], w_t[1])


def test_a_target_that_is_no_face_is_not_someone_else_when_the_person_renders_as_one(person):
    w_u, w_avg, w_t = person

    class FacelessTargets(CodeJudge):
        def recognise(self, ws, rows):
            rec = super().recognise(ws, rows)
            own = torch.tensor([torch.equal(w, w_u[0]) for w in ws])
            return Recognition(rec.score.masked_fill(~own, float("nan")), rec.cosine, own, rec.recognised & own)

    with pytest.raises(TargetError, match="3 rendered no face"):
        checked_targets(w_u, w_t, FacelessTargets(lambda v: False), mapping, w_avg, W_DIM, tries=3)
