"""The TF.js weights reader on a manifest written here."""

import json

import numpy as np
import pytest

from guide_unlearn.adapters.identity.tfjs import read_tfjs_weights
from guide_unlearn.errors import CheckpointError


def _write(tmp_path, truncate=0):
    q = np.array([0, 1, 255, 128], np.uint8)
    f = np.array([[1.5, -2.0, 3.25]], np.float32)
    manifest = [{"paths": ["w.bin"], "weights": [
        {"name": "a/quant", "shape": [2, 2], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "b/raw", "shape": [1, 3], "dtype": "float32"}]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    blob = q.tobytes() + f.tobytes()
    (tmp_path / "w.bin").write_bytes(blob[: len(blob) - truncate])
    return tmp_path / "m.json"


def test_uint8_values_decode_as_min_plus_scale_times_q_and_floats_pass_through(tmp_path):
    weights = read_tfjs_weights(_write(tmp_path))
    np.testing.assert_allclose(weights["a/quant"], [[-1.0, -0.5], [126.5, 63.0]])
    np.testing.assert_allclose(weights["b/raw"], [[1.5, -2.0, 3.25]])


def test_truncated_shard_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="truncated"):
        read_tfjs_weights(_write(tmp_path, truncate=4))


def test_shared_faceapi_manifest_has_117_tensors_and_5_6m_values(shared_dir):
    weights = read_tfjs_weights(shared_dir / "weights" / "faceapi_tfjs" / "face_recognition_model-weights_manifest.json")
    total = sum(v.size for v in weights.values())
    print(f"\nface-api weights: {len(weights)} tensors, {total:,} values")
    assert len(weights) == 117 and 5_500_000 < total < 5_700_000
