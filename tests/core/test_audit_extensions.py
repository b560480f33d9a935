"""The audit's extension points: a judge, a protocol, a metric family or an attack registered from outside the
package (here, this test file) is picked up by ``audit`` by name; the shipped plug-ins fill exactly the report's
keys; the robust erase method attacks with the same attack objects as the audit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import guide_unlearn
from guide_unlearn.config import EraseConfig
from guide_unlearn.errors import ConfigError
from guide_unlearn.images import tensor_to_pil
from guide_unlearn.pipelines import audit as A
from guide_unlearn.testing import tiny_eraser

QUICK = dict(protocol="toy-v1", samples=4, progress=False)


@pytest.fixture(scope="module")
def tiny():
    """A tiny StyleGAN2 eraser, a patch erasing the first of 4 rendered 'people', and those pictures."""
    eraser = tiny_eraser("stylegan2", inverter_steps=5)
    g = torch.Generator().manual_seed(3)
    ws = eraser.generator.mapping(torch.randn(4, eraser.generator.z_dim, generator=g), None)
    patch = eraser.erase(ws[:1], config=EraseConfig(iterations=5), measure=False, progress=False).patch
    return eraser, patch, [tensor_to_pil(x) for x in eraser.synthesize(ws)]


class ColourJudge(A.Judge):
    """A judge that describes a whole image by its channel means and spreads (6 numbers)."""

    name = "colour statistics"
    same_person = A.SamePersonRule(name, "cosine", 0.99, "chosen for this test")

    def __init__(self, resolution: int):
        self.resolution = resolution
        self.described = 0

    def photo(self, image, label, person, eraser):
        from guide_unlearn.images import pil_to_tensor

        crop = pil_to_tensor(image, self.resolution)
        return A.Photo(label, person, crop, None, self.describe(crop, None)[0], None)

    def describe(self, images, landmarks):
        self.described += images.shape[0]
        x = images.detach().double().flatten(2)
        return torch.cat([x.mean(2), x.std(2)], 1).numpy()

    def faces(self, images):
        return np.ones(images.shape[0], bool)

    def networks(self):
        return {"identity": {"name": self.name}, "detector": None, "features": {"name": "FD-colour"}}


@pytest.fixture
def colour_protocol():
    judges: list[ColourJudge] = []

    def factory(protocol, eraser):
        judges.append(ColourJudge(eraser.generator.img_resolution))
        return judges[-1]

    A.register_judge("colour", factory)
    A.register_protocol(A.Protocol("colour-v1", "colour", "FD-colour", samples=4))
    try:
        yield judges
    finally:
        A.PROTOCOLS.unregister("colour-v1")
        A.JUDGES.unregister("colour")


class SpreadAttack(A.AuditAttack):
    """An attack that measures how far the patch moves the person's request code's rendering (pixel L1)."""

    name = "spread"
    keys = ("spread_l1",)
    meanings = {"spread_l1": "mean |G_u - G_s| of the request code's rendering"}
    options = {"spread_scale": "a factor the figure is multiplied by (default 1)"}

    def run(self, ctx):
        from guide_unlearn import patching
        from guide_unlearn.pipelines.audit.rendering import render

        with ctx.timed("spread"):
            before = render(ctx.eraser, ctx.codes["request"], None)
            with patching.applied_temporarily(ctx.eraser.generator, ctx.patch):
                after = render(ctx.eraser, ctx.codes["request"], None)
            ctx.metrics["spread_l1"] = float((after - before).abs().mean()) * ctx.options.get("spread_scale", 1.0)


@pytest.fixture
def spread_attack():
    A.register_attack(SpreadAttack)
    try:
        yield
    finally:
        A.METRIC_FAMILIES.unregister("spread")


def test_a_judge_registered_from_a_test_file_judges_the_protocol_that_names_it(tiny, colour_protocol):
    eraser, patch, pics = tiny
    rep = guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:2], others=pics[2:4], attacks=(),
                              **{**QUICK, "protocol": "colour-v1"})
    judge = colour_protocol[0]
    assert rep.protocol["identity"] == "colour statistics" and rep.protocol["version"] == 1
    assert rep.networks["identity"] == {"name": "colour statistics"}
    assert rep.thresholds["same_person"] == 0.99 and "chosen for this test" in rep.thresholds["same_person_rule"]
    assert judge.described > 10  # photos, renderings and the Fréchet samples all went through it
    assert -1.0 <= rep.metrics["id"] <= 1.0 and math.isfinite(rep.metrics["fd_pre"])
    assert rep.metrics["held_out_recognised_before"] in (0.0, 1.0)


def test_an_attack_registered_from_a_test_file_runs_when_named_and_adds_its_key(tiny, spread_attack):
    eraser, patch, pics = tiny
    rep = guide_unlearn.audit(eraser, patch, pics[:1], attacks=("spread",), spread_scale=2.0, **QUICK)
    assert tuple(rep.metrics) == A.METRIC_KEYS + ("spread_l1",)
    assert rep.metrics["spread_l1"] > 0 and rep.seconds["spread"] >= 0
    assert rep.details["not_run"]["reinversion_default_recognised_after"] == "the reinvert attack was not requested"
    assert "spread" in A.registered_attacks()
    again = guide_unlearn.audit(eraser, patch, pics[:1], attacks=("spread",), **QUICK)
    assert again.metrics["spread_l1"] == pytest.approx(rep.metrics["spread_l1"] / 2)


def test_an_attack_not_named_leaves_the_report_keys_as_they_were(tiny, spread_attack):
    eraser, patch, pics = tiny
    rep = guide_unlearn.audit(eraser, patch, pics[:1], attacks=(), **QUICK)
    assert tuple(rep.metrics) == A.METRIC_KEYS and "spread" not in rep.seconds


def test_a_keyword_no_family_declared_is_a_config_error(tiny, spread_attack):
    eraser, patch, pics = tiny
    with pytest.raises(ConfigError, match="spread_scale"):
        guide_unlearn.audit(eraser, patch, pics[:1], attacks=(), spred_scale=2.0, **QUICK)


def test_the_shipped_families_fill_exactly_the_metric_keys_in_their_order():
    default = [f for f in A.METRIC_FAMILIES.values() if f.runs(A.ATTACKS, {})]  # no reference=, no strangers=
    assert tuple(k for f in default for k in f.keys) == A.METRIC_KEYS
    assert A.registered_attacks()[:2] == A.ATTACKS == ("reinvert", "leakage")
    assert {"relearn", "code_book"} <= set(A.registered_attacks())
    assert set(A.JUDGES) >= {"toy", "dlib", "curricularface"}


def test_a_taken_name_or_metric_key_is_refused():
    class Copy(A.MetricFamily):
        name, keys = "copy", ("id",)

    with pytest.raises(ConfigError, match="already belong to family 'id'"):
        A.register_metric_family(Copy)
    with pytest.raises(ConfigError, match="already registered"):
        A.register_judge("toy", lambda protocol, eraser: None)
    with pytest.raises(ConfigError, match="not an attack"):
        A.register_attack(Copy)
    with pytest.raises(ConfigError, match="-v<version>"):
        A.register_protocol(A.Protocol("unversioned", "toy", "FD-toy"))
    assert "copy" not in A.METRIC_FAMILIES


def test_the_robust_round_attacks_with_the_audits_default_inverter_attack(tiny):
    from guide_unlearn.pipelines.robust_attacks import build_attack

    eraser, _, _ = tiny
    images = eraser.synthesize(eraser.generator.mapping(torch.randn(2, eraser.generator.z_dim), None))
    cfg = EraseConfig.robust(attack_augmentations=0, round_attackers=("default",), seed=5)
    found = build_attack(eraser, images, None, cfg)(3)
    own = A.DefaultInverterAttack(eraser).invert(images, None, torch.Generator().manual_seed(5 * 1000 + 3))
    assert torch.equal(found, own)


@pytest.mark.slow
def test_the_leakage_probe_on_a_volume_renderer_gives_the_same_answer_twice():
    """EG3D's ray jitter is random: the probe draws it from its seed (the same for G_u and G_s)."""
    eraser = tiny_eraser("eg3d", inverter_steps=2)
    ws = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(4)),
                                  None)
    patch = eraser.erase(ws, config=EraseConfig(iterations=3), measure=False, progress=False).patch
    a = A.leakage_probe(eraser, patch, starts=2, steps=3, seed=1)
    b = A.leakage_probe(eraser, patch, starts=2, steps=3, seed=1)
    assert np.array_equal(a["difference"], b["difference"]) and a["difference"].min() > 0


def test_the_same_person_rule_reads_distances_and_cosines_and_never_recognises_no_face():
    dist = A.SamePersonRule("net", "euclidean", 0.6, "published")
    cos = A.SamePersonRule("net", "cosine", 0.9, "published")
    assert dist.same(np.array([0.59, 0.6, np.nan])).tolist() == [True, False, False]
    assert cos.same(np.array([0.9, 0.89, np.nan])).tolist() == [True, False, False]
    refs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert dist.best(np.array([[0.9, 0.1]]), refs)[0] == pytest.approx(np.hypot(0.1, 0.1))
    with pytest.raises(ConfigError, match="metric"):
        A.SamePersonRule("net", "manhattan", 1.0, "")


def test_the_cut_at_a_false_accept_rate_admits_at_most_that_share_of_impostor_pairs():
    from guide_unlearn.pipelines.audit.calibration import cut_at_false_accept_rate

    distances = np.linspace(0.1, 1.0, 10)
    cut = cut_at_false_accept_rate(distances, 0.1, "euclidean")
    assert cut == pytest.approx(0.2) and (distances < cut).sum() == 1
    cosines = np.linspace(0.0, 0.9, 10)
    cut = cut_at_false_accept_rate(cosines, 0.2, "cosine")
    assert (cosines >= cut).sum() == 2 and 0.7 < cut < 0.8


def test_a_calibrated_rule_says_how_its_cut_was_chosen_and_keeps_the_published_one_beside_it(tiny):
    from guide_unlearn.pipelines.audit.calibration import calibrate_same_person_rule
    from guide_unlearn.pipelines.audit.judge_toy import ToyJudge

    _, _, pics = tiny
    judge = ToyJudge(pics[0].size[0])
    cal = calibrate_same_person_rule(judge, {"a": pics[:2], "b": pics[2:3], "c": pics[3:4]}, far=0.25)
    assert cal.people == 3 and cal.photos == 4 and cal.impostor_pairs == 10 and cal.genuine_pairs == 2
    assert cal.rates["calibrated"]["false_accept"] <= 0.25 and cal.published.cut == 0.9
    assert cal.rule.metric == "cosine" and "false-accept rate 0.25 over 10 ordered pairs" in cal.rule.how_chosen
    assert cal.rates["calibrated"]["same_photo_accept"] == 1.0  # toy crops at the same size: probe == photo
