"""The security tests reuse the official-format writers of tests/checkpoints (ckpt_writers)."""

import sys
from pathlib import Path

_CKPT = str(Path(__file__).resolve().parents[1] / "checkpoints")
if _CKPT not in sys.path:
    sys.path.insert(0, _CKPT)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
