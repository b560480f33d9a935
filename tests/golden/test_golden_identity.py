"""ArcFace IR-SE50 (GUIDE's ID loss) and CurricularFace IR-101 (GUIDE's ID metric) against GUIDE's arcface.py,
and FID's Inception-v3 against pytorch-fid: official-layout state dicts loaded with this library's loaders."""

from __future__ import annotations

import pytest
import torch

import golden_common as gc
from guide_unlearn.adapters.identity.arcface import load_arcface, load_curricularface
from guide_unlearn.adapters.perceptual.fid_inception import load_fid_inception

pytestmark = pytest.mark.slow  # full-size networks (43.8 M / 65 M / 24 M parameters) on the CPU


@pytest.fixture(scope="module")
def arcface(golden, tmp_path_factory):
    meta, t = golden("arcface_irse50")
    path = gc.write_recipe_state(meta, tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth")
    return load_arcface(path), meta, t


def test_arcface_embeddings_of_112_crops_match_the_official_backbone(arcface):
    model, _, t = arcface
    with torch.no_grad():
        gc.agree("IR-SE50: embeddings of 112² crops", model.backbone(t["crops"]), t["emb"])


def test_arcface_embed_of_512_renders_matches_guides_id_loss_preprocessing(arcface):
    """GUIDE's IDLoss resizes to 256 with a plain bilinear interpolate (no antialiasing), crops and pools to 112."""
    model, meta, t = arcface
    renders = gc.seeded([2, 3, 512, 512], meta["renders_seed"], "uniform") * 2 - 1
    assert gc.checksum(renders) == pytest.approx(meta["renders_checksum"], rel=1e-12)
    with torch.no_grad():
        gc.agree("IR-SE50: ArcFaceIdentity.embed of 512² renders (IDLoss.extract_feats)", model.embed(renders),
                 t["emb_renders"])


def test_curricularface_embeddings_match_the_official_ir101(golden, tmp_path):
    meta, t = golden("curricularface_ir101")
    model = load_curricularface(gc.write_recipe_state(meta, tmp_path / "CurricularFace_Backbone.pth"))
    assert model.depth == "IR-101"
    with torch.no_grad():
        gc.agree("IR-101: embeddings of 112² crops in [-1, 1]", model.embed(t["crops"]), t["emb"])


def test_fid_inception_pool_features_match_pytorch_fid(golden, tmp_path):
    meta, t = golden("fid_inception")
    net = load_fid_inception(gc.write_recipe_state(meta, tmp_path / "pt_inception-2015-12-05-6726825d.pth"))
    full = gc.seeded([1, 3, 299, 299], meta["full_seed"], "uniform")
    assert gc.checksum(full) == pytest.approx(meta["full_checksum"], rel=1e-12)
    with torch.no_grad():
        gc.agree("Inception FID: pool3 of 64² images resized to 299", net(t["small"]), t["feat_small"])
        gc.agree("Inception FID: pool3 of 299² images", net(full), t["feat_full"])
