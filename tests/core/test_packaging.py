"""Install layout: one import name per module, every sub-package installed."""

import importlib
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"guide_unlearn": "guide_unlearn", "adapters": "guide_unlearn.adapters", "pipelines": "guide_unlearn.pipelines"}


def test_every_sub_package_is_listed_in_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(guide_unlearn[\w.]*)"', text.split("package-dir")[0]))
    found = set()
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name,) + rel))
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"


def test_backends_cannot_be_imported_under_a_second_name(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("adapters", None)
    with pytest.raises(ImportError, match="guide_unlearn.adapters"):
        importlib.import_module("adapters")
    sys.modules.pop("adapters", None)


def test_public_names_resolve():
    import guide_unlearn

    for name in ("IdentityEraser", "EraseConfig", "ForgetPatch", "ErasureResult", "GuideUnlearnError",
                 "UnsafeCheckpointError"):
        assert getattr(guide_unlearn, name)
    assert issubclass(guide_unlearn.UnsafeCheckpointError, guide_unlearn.GuideUnlearnError)
