"""ArcFace IR-SE50 / CurricularFace IR-101: official key layout, sizes, loading and input conventions."""

import pytest
import torch

from guide_unlearn.adapters.identity import load_identity_model
from guide_unlearn.adapters.identity.arcface import ArcFaceIdentity, CurricularFaceIdentity, load_backbone_state
from guide_unlearn.adapters.identity.irse import IRBackbone
from guide_unlearn.errors import BackendUnavailableError, CheckpointError


def _tiny(se=True, affine=True):
    return IRBackbone(50, se=se, affine_bn1d=affine, widths=(16, 16, 32, 32), stage_units=(1, 2, 1, 1), embedding=8)


def test_full_size_ir_se50_has_43_8_million_parameters_and_official_names():
    with torch.device("meta"):
        arcface = IRBackbone(50, se=True, affine_bn1d=True)
        curricular = IRBackbone(101, se=False, affine_bn1d=False)
    count = sum(p.numel() for p in arcface.parameters())
    print(f"\nIR-SE50 {count:,} parameters; IR-101 {sum(p.numel() for p in curricular.parameters()):,}")
    assert abs(count - 43.8e6) < 0.05e6
    keys = set(arcface.state_dict())
    assert {"input_layer.0.weight", "body.0.res_layer.5.fc1.weight", "body.3.shortcut_layer.0.weight",
            "body.23.res_layer.4.running_var", "output_layer.3.weight", "output_layer.4.weight"} <= keys
    assert len(arcface.body) == 24 and len(curricular.body) == 49
    assert "output_layer.4.weight" not in curricular.state_dict()  # BatchNorm1d without affine


def test_state_dict_written_by_a_tiny_model_loads_with_weights_only_and_embeds_the_same(tmp_path):
    torch.manual_seed(0)
    source = _tiny().eval()
    file = tmp_path / "tiny_ir_se.pth"
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, file)  # a DataParallel save
    target = _tiny()
    load_backbone_state(target, file, "tiny IR-SE")
    model = ArcFaceIdentity(target)
    x = torch.rand(2, 3, 300, 300) * 2 - 1
    expected = source(torch.nn.functional.adaptive_avg_pool2d(
        torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear")[:, :, 35:223, 32:220],
        (112, 112)))
    out = model.embed(x)
    assert out.shape == (2, 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_mismatched_checkpoint_is_a_checkpoint_error(tmp_path):
    file = tmp_path / "other.pth"
    torch.save(_tiny(se=False).state_dict(), file)  # no SE blocks
    with pytest.raises(CheckpointError, match="missing"):
        load_backbone_state(_tiny(se=True), file, "tiny IR-SE")


def test_curricularface_takes_112_crops_in_minus_one_one_and_gives_gradients():
    torch.manual_seed(1)
    model = CurricularFaceIdentity(_tiny(se=False, affine=False))
    x = (torch.rand(1, 3, 112, 112) * 2 - 1).requires_grad_(True)
    model.embed(x).sum().backward()
    assert model.align_style == "arcface" and x.grad.abs().sum() > 0


def test_missing_official_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(BackendUnavailableError, match="model_ir_se50.pth"):
        load_identity_model("arcface")
    with pytest.raises(BackendUnavailableError, match="CurricularFace_Backbone.pth"):
        load_identity_model("curricularface", str(tmp_path))
