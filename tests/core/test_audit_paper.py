"""Audit protocol paper-v1 (GUIDE's evaluation, docs/audit.md): the CurricularFace IR-101 and FID Inception-v3 networks loaded from
checkpoints written here in their official key layouts (random weights: these tests check formats, conventions
and plumbing, not face recognition), against pytorch-fid as an independent reference, and an end-to-end audit."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import guide_unlearn
from guide_unlearn.adapters.identity.arcface import (CURRICULARFACE_COSINE_THRESHOLD, ir_depth_name, ir_stage_units,
                                                     load_curricularface)
from guide_unlearn.adapters.identity.irse import IRBackbone
from guide_unlearn.adapters.perceptual.fid_inception import FIDInception, load_fid_inception
from guide_unlearn.config import EraseConfig
from guide_unlearn.errors import BackendUnavailableError, CheckpointError
from guide_unlearn.pipelines.audit import METRIC_KEYS, get_protocol
from guide_unlearn.testing import tiny_eraser

CF_FILE = "CurricularFace_Backbone.pth"
FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FACES = "faces/facenet_pytorch_test"


def _drop_counters(state):
    """The official files were saved before BatchNorm had a num_batches_tracked counter."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Checkpoints in the official layouts, written once: a full-size CurricularFace IR-101 (random weights),
    a short IR backbone (1 unit per stage) and the FID Inception-v3; the Inception file also sits where
    pytorch-fid looks for it ($TORCH_HOME/hub/checkpoints) for the reference computations."""
    root = tmp_path_factory.mktemp("paper_weights")
    torch.manual_seed(0)
    ir = IRBackbone(101, se=False, affine_bn1d=False).eval()
    (root / "full" / "curricularface").mkdir(parents=True)
    torch.save(_drop_counters(ir.state_dict()), root / "full" / "curricularface" / CF_FILE)
    short = IRBackbone(101, se=False, affine_bn1d=False, stage_units=(1, 1, 1, 1)).eval()
    (root / "short" / "curricularface").mkdir(parents=True)
    torch.save(short.state_dict(), root / "short" / "curricularface" / CF_FILE)
    inception = FIDInception()
    for p in inception.parameters():  # random but scaled so that activations stay O(1) through 94 convolutions
        p.data.normal_(0, 0.05)
    fid_state = _drop_counters(inception.state_dict())
    for sub in ("full", "short"):
        (root / sub / "inception").mkdir()
        torch.save(fid_state, root / sub / "inception" / FID_FILE)
    (root / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    os.symlink(root / "full" / "inception" / FID_FILE, root / "torch" / "hub" / "checkpoints" / FID_FILE)
    return {"root": root, "ir": ir, "short": short, "inception": inception}


@pytest.fixture
def full_cache(weights, monkeypatch):
    """The weight search path (cache folder) holds both paper-v1 files, IR-101 for the identity."""
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(weights["root"] / "full"))
    monkeypatch.setenv("TORCH_HOME", str(weights["root"] / "torch"))
    return weights["root"] / "full"


@pytest.fixture(scope="module")
def pytorch_fid_net(weights):
    """pytorch-fid's own InceptionV3 (pool3 block), built from the same file found in $TORCH_HOME."""
    inception = pytest.importorskip("pytorch_fid.inception")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(weights["root"] / "torch")
    try:
        net = inception.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    finally:
        if old is None:
            del os.environ["TORCH_HOME"]
        else:
            os.environ["TORCH_HOME"] = old
    return net


# ---------------------------------------------------------------------------------------------------------------
# CurricularFace IR-101


def test_full_size_ir101_checkpoint_loads_and_embeds_unit_vectors_of_512(weights, full_cache):
    model = load_curricularface()
    assert model.depth == "IR-101" and model.stage_units == (3, 13, 30, 3)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    out = model.embed(x)
    assert out.shape == (2, 512)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        torch.testing.assert_close(out, torch.nn.functional.normalize(weights["ir"](x), dim=1), atol=1e-5, rtol=1e-4)


def test_ir_depth_is_read_from_the_checkpoint_keys():
    for depth, units in ((50, (3, 4, 14, 3)), (101, (3, 13, 30, 3)), (152, (3, 8, 36, 3))):
        with torch.device("meta"):
            state = IRBackbone(depth, se=False, affine_bn1d=False).state_dict()
        assert ir_stage_units(state) == units
        assert ir_depth_name(units) == ("IR-101" if depth == 101 else f"IR-{depth}")
    with pytest.raises(CheckpointError, match="not an IR backbone"):
        ir_stage_units({"fc.weight": torch.zeros(2, 2)})


def test_a_backbone_of_another_depth_is_refused_as_curricularface_ir101_unless_asked(weights):
    folder = weights["root"] / "short" / "curricularface"
    with pytest.raises(CheckpointError, match=r"IR \(units 1, 1, 1, 1 per stage\).*not IR-101"):
        load_curricularface(folder)
    model = load_curricularface(folder, depth=None)
    assert model.depth == "IR (units 1, 1, 1, 1 per stage)"
    assert model.embed(torch.zeros(1, 3, 112, 112)).shape == (1, 512)


def test_wrong_keys_and_shapes_are_a_checkpoint_error_naming_them(weights, tmp_path):
    state = weights["short"].state_dict()
    state["output_layer.3.weight"] = torch.zeros(256, 512 * 7 * 7)  # another embedding size
    state["body.0.res_layer.5.fc1.weight"] = torch.zeros(4, 64, 1, 1)  # an SE unit: IR-SE, not IR
    del state["input_layer.1.running_mean"]
    torch.save(state, tmp_path / CF_FILE)
    with pytest.raises(CheckpointError) as err:
        load_curricularface(tmp_path, depth=None)
    msg = str(err.value)
    for needed in ("output_layer.3.weight: file (256, 25088), expected (512, 25088)", "body.0.res_layer.5.fc1.weight",
                   "input_layer.1.running_mean", "official layout"):
        assert needed in msg


# ---------------------------------------------------------------------------------------------------------------
# FID Inception-v3


def test_fid_inception_gives_the_features_of_pytorch_fid_on_the_same_file(full_cache, pytorch_fid_net):
    ours = load_fid_inception()
    x = torch.rand(2, 3, 80, 64, generator=torch.Generator().manual_seed(1))  # [0, 1], resized to 299 by both
    with torch.no_grad():
        got = ours(x)
        ref = pytorch_fid_net(x)[0].squeeze(-1).squeeze(-1)
    assert got.shape == (2, 2048) and got.std() > 0
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_generator_outputs_are_featurised_as_pytorch_fid_reads_the_spec_saved_pngs(full_cache, pytorch_fid_net,
                                                                                  tmp_path):
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2.2 - 1.1  # a bit out of range
    files = []
    for i, img in enumerate(images):  # GUIDE's evaluate_fid.py: (x * 127.5 + 128).clamp(0, 255) saved as uint8 PNG
        arr = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    ref = fid_score.get_activations(files, pytorch_fid_net, batch_size=2, dims=2048, device="cpu", num_workers=0)
    got = load_fid_inception().from_generator(images)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4, rtol=1e-4)


def test_an_imagenet_inception_file_is_refused_naming_the_differences(weights, tmp_path):
    state = dict(weights["inception"].state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # torchvision's 1000 classes
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    torch.save(state, tmp_path / FID_FILE)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(e.g. \['AuxLogits.fc.weight'\]\).*fc.bias: file "
                                              r"\(1000,\), expected \(1008,\)"):
        load_fid_inception(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The protocol and the audit


def test_paper_protocol_is_given_when_both_files_are_present(full_cache):
    proto = get_protocol("paper-v1")
    assert proto.name == "paper-v1" and proto.feature_space == "FID-inception" and proto.identity_depth == 101
    assert proto.samples == 5000 and proto.views == 11


def test_paper_protocol_refuses_naming_only_the_missing_file(weights, monkeypatch, tmp_path):
    (tmp_path / "inception").mkdir()
    (tmp_path / "inception" / FID_FILE).symlink_to(weights["root"] / "full" / "inception" / FID_FILE)
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(tmp_path))
    with pytest.raises(BackendUnavailableError) as err:
        get_protocol("paper-v1")
    msg = str(err.value)
    assert CF_FILE in msg and str(tmp_path / "curricularface" / CF_FILE) in msg and FID_FILE not in msg



def test_fid_network_is_found_where_pytorch_fid_downloads_it(weights, monkeypatch, tmp_path):
    """Only $TORCH_HOME/hub/checkpoints holds the Inception file: the loader and the protocol check both find it."""
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("GUIDE_SHARED", str(tmp_path / "no_shared"))
    monkeypatch.setenv("TORCH_HOME", str(weights["root"] / "torch"))
    net = load_fid_inception()
    assert net.file == weights["root"] / "torch" / "hub" / "checkpoints" / FID_FILE
    torch.testing.assert_close(net.state_dict()["fc.weight"], weights["inception"].state_dict()["fc.weight"])
    with pytest.raises(BackendUnavailableError) as err:  # CurricularFace is still missing, the FID file is not
        get_protocol("paper-v1")
    assert CF_FILE in str(err.value) and FID_FILE not in str(err.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    with pytest.raises(BackendUnavailableError, match="hub/checkpoints"):
        load_fid_inception()

@pytest.fixture(scope="module")
def tiny():
    eraser = tiny_eraser("stylegan2", inverter_steps=10)
    g = torch.Generator().manual_seed(3)
    ws = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=g), None)
    patch = eraser.erase(ws, config=EraseConfig(iterations=10), measure=False).patch
    return eraser, patch


@pytest.mark.slow
def test_paper_audit_on_a_tiny_model_reports_fid_and_leaves_fd_nan_with_reasons(tiny, full_cache, shared_dir,
                                                                                 tmp_path):
    eraser, patch = tiny
    faces = sorted((shared_dir / FACES).glob("*.png"))
    report = guide_unlearn.audit(eraser, patch, faces[:1], held_out=faces[1:2], others=faces[2:4], real=faces[3:5],
                                 protocol="paper-v1", samples=6, projector_steps=3, leakage_starts=2, leakage_steps=2)
    assert tuple(report.metrics) == METRIC_KEYS
    m, not_run = report.metrics, report.details["not_run"]
    assert math.isfinite(m["fid_pre"]) and m["fid_pre"] >= 0 and math.isfinite(m["fid_real_delta"])
    assert report.details["fd"]["source_vs_real"] - report.details["fd"]["patched_vs_real"] == pytest.approx(
        -m["fid_real_delta"])
    for k in ("fd_pre", "fd_real_delta"):
        assert math.isnan(m[k]) and "fid_pre" in not_run[k]
    for k, v in m.items():  # the tiny random generator renders no face: identity figures are NaN, with a reason
        assert math.isfinite(v) or k in not_run, k
    assert report.protocol["name"] == "paper-v1" and report.protocol["identity"] == "CurricularFace IR-101"
    assert report.protocol["feature_space"] == "FID-inception" and report.details["fd"]["samples"] == 6
    nets = report.networks
    assert nets["identity"]["file"] == CF_FILE and nets["identity"]["depth"] == "IR-101"
    assert nets["features"]["file"] == FID_FILE
    assert nets["identity"]["digest"].startswith("sha256:") and nets["features"]["digest"].startswith("sha256:")
    assert report.thresholds["same_person"] == CURRICULARFACE_COSINE_THRESHOLD
    assert "documented choice" in report.thresholds["same_person_rule"]
    assert report.details["counts"]["request"] == 1 and report.details["counts"]["real"] == 2
    saved = json.loads((report.save(tmp_path / "report") / "report.json").read_text())
    assert saved["metrics"]["fid_pre"] == pytest.approx(m["fid_pre"]) and saved["metrics"]["fd_pre"] is None


def test_paper_audit_refuses_a_short_backbone_in_place_of_ir101(tiny, weights, monkeypatch, shared_dir):
    eraser, patch = tiny
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(weights["root"] / "short"))
    faces = sorted((shared_dir / FACES).glob("*.png"))
    with pytest.raises(CheckpointError, match="not IR-101"):
        guide_unlearn.audit(eraser, patch, faces[:1], protocol="paper-v1", samples=2)
