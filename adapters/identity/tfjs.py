"""Reader of TensorFlow.js weight files: a ``*weights_manifest.json`` and its binary shards.

Each manifest group lists tensors (name, shape, dtype, optional ``quantization`` {dtype uint8|uint16|float16,
scale, min}) stored back to back in the concatenated shards (``paths``). A quantised value q decodes to
``min + scale * q`` (float16 ones are IEEE halves).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from guide_unlearn.errors import CheckpointError

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
           "float16": np.float16, "bool": np.bool_}


def read_tfjs_weights(manifest: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a TF.js weights manifest -> {name: float32/int32 array of the stated shape}. A malformed
    manifest (missing keys, wrong types, unknown dtypes) is a CheckpointError naming it."""
    try:
        return _read_tfjs_weights(manifest)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise CheckpointError(f"{manifest}: malformed TF.js weights manifest ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


def _read_tfjs_weights(manifest: str | Path) -> dict[str, np.ndarray]:
    from guide_unlearn import gate

    manifest = Path(manifest)
    groups = gate.read_json(manifest, "weights-manifest")  # the reading gate: bounded size and nesting
    if not isinstance(groups, list):
        raise CheckpointError(f"{manifest}: a TF.js weights manifest is a JSON list of groups")
    out: dict[str, np.ndarray] = {}
    for group in groups:
        # shards: regular files inside the manifest's folder, read through the gate
        blob = b"".join(gate.read_bytes(manifest.parent / str(p), "face-weights", root=manifest.parent)
                        for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            stored = _DTYPES[quant["dtype"]] if quant else _DTYPES[spec["dtype"]]
            nbytes = count * np.dtype(stored).itemsize
            if offset + nbytes > len(blob):
                raise CheckpointError(f"{manifest}: tensor {spec['name']} runs past the end of the weights "
                                      f"({offset + nbytes} > {len(blob)} bytes); the file is truncated")
            raw = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
            offset += nbytes
            if quant and quant["dtype"] in ("uint8", "uint16"):
                values = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
                values = values.astype(np.float32)
            else:
                values = raw.astype(np.float32 if spec["dtype"] == "float32" else raw.dtype)
            out[spec["name"]] = values.reshape(shape)
        if offset != len(blob):
            raise CheckpointError(f"{manifest}: {len(blob) - offset} bytes left over after the listed tensors; "
                                  "manifest and shards do not match")
    return out
