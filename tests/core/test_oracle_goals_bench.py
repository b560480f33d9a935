"""The oracle-goals benchmark's own logic: who is asked about, the goal checks and the pooled summary."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "oracle_goals.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("oracle_goals_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(before, after, reference):
    return {"before": before, "after": after, "reference": reference}


def test_an_attack_meets_the_goal_at_exactly_the_reference_plus_the_margin(bench):
    entry = bench.attack_entry(_row(1.0, 0.35, 0.25), None)
    assert entry["goal_met"] is True
    assert entry["patched_minus_reference"] == pytest.approx(0.10)


def test_an_attack_misses_the_goal_beyond_the_margin_and_says_by_how_much(bench):
    entry = bench.attack_entry(_row(1.0, 0.5, 0.25), None)
    assert entry["goal_met"] is False
    assert entry["patched_minus_reference"] == pytest.approx(0.25)


def test_an_attack_the_audit_did_not_run_has_no_goal_and_keeps_the_reason(bench):
    entry = bench.attack_entry(_row(float("nan"), float("nan"), float("nan")), "needs held-out photos")
    assert entry["goal_met"] is None
    assert entry["patched"] is None
    assert entry["not_measured"] == "needs held-out photos"


def test_membership_passes_up_to_two_bootstrap_deviations_above_the_reference(bench):
    scores = {"before": {"score": 0.2, "std": 0.01}, "after": {"score": 0.05, "std": 0.01},
              "reference": {"score": -0.01, "std": 0.03}}
    assert bench.membership_entry(scores, None)["goal_met"] is True  # 0.06 <= 2 x 0.03
    scores["reference"]["std"] = 0.02
    entry = bench.membership_entry(scores, None)
    assert entry["goal_met"] is False  # 0.06 > 2 x 0.02
    assert entry["reference_bootstrap_std"] == pytest.approx(0.02)
    assert entry["patched_minus_reference"] == pytest.approx(0.06)


def test_membership_far_below_the_reference_is_no_trace_of_the_person(bench):
    scores = {"after": {"score": -0.5, "std": 0.01}, "reference": {"score": -0.1, "std": 0.05}}
    assert bench.membership_entry(scores, None)["goal_met"] is True  # one-sided, as the audit's verdict rule


def test_nothing_measured_is_no_verdict_and_a_missed_others_goal_is_a_miss(bench):
    assert bench.pooled([{"person": "c", "refused": "NoFaceError: none"}])["all_measured_goals_met"] is None
    row = {"person": "a", **bench.person_figures([{"figure": "others_kept", **_row(1.0, 0.7, 0.9)}], {}, None,
                                                 with_others=True)}
    assert bench.pooled([row])["all_measured_goals_met"] is False


def test_others_figures_pass_when_the_patch_moves_no_further_from_the_base_than_the_reference(bench):
    assert bench.others_entry(_row(1.0, 0.9, 0.8), higher_is_better=True)["goal_met"] is True
    assert bench.others_entry(_row(1.0, 0.7, 0.8), higher_is_better=True)["goal_met"] is False
    assert bench.others_entry(_row(0.0, 3.0, 5.0), higher_is_better=False)["goal_met"] is True
    assert bench.others_entry(_row(0.0, 6.0, 5.0), higher_is_better=False)["goal_met"] is False


def test_the_pooled_line_averages_the_people_measured_and_counts_the_goals_met(bench):
    def person(name, relearn):
        comparison = [{"figure": "reinversion_default_recognised", **_row(1.0, after, 0.2)} for after in [relearn[0]]]
        if relearn[1] is not None:
            comparison.append({"figure": "relearn_recognised", **_row(1.0, relearn[1], 0.0)})
        return {"person": name, **bench.person_figures(comparison, {"relearn_recognised_after": "no held-out"},
                                                       None, with_others=False)}

    rows = [person("a", (0.2, 0.5)), person("b", (0.6, None)), {"person": "c", "refused": "NoFaceError: none"}]
    pooled = bench.pooled(rows)
    default = pooled["attacks"]["default_inverter"]
    assert default["patched"] == pytest.approx(0.4)
    assert default["reference"] == pytest.approx(0.2)
    assert (default["people_meeting_goal"], default["people_measured"]) == (1, 2)
    assert default["missed_by"] == {"b": pytest.approx(0.4)}
    relearn = pooled["attacks"]["relearn"]
    assert (relearn["people_meeting_goal"], relearn["people_measured"], relearn["not_measured"]) == (0, 1, ["b"])
    assert pooled["not_audited"] == {"c": "NoFaceError: none"}
    assert pooled["all_measured_goals_met"] is False


def test_the_guide_person_is_asked_from_its_held_out_photo_and_everyone_else_from_their_only_one(bench, tmp_path):
    for name in [f"guide_celebahq512/aligned_{i}.jpg" for i in range(1, 6)] + ["ilvr_ffhq/00004.png",
                                                                                 "ilvr_ffhq/00005.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    asked = bench.people_and_requests(tmp_path, ["guide_celebahq512", "ilvr_ffhq/00004.png"])
    assert asked[0]["request"] == "guide_celebahq512/aligned_5.jpg"
    assert asked[0]["held_out"] == [f"guide_celebahq512/aligned_{i}.jpg" for i in range(1, 5)]
    assert asked[1] == {"person": "ilvr_ffhq/00004.png", "request": "ilvr_ffhq/00004.png", "held_out": []}
    retained = bench.retained_people(tmp_path, ["guide_celebahq512", "ilvr_ffhq/00004.png"])
    assert retained == {"ilvr_ffhq/00005.png": ["ilvr_ffhq/00005.png"]}


def test_patches_made_with_an_identity_model_are_never_reused_for_a_run_without_one(bench, tmp_path):
    people = [{"person": "a/1.png"}, {"person": "b/2.png"}]
    plain = bench.patch_folders(tmp_path, "sugar", people, None)
    judged = bench.patch_folders(tmp_path, "sugar", people, None, "faceapi")
    assert plain["a/1.png"] == plain["b/2.png"]  # one joint patch for everyone
    assert judged["a/1.png"].parent.name == "sugar-faceapi"
    assert plain["a/1.png"].parent.name == "sugar"


def test_the_goals_use_the_audits_own_tolerance_and_membership_spread(bench):
    from guide_unlearn.pipelines.audit.verdicts import MEMBERSHIP_SPREAD, TOLERANCE

    assert bench.MARGIN == TOLERANCE
    assert bench.SPREAD_SDS == MEMBERSHIP_SPREAD
