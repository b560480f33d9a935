"""guide_unlearn.audit on the tiny random models (protocol toy-v1: a random identity network, so the figures test
the plumbing, not face recognition), the report files, the CLI and bad input."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

import guide_unlearn
from guide_unlearn.config import EraseConfig
from guide_unlearn.errors import (BackendUnavailableError, ConfigError, InputError, PatchMismatchError, SaveError)
from guide_unlearn.images import tensor_to_pil
from guide_unlearn.pipelines.audit import METRIC_KEYS
from guide_unlearn.testing import tiny_eraser

FAST = dict(protocol="toy-v1", samples=48, projector_steps=20, leakage_starts=2, leakage_steps=5)


def _pictures(eraser, n, seed):
    g = torch.Generator().manual_seed(seed)
    ws = eraser.generator.mapping(torch.randn(n, eraser.generator.z_dim, generator=g), None)
    return ws, [tensor_to_pil(x) for x in eraser.synthesize(ws)]


@pytest.fixture(scope="module")
def tiny():
    """A tiny StyleGAN2 eraser, a patch erasing the first of 6 rendered 'people', and those pictures."""
    eraser = tiny_eraser("stylegan2", inverter_steps=20)
    ws, pics = _pictures(eraser, 6, seed=3)
    patch = eraser.erase(ws[:1], config=EraseConfig(iterations=30), measure=False).patch
    return eraser, patch, pics


@pytest.fixture(scope="module")
def report(tiny):
    eraser, patch, pics = tiny
    return guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:2], others=pics[2:4], real=pics[4:6],
                               **FAST)


def test_report_has_exactly_the_issue_metric_keys(report):
    assert tuple(report.metrics) == METRIC_KEYS and len(METRIC_KEYS) == 17
    for k, v in report.metrics.items():
        if k.startswith("fid"):
            assert math.isnan(v) and "Inception" in report.details["not_run"][k]
        else:
            assert math.isfinite(v), k


def test_tiny_audit_records_protocol_networks_and_settings(report):
    assert report.protocol["name"] == "toy-v1" and report.protocol["version"] == 1
    assert report.protocol["feature_space"] == "FD-toy"
    assert "random" in report.networks["identity"]["name"]
    assert report.networks["identity"]["digest"].startswith("sha256:")
    assert report.details["fd"]["samples"] == 48
    assert report.details["reinversion"]["inverters"]["scratch"]["steps"] == 20
    assert report.details["id"]["views"] == 1
    assert report.seconds["total"] > 0


def test_audit_leaves_the_applied_patches_as_they_were(tiny):
    eraser, patch, pics = tiny
    ws, _ = _pictures(eraser, 1, seed=9)
    other = eraser.erase(ws, config=EraseConfig(iterations=2), measure=False).patch
    eraser.apply_patch(other)
    try:
        guide_unlearn.audit(eraser, patch, pics[:1], attacks=(), **{**FAST, "samples": 4})
        assert [p.patch_id for p in eraser.applied_patches] == [other.patch_id]
    finally:
        eraser.remove_patch(other)
    assert eraser.applied_patches == []


def test_patch_for_another_base_is_refused(tiny):
    _, patch, pics = tiny
    with pytest.raises(PatchMismatchError):
        guide_unlearn.audit(tiny_eraser("stylegan2", seed=1), patch, pics[:1], **FAST)


def test_paper_protocol_refuses_naming_each_missing_weight_file(tiny):
    eraser, patch, pics = tiny
    with pytest.raises(BackendUnavailableError) as err:
        guide_unlearn.audit(eraser, patch, pics[:1], protocol="paper-v1")
    msg = str(err.value)
    for needed in ("CurricularFace_Backbone.pth", "pt_inception-2015-12-05-6726825d.pth", "put it at",
                   "offline-v1"):
        assert needed in msg


def test_unknown_protocol_and_attack_are_config_errors(tiny):
    eraser, patch, pics = tiny
    with pytest.raises(ConfigError, match="offline-v1"):
        guide_unlearn.audit(eraser, patch, pics[:1], protocol="fid-v9")
    with pytest.raises(ConfigError, match="reinvert"):
        guide_unlearn.audit(eraser, patch, pics[:1], attacks=("brute",), protocol="toy-v1")


def test_folder_with_non_images_is_skipped_and_counted(tiny, tmp_path):
    eraser, patch, pics = tiny
    folder = tmp_path / "held"
    folder.mkdir()
    pics[1].save(folder / "a.png")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    rep = guide_unlearn.audit(eraser, patch, pics[:1], held_out=folder, attacks=(), **{**FAST, "samples": 4})
    assert rep.details["counts"]["held_out"] == 1
    assert rep.details["counts"]["held_out_skipped"] == 2
    assert {s["photo"].rsplit("/", 1)[-1] for s in rep.details["skipped"]} == {"notes.txt", "broken.jpg"}
    assert math.isfinite(rep.metrics["held_out_recognised_after"])


def test_empty_folder_is_an_input_error(tiny, tmp_path):
    eraser, patch, pics = tiny
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no files"):
        guide_unlearn.audit(eraser, patch, pics[:1], held_out=tmp_path / "empty", **FAST)
    with pytest.raises(InputError, match="holds no files"):
        guide_unlearn.audit(eraser, patch, tmp_path / "empty", **FAST)


def _screen_lines(err: str) -> list[str]:
    """What a terminal shows of captured stderr: each line as left after its last carriage return."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in err.split("\n")]


def test_the_audit_names_each_stage_with_its_count_on_stderr(tiny, capsys):
    eraser, patch, pics = tiny
    guide_unlearn.audit(eraser, patch, pics[:1], held_out=pics[1:3], others=pics[3:4], attacks=("leakage",),
                        **{**FAST, "samples": 4})
    lines = _screen_lines(capsys.readouterr().err)
    # the four families that run (identity, held-out, leakage, Fréchet) after the two preparation stages
    for expected in ("audit 1/6: photos (4 files: 1 request, 2 held-out, 1 others)",
                     "audit 2/6: inverting the photos through G_s (4 photos)",
                     "audit 3/6: the person's identity in renderings (1 request photo, 1 photo of others)",
                     "audit 4/6: held-out photos (2 photos)",
                     "audit 5/6: patch-leakage probe (2 starts x 5 steps)",
                     "audit 6/6: Fréchet distance (4 samples per model, 0 real images)"):
        assert expected in lines


def test_a_quiet_audit_writes_nothing_to_stderr(tiny, capsys):
    eraser, patch, pics = tiny
    guide_unlearn.audit(eraser, patch, pics[:1], attacks=(), progress=False, **{**FAST, "samples": 4})
    assert capsys.readouterr().err == ""


def test_others_sample_keeps_whole_people_seeded_and_zero_means_everyone():
    from guide_unlearn.pipelines.audit import sample_people

    items = [(f"p{i}_{j}.png", None, f"person{i}") for i in range(10) for j in range(2)]  # 10 people, 2 photos each
    kept, rec = sample_people(items, 4, seed=1)
    people = {it[2] for it in kept}
    assert len(people) == 4 and len(kept) == 8  # whole people: both photos of each
    assert kept == [it for it in items if it[2] in people]  # original order
    assert sample_people(items, 4, seed=1)[0] == kept and sample_people(items, 4, seed=2)[0] != kept
    assert rec == {"people_given": 10, "people_audited": 4, "max_others": 4, "seed": 1}
    assert sample_people(items, 0, seed=1)[0] == items and sample_people(items, None, seed=1)[0] == items
    with pytest.raises(ConfigError, match="max_others"):
        sample_people(items, -1, seed=1)
    readme = ("README.md", None, "README.md")  # a non-image file takes no place and is kept (skipped later)
    kept, rec = sample_people([readme] + items, 4, seed=1)
    assert readme in kept and rec["people_given"] == 10 and len({it[2] for it in kept}) == 5


def test_audit_records_how_many_others_it_sampled(tiny):
    eraser, patch, pics = tiny
    rep = guide_unlearn.audit(eraser, patch, pics[:1], others=pics[1:5], attacks=(), max_others=2, **{
        k: v for k, v in FAST.items() if k != "projector_steps"})
    assert rep.details["others_sample"]["people_given"] == 4
    assert rep.details["others_sample"]["people_audited"] == 2 and rep.details["counts"]["others"] == 2


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        self.tables += tag == "table"


def _check_html(path):
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.tables >= 2 and len(parser.sources) >= 5  # the verdicts' tables and the metric table
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.format == "PNG" and min(img.size) > 50
    return parser


@pytest.mark.slow
def test_save_writes_json_html_and_figures_and_refuses_a_non_empty_folder(report, tmp_path):
    out = report.save(tmp_path / "rep")
    names = sorted(p.name for p in out.iterdir())
    assert {"report.json", "report.html", "person.png", "held_out.png", "attacks.png", "leakage.png",
            "histograms.png", "loss.png"} <= set(names)
    data = json.loads((out / "report.json").read_text())
    assert list(data["metrics"]) == list(METRIC_KEYS) and data["metrics"]["fid_pre"] is None
    _check_html(out / "report.html")
    with pytest.raises(SaveError, match="not an empty folder"):
        report.save(out)
    (tmp_path / "empty").mkdir()
    report.save(tmp_path / "empty")  # an existing empty folder is used


def test_write_to_patch_records_the_summary_and_keeps_the_patch_valid(tiny, report, tmp_path):
    from guide_unlearn import ForgetPatch

    _, patch, _ = tiny
    folder = patch.save_pretrained(tmp_path / "patch")
    report.write_to_patch(folder)
    again = ForgetPatch.from_pretrained(folder)
    assert again.patch_id == patch.patch_id
    audit = again.metadata["audit"]
    assert audit["protocol"] == "toy-v1" and set(audit["metrics"]) == set(METRIC_KEYS)
    assert audit["metrics"]["fid_pre"] is None and audit["date"].endswith("+00:00")
    assert "identity" in audit["networks"]
    card = (folder / "README.md").read_text()
    assert "toy-v1" in card


def test_write_to_patch_keeps_the_cards_custom_licence(tiny, report, tmp_path):
    from huggingface_hub import ModelCard

    _, patch, _ = tiny
    folder = patch.save_pretrained(tmp_path / "patch", card={"license": "cc-by-nc-4.0"})
    report.write_to_patch(folder)
    data = ModelCard.load(folder / "README.md").data.to_dict()
    assert data["license"] == "cc-by-nc-4.0" and data["guide_unlearn"]["audit"]["protocol"] == "toy-v1"


def test_erase_stores_a_downsampled_loss_history(tiny):
    from guide_unlearn.engine import downsample_history

    _, patch, _ = tiny
    hist = patch.metadata["loss_history"]
    assert hist["step"] == list(range(30)) and len(hist["loss"]) == 30
    long = [{"step": float(i), "loss": 1.0 / (i + 1)} for i in range(1000)]
    short = downsample_history(long)
    assert len(short["step"]) == 200 and short["step"][0] == 0 and short["step"][-1] == 999
    assert short["loss"][-1] == pytest.approx(0.001)


@pytest.mark.slow
def test_cli_audit_prints_metrics_and_writes_a_report(tiny, tmp_path, capsys):
    from guide_unlearn.cli import main

    _, patch, pics = tiny
    folder = patch.save_pretrained(tmp_path / "patch")
    for i, p in enumerate(pics[:4]):
        p.save(tmp_path / f"p{i}.png")
    out = tmp_path / "audit"
    code = main(["audit", str(folder), "--model", "tiny-stylegan2", "--photo", str(tmp_path / "p0.png"),
                 "--held-out", str(tmp_path / "p1.png"), "--others", str(tmp_path / "p2.png"),
                 str(tmp_path / "p3.png"), "--protocol", "toy-v1", "--samples", "16", "--projector-steps", "10",
                 "--leakage-starts", "2", "--leakage-steps", "3",
                 "--out", str(out), "--write-to-patch"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert list(line["metrics"]) == list(METRIC_KEYS) and line["protocol"] == "toy-v1"
    _check_html(out / "report.html")
    assert json.loads((folder / "forget_patch.json").read_text())["audit"]["protocol"] == "toy-v1"


def test_cli_refuses_paper_protocol_with_exit_2(tiny, tmp_path, capsys):
    from guide_unlearn.cli import EXIT_USER_ERROR, main

    _, patch, pics = tiny
    folder = patch.save_pretrained(tmp_path / "patch")
    pics[0].save(tmp_path / "p0.png")
    code = main(["audit", str(folder), "--model", "tiny-stylegan2", "--photo", str(tmp_path / "p0.png"),
                 "--protocol", "paper-v1", "--out", str(tmp_path / "audit")])
    assert code == EXIT_USER_ERROR
    assert "CurricularFace_Backbone.pth" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()


def test_cli_refuses_a_negative_max_others_before_loading(tmp_path, capsys):
    from guide_unlearn.cli import EXIT_USER_ERROR, main

    code = main(["audit", str(tmp_path / "patch"), "--model", "tiny-stylegan2", "--photo", str(tmp_path / "p.png"),
                 "--max-others", "-1", "--out", str(tmp_path / "audit")])
    assert code == EXIT_USER_ERROR
    assert "--max-others must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()


@pytest.mark.slow
def test_tiny_eg3d_id_over_eleven_views():
    """The camera model: ID over the 11-view orbit (toy identity network: a random network, not a face
    recogniser; the figure tests the plumbing)."""
    eraser = tiny_eraser("eg3d", inverter_steps=5)
    ws, pics = _pictures(eraser, 2, seed=4)
    patch = eraser.erase(ws[:1], config=EraseConfig(iterations=10), measure=False).patch
    rep = guide_unlearn.audit(eraser, patch, pics[:1], others=pics[1:], attacks=("leakage",),
                              **{**FAST, "samples": 8})
    print(json.dumps({"tiny_eg3d_id_toy_identity": rep.metrics["id"], "views": rep.details["id"]["views"]}))
    assert rep.details["id"]["views"] == 11
    assert -1.0 <= rep.metrics["id"] <= 1.0 and math.isfinite(rep.metrics["id_others"])
    assert rep.gallery["person_source"].shape[0] == 11
