"""Golden tests: this library against outputs of the official code (tests/golden/data, made by make_goldens.py).

Every comparison goes through :func:`golden_common.agree`, which asserts max |ours - official| / max |official|
<= 1e-4 and records the figure; the run ends with the table of achieved errors.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

import golden_common as gc


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not gc.ACHIEVED:
        return
    terminalreporter.section("golden agreement: max |ours - official| / max |official|")
    for test, what, err, tol in gc.ACHIEVED:
        bound = f"tol {tol:.0e}" if tol is not None else "a difference shown"
        terminalreporter.write_line(f"{err:9.2e}  ({bound})  {what}  [{test}]")


@pytest.fixture(scope="session")
def golden() -> Callable[[str], tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """golden(name) -> (metadata, tensors) of tests/golden/data/<name>.{json,safetensors}."""
    def load(name: str):
        if not (gc.DATA / f"{name}.json").is_file():
            pytest.fail(f"golden data {name} missing from {gc.DATA}; regenerate with tests/golden/make_goldens.py")
        return gc.read_meta(name), gc.read_tensors(name)

    return load
