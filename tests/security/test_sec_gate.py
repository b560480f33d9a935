"""The reading gate is the only reader: a scan of the shipped source tree fails when a file is read any other way.

Scanned: the packages the wheel ships (guide_unlearn/, adapters/, pipelines/, recipes/). Not scanned: tests/ and
benchmarks/ (they read the files they wrote themselves). A call below is allowed only in the gate's own modules,
or in the few places listed in ALLOWED with the reason (kernel files, a stream the gate opened); a new reader must
go through guide_unlearn.gate, or be added here with its reason for a reviewer to judge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("guide_unlearn", "adapters", "pipelines", "recipes")
GATE = "guide_unlearn/gate/"

# (file, call) -> why it is not a user-file read (or reads only a stream the gate opened)
ALLOWED = {
    ("guide_unlearn/io.py", "read_text"): "the process umask from /proc/self/status (a kernel file)",
    ("guide_unlearn/io.py", "os.open"): "creating temporary files for writing (O_WRONLY | O_CREAT | O_EXCL)",
    ("guide_unlearn/io.py", "os.fdopen"): "writing the temporary files it created",
    ("guide_unlearn/cli/batch.py", "open"): "the accelerate launcher's own command line (/proc/<ppid>/cmdline)",
    ("guide_unlearn/checkpoints/policy.py", "zipfile.ZipFile"): "lists a stream the gate opened (scan_torch_zip)",
    ("guide_unlearn/checkpoints/formats.py", "zipfile.ZipFile"): "lists a stream the gate opened (detect_format)",
    ("guide_unlearn/checkpoints/policy.py", "PyTorchFileReader"): "torch's own listing of a stream the gate opened, "
                                                                  "so the scan sees exactly what torch.load reads",
}

# Calls that read a file (or unpickle / parse one) and the part of the name that identifies them.
READERS = {
    "torch.load": "torch.load", "pickle.load": "pickle.load", "pickle.loads": "pickle.loads",
    "yaml.load": "yaml.load", "yaml.safe_load": "yaml.load", "yaml.unsafe_load": "yaml.load",
    "yaml.full_load": "yaml.load", "yaml.load_all": "yaml.load", "yaml.safe_load_all": "yaml.load",
    "json.load": "json.load", "np.load": "np.load", "numpy.load": "np.load", "Image.open": "Image.open",
    "load_file": "safetensors", "safe_open": "safetensors", "safetensors.torch.load": "safetensors",
    "ModelCard.load": "ModelCard.load", "read_text": "read_text", "read_bytes": "read_bytes", "open": "open",
    "os.open": "os.open", "os.fdopen": "os.fdopen", "io.open": "open", "zipfile.ZipFile": "zipfile.ZipFile",
    "PyTorchFileReader": "PyTorchFileReader", "try_to_load_from_cache": "hf cache",
    "hf_hub_download": "hf cache",
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _mode(call: ast.Call, position: int):
    mode = call.args[position] if len(call.args) > position else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else None


def _reader(call: ast.Call, gate_names: frozenset = frozenset()) -> str | None:
    """Which reading call this is (a value of READERS), or None. ``gate_names``: names this module imported from
    the gate (calls of them, or of ``gate.<name>``, go through the gate)."""
    func = call.func
    name = _name(func)
    if not name or name.split(".", 1)[0] in gate_names or (isinstance(func, ast.Name) and name in gate_names):
        return None
    last = name.rsplit(".", 1)[-1]
    if isinstance(func, ast.Name) and name == "open" or name in ("io.open", "os.fdopen"):
        mode = _mode(call, 1)
        return None if mode and any(c in mode for c in "wax") else READERS[name]
    if isinstance(func, ast.Attribute) and last == "open" and name not in ("os.open", "Image.open", "PIL.Image.open"):
        mode = _mode(call, 0)  # pathlib's p.open(mode)
        return None if mode and any(c in mode for c in "wax") else "open"
    if name == "os.open":
        flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
        return None if "O_WRONLY" in flags else "os.open"
    if name in READERS:
        return READERS[name]
    if last in ("read_text", "read_bytes", "load_file", "safe_open", "PyTorchFileReader"):
        return READERS[last]
    return None


def _gate_names(tree: ast.AST) -> frozenset:
    """Names bound to the gate or imported from it in a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.rsplit(".", 1)[-1] == "gate":
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and any(a.name == "gate" for a in node.names):
            names |= {a.asname or a.name for a in node.names if a.name == "gate"}
        elif isinstance(node, ast.Import):
            names |= {a.asname for a in node.names if a.name.endswith(".gate") and a.asname}
    return frozenset(names)


def _offenders() -> list[str]:
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(GATE):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            gate_names = _gate_names(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                kind = _reader(node, gate_names)
                if kind is None or (rel, kind) in ALLOWED:
                    continue
                found.append(f"{rel}:{node.lineno}: {_name(node.func)}(...)")
    return found


def test_no_file_is_read_outside_the_reading_gate():
    offenders = _offenders()
    assert not offenders, ("files read outside guide_unlearn.gate (use gate.read_json / read_text / read_bytes / "
                           "open_file / load_safetensors / open_image, checkpoints.load_torch_file):\n"
                           + "\n".join(offenders))


def test_the_only_torch_load_is_the_gates_weights_only_one():
    text = (REPO / GATE / "tensors.py").read_text()
    tree = ast.parse(text)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) == "torch.load"]
    assert len(calls) == 1
    assert any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in calls[0].keywords)


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load('x.pt')",
    "import yaml\nyaml.safe_load(open('card.md'))",
    "import json\njson.load(f)",
    "from pathlib import Path\nPath('x').read_text()",
    "with open(p) as f:\n    f.read()",
    "from safetensors.torch import load_file\nload_file('w.safetensors')",
    "from PIL import Image\nImage.open('a.jpg')",
])
def test_the_scan_catches_each_kind_of_reader(snippet):
    assert [n for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Call) and _reader(n)]


@pytest.mark.parametrize("snippet", ["open(p, 'w')", "open(p, mode='ab')", "p.open('a')", "json.loads(text)",
                                     "from guide_unlearn.gate import read_text\nread_text(p, 'text')",
                                     "from guide_unlearn import gate\ngate.read_bytes(p, 'photo')"])
def test_the_scan_leaves_writers_parsers_of_strings_and_gate_calls_alone(snippet):
    tree = ast.parse(snippet)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _reader(n, _gate_names(tree))]


# -- photo folders: the audit's folders (request, held-out, others, real, strangers) are listed by the gate --------
def _photo(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), (120, 90, 60)).save(path)
    return path


def _hostile_folder(tmp_path: Path, hostile: str) -> Path:
    """A folder holding one good photo and one ``hostile`` entry."""
    import os

    from guide_unlearn.gate import KINDS

    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "good.png")
    entry = folder / "bad.png"
    if hostile == "link_out":
        entry.symlink_to(_photo(tmp_path / "outside.png"))
    elif hostile == "dir_link_out":
        (tmp_path / "elsewhere").mkdir()
        _photo(tmp_path / "elsewhere" / "p.png")
        (folder / "person").symlink_to(tmp_path / "elsewhere")
    elif hostile == "dev_zero":
        entry.symlink_to("/dev/zero")
    elif hostile == "fifo":
        os.mkfifo(entry)
    elif hostile == "broken_link":
        entry.symlink_to(folder / "missing.png")
    elif hostile == "oversized":  # sparse: one byte over the photo cap, no disk used
        with open(entry, "wb") as f:
            f.truncate(KINDS["photo"].max_bytes + 1)
    return folder


HOSTILE_PHOTO_FOLDERS = {
    "link_out": "outside the folder", "dir_link_out": "outside the folder", "dev_zero": "outside the folder",
    "fifo": "not a regular file.*remove it from the folder", "broken_link": "broken link.*remove it",
    "oversized": "over the .*-byte limit.*remove it from the folder",
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE_PHOTO_FOLDERS))
def test_a_hostile_entry_in_a_photo_folder_is_refused_before_any_work(tmp_path, hostile):
    import time

    import guide_unlearn
    from guide_unlearn.errors import ImageLoadError

    folder = _hostile_folder(tmp_path, hostile)
    t = time.perf_counter()
    # no eraser and no patch: the folder is refused before either is touched (a FIFO is never opened)
    with pytest.raises(ImageLoadError, match=HOSTILE_PHOTO_FOLDERS[hostile]):
        guide_unlearn.audit(None, tmp_path / "no-patch", [_photo(tmp_path / "request.png")], held_out=folder,
                            protocol="toy-v1")
    assert time.perf_counter() - t < 5


def test_a_photo_folder_with_too_many_entries_is_refused_in_bounded_time(tmp_path):
    import os
    import time

    from guide_unlearn.errors import ImageLoadError
    from guide_unlearn.gate import KINDS
    from guide_unlearn.pipelines.audit import photo_items

    folder = tmp_path / "crowd"
    folder.mkdir()
    for i in range(KINDS["photo"].max_entries + 1):
        os.close(os.open(folder / f"{i}.png", os.O_CREAT | os.O_WRONLY))
    t = time.perf_counter()
    with pytest.raises(ImageLoadError, match=r"more than 10000 entries.*split it"):
        photo_items(folder, "others")
    assert time.perf_counter() - t < 5


def test_links_that_stay_inside_a_photo_folder_are_listed_once(tmp_path):
    from guide_unlearn.pipelines.audit import photo_items

    folder = tmp_path / "photos"
    (folder / "ann").mkdir(parents=True)
    _photo(folder / "ann" / "1.png")
    (folder / "alias.png").symlink_to(folder / "ann" / "1.png")  # a file link inside: the photo is listed once
    (folder / "ann-again").symlink_to(folder / "ann")  # a folder link inside: not followed (no duplicates)
    (folder / ".hidden").symlink_to("/dev/zero")  # hidden entries are never looked at
    labels = sorted(Path(label).relative_to(folder).as_posix() for label, _, _ in photo_items(folder, "others"))
    assert labels == ["ann/1.png"]


def test_the_cli_refuses_a_strangers_folder_with_a_pipe_before_loading_anything(tmp_path, capsys):
    from guide_unlearn.cli import main

    folder = _hostile_folder(tmp_path, "fifo")
    code = main(["audit", str(tmp_path / "no-patch"), "--model", "tiny-stylegan2", "--photo",
                 str(_photo(tmp_path / "request.png")), "--strangers", str(folder), "--protocol", "toy-v1",
                 "--out", str(tmp_path / "report")])
    assert code == 2
    assert "not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "report").exists() or not any((tmp_path / "report").iterdir())


def test_audit_in_python_refuses_a_strangers_folder_with_a_pipe_before_loading_the_patch(tmp_path):
    """strangers= is a photo folder of the membership family: listed through the gate with the audit's own photos,
    so the FIFO is refused before the (missing) patch is even looked for."""
    from guide_unlearn import IdentityEraser
    from guide_unlearn.errors import ImageLoadError
    from guide_unlearn.pipelines.audit import audit

    eraser = IdentityEraser.from_pretrained("tiny-stylegan2")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        audit(eraser, tmp_path / "no-patch", [_photo(tmp_path / "request.png")], protocol="toy-v1",
              strangers=_hostile_folder(tmp_path, "fifo"), progress=False)
