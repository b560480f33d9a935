"""insightface recognisers through insightface.model_zoo.get_model(path), on a tiny ONNX model made here."""

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("insightface")
pytest.importorskip("onnx")

from guide_unlearn.adapters.identity import load_identity_model  # noqa: E402


class TinyRecogniser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 8, 8)
        self.fc = torch.nn.Linear(4 * 14 * 14, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter (no onnxscript here)
def test_tiny_onnx_recogniser_loads_through_model_zoo_and_embeds_like_torch(tmp_path):
    torch.manual_seed(0)
    net = TinyRecogniser().eval()
    path = tmp_path / "tiny_rec.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 112, 112), str(path), input_names=["input.1"], output_names=["out"],
                      dynamic_axes={"input.1": {0: "n"}, "out": {0: "n"}}, dynamo=False)
    model = load_identity_model("insightface", str(path))
    assert model.align_style == "arcface" and not model.differentiable
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(2)]
    out = model.embed(crops)
    x = torch.stack([torch.from_numpy(np.asarray(c, dtype=np.float32)).permute(2, 0, 1) for c in crops])
    expected = torch.nn.functional.normalize(net((x - 127.5) / 127.5), dim=1)  # insightface's own normalisation
    assert out.shape == (2, 16)
    torch.testing.assert_close(out, expected.detach(), atol=1e-4, rtol=1e-4)
