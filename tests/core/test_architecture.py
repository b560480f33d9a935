"""The house rules of the source tree: every public name README, docs and ``__all__`` promise imports, no import
cycles (lazy imports included), the core imports no backend, the pipelines never import the test helpers, backends
are looked up in registries, the CLI fails loudly."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The library's source folders and the package each is installed as (pyproject.toml, package-dir).
ROOTS = {"guide_unlearn": "guide_unlearn", "adapters": "guide_unlearn.adapters",
         "pipelines": "guide_unlearn.pipelines", "recipes": "guide_unlearn.recipes"}
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# -- the module graph ---------------------------------------------------------------------------------------------
def library_modules(repo: Path = REPO, roots: dict = ROOTS) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package)} for every .py file of the library."""
    modules = {}
    for folder, package in roots.items():
        for path in sorted((repo / folder).rglob("*.py")):
            parts = list(path.relative_to(repo / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([package, *parts[:-1]] if is_package else [package, *parts])
            if folder == "guide_unlearn" and parts[0] in ("adapters", "pipelines", "recipes"):
                continue
            modules[name] = (path, is_package)
    return modules


def imports_of(name: str, path: Path, is_package: bool, modules: dict) -> set[str]:
    """The library modules ``name`` imports anywhere in its file (module level and inside functions), outside
    ``if TYPE_CHECKING:`` blocks. ``from X import y`` counts as importing X.y when that is a module, else X."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    package = name if is_package else name.rpartition(".")[0]

    def known(dotted: str):
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else known(source) for a in node.names}
    return found - {None, name}


def import_graph(repo: Path = REPO, roots: dict = ROOTS) -> dict[str, set[str]]:
    """{module: the library modules it imports}."""
    modules = library_modules(repo, roots)
    return {name: imports_of(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` through each group of modules that import one another (a strongly connected
    component of the graph with more than one module), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []
    for root in sorted(graph):  # Tarjan's algorithm, iterative
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(set(group))
    return sorted(_cycle_through(graph, group) for group in groups)


def _cycle_through(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest import path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle in {group}")


def test_no_library_modules_import_one_another_in_a_circle_lazy_imports_included():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_a_cycle_closed_by_an_import_inside_a_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from . import c\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\nif TYPE_CHECKING:\n    from pkg import d\n")
    (tmp_path / "pkg" / "d.py").write_text("from pkg.c import x\n")
    cycles = import_cycles(import_graph(tmp_path, {"pkg": "pkg"}))
    assert cycles == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


# -- public names -------------------------------------------------------------------------------------------------
# The public API by module, for modules without an ``__all__`` too (private names are nobody's API: none here).
PUBLIC_NAMES = {
    "guide_unlearn": [
        "BackendUnavailableError", "CheckpointError", "ConfigError", "EraseConfig", "ErasureResult", "ForgetPatch",
        "GuideUnlearnError", "IdentityEraser", "ImageLoadError", "InputError", "LatentError", "NoFaceError",
        "PatchError", "PatchMismatchError", "PatchStateError", "SaveError", "TrainingDivergedError",
        "UnsafeCheckpointError", "__version__", "load_generator", "load_identity_model", "load_inverter", "EraseRun",
        "ManyErasureResult", "RunOptions", "Verdict", "list_methods"],
    "guide_unlearn.faces": [
        "CameraEstimate", "DETECTORS", "Face", "LANDMARK_NAMES", "STYLES", "align_face", "alignment_matrix",
        "detect_faces", "detect_faces_batch", "estimate_camera", "get_detector", "load_image", "pick_face",
        "prepare_photo"],
    "guide_unlearn.testing": ["TINY_STYLEGAN2", "build_generator", "build_inverter", "tiny_eraser", "tiny_generator"],
    "guide_unlearn.adapters.e4e": ["E4EConfig", "E4EInverter", "Encoder4Editing"],
    "guide_unlearn.adapters.eg3d": [
        "CameraConfig", "EG3DGenerator", "EG3DRender", "EG3D_FFHQ512", "EG3D_TINY", "PAPER_COMPAT_OVERRIDES",
        "build_eg3d_ffhq", "build_eg3d_tiny", "make_cameras", "orbit_cameras", "sample_training_cameras"],
    "guide_unlearn.adapters.faces.backends": [
        "DlibDetector", "InsightFaceDetector", "dlib_points_to_standard", "find_dlib_file", "import_dlib"],
    "guide_unlearn.adapters.goae": [
        "CrossAttention", "GOAEConfig", "GOAEInverter", "GOAEncoder", "build_goae_ffhq", "load_goae_ffhq"],
    "guide_unlearn.adapters.identity": [
        "DLIB_COSINE_THRESHOLD", "DLIB_THRESHOLD", "DlibIdentity", "IDENTITY_MODELS", "dlib_descriptors",
        "dlib_distance", "load_identity_model", "same_network"],
    "guide_unlearn.adapters.perceptual": [
        "LPIPSDistance", "MultiScaleGradL1", "default_perceptual", "lpips_weights_available"],
    "guide_unlearn.adapters.projector": ["CODE_BOOK_FILE", "CodeBook", "CodeInverter", "OptimizationInverter"],
    "guide_unlearn.adapters.stylegan2": ["StyleGAN2Generator"],
    "guide_unlearn.adapters.toy": ["ToyIdentityNet"],
    "guide_unlearn.pipelines.registry": ["REGISTRY", "CheckpointEntry", "ModelIndex", "build_architecture",
                                         "model_index_for"],
    "guide_unlearn.pipelines.eraser": ["IdentityEraser", "ManyErasureResult", "Inputs", "Faces", "Requests"],
    "guide_unlearn.engine": ["check_latents", "run_erase", "resolve_distances", "EraseRun"],
    "guide_unlearn.outputs": ["BaseOutput", "EraseRun", "ErasureResult", "ManyErasureResult", "Verdict",
                              "judge_erasure"],
    "guide_unlearn.methods": ["EraseMethod", "MethodConfig", "get_method", "list_methods", "register_method"],
    "guide_unlearn.config": ["EraseConfig", "PRESENTATION_FIELDS", "RunOptions"],
    "guide_unlearn.card": ["CARD_FILE", "card_options", "erase_config_digest", "model_card", "read_card_block",
                           "refreshed_card"],
    "guide_unlearn.hub": ["HubPatchNotFoundError", "push_patch", "resolve_patch_folder"],
    "guide_unlearn.hub_paths": ["is_hub_cache_link", "looks_like_repo_id"],
    "guide_unlearn.lineage": ["INDEX_FILE", "RECORD_FILE", "read_model_index", "restore_record", "save_generator"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_every_public_name_imports_from_its_module(module):
    assert not [n for n in PUBLIC_NAMES[module] if n.startswith("_") and not n.startswith("__")]
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC_NAMES[module] if getattr(mod, name, None) is None]
    assert not missing, f"{module} lost {missing}"


EXPORTING = sorted(name for name, (path, _) in library_modules().items() if "__all__" in path.read_text())


@pytest.mark.parametrize("module", EXPORTING)
def test_every_name_a_module_lists_in_its___all___imports(module):
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if getattr(mod, name, None) is None]
    assert not missing, f"{module}.__all__ names {missing}, which do not exist"


def _code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a markdown text that use the package (python, or untagged)."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    return [code for tag, code in blocks if tag in ("", "python", "py", "pycon") and "guide_unlearn" in code]


def _statements(code: str) -> list[ast.AST]:
    """The block parsed as Python, or, when it is not (a shell line, an elided argument), its import lines."""
    try:
        return [ast.parse(code)]
    except SyntaxError:
        lines = [line.strip() for line in code.splitlines() if line.strip().startswith(("from ", "import "))]
        return [ast.parse(line) for line in lines]


def _resolve(dotted: str):
    """Import the longest module prefix of ``dotted`` and get the rest as attributes (or submodules)."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 2):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def _names_used(trees: list[ast.AST]) -> set[str]:
    """Every ``guide_unlearn`` name the code imports or reaches as ``alias.attr.attr`` from an imported module."""
    used, aliases = set(), {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("guide_unlearn") and not node.level:
                used |= {f"{node.module}.{a.name}" for a in node.names}
                aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("guide_unlearn"):
                        used.add(a.name)
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        for node in ast.walk(tree):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.insert(0, node.attr)
                node = node.value
            if chain and isinstance(node, ast.Name) and node.id in aliases:
                target = aliases[node.id]
                if isinstance(_resolve(target), type(importlib)):  # attributes of modules only (not of objects)
                    used.add(".".join([target, chain[0]]))
    return used


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_guide_unlearn_name_the_readme_and_docs_code_uses_imports(doc):
    missing = []
    for code in _code_blocks(doc.read_text()):
        for dotted in sorted(_names_used(_statements(code))):
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                missing.append(dotted)
    assert not missing, f"{doc.name} uses {missing}, which do not import"


def test_every_dotted_guide_unlearn_name_the_docs_quote_exists():
    stale = []
    for doc in DOCS:
        for dotted in re.findall(r"`(guide_unlearn(?:\.\w+)+)(?:\(\))?`", doc.read_text()):
            first = dotted.split(".")[1]
            if not (hasattr(importlib.import_module("guide_unlearn"), first)
                    or importlib.util.find_spec(f"guide_unlearn.{first}") is not None):
                continue  # a file or format name (guide_unlearn.json), not a Python name
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                stale.append(f"{doc.name}: {dotted}")
    assert not stale, f"the docs quote names that do not exist: {stale}"


# -- layering -----------------------------------------------------------------------------------------------------
def test_the_core_imports_no_backend():
    graph = import_graph()
    offenders = [f"{module}: {m}" for module, deps in graph.items() for m in sorted(deps)
                 if module.split(".")[1:2] not in (["testing"], ["cli"], ["adapters"], ["pipelines"], ["recipes"])
                 and m.startswith(("guide_unlearn.adapters", "guide_unlearn.pipelines"))]
    assert not offenders


def test_nothing_in_pipelines_imports_the_test_helpers():
    offenders = [f"{module}: {m}" for module, deps in import_graph().items() for m in deps
                 if module.startswith("guide_unlearn.pipelines") and m == "guide_unlearn.testing"]
    assert not offenders


@pytest.mark.parametrize("module", ["loading.py", "assembly.py", "registry.py"])
def test_the_loaders_name_no_backend_class(module):
    tree = ast.parse((REPO / "pipelines" / module).read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & {"Generator", "TriPlaneGenerator", "StyleGAN2Generator", "EG3DGenerator"}
    assert not [s for s in strings if s.startswith("EG3D") and s.isidentifier()]


def test_the_eraser_is_a_thin_facade():
    assert len((REPO / "pipelines" / "eraser.py").read_text().splitlines()) < 250


def test_a_family_registered_by_a_new_package_is_loaded_from_its_model_folder(tmp_path, monkeypatch):
    from guide_unlearn import families
    from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator
    from guide_unlearn.pipelines.loading import load_generator

    class NewGenerator(StyleGAN2Generator):  # stands for a new backend's model class
        family = "new-family"

    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    family = families.register_family(families.GeneratorFamily(
        "new-family", NewGenerator, folder_classes=("NewGenerator",),
        tiny_config=dict(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8, mapping_layers=1)))
    model = family.tiny(seed=3)
    model.save_pretrained(tmp_path / "m")
    back = load_generator(tmp_path / "m")
    assert type(back) is NewGenerator
    assert back.num_ws == model.num_ws == 4


def test_a_second_family_cannot_claim_a_registered_class_name(monkeypatch):
    from guide_unlearn import families
    from guide_unlearn.errors import ConfigError

    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    with pytest.raises(ConfigError, match="stylegan2"):
        families.register_family(families.GeneratorFamily("copy", object, folder_classes=("StyleGAN2Generator",)))


def test_the_shipped_face_detectors_are_registered_and_an_unknown_one_is_a_config_error():
    from guide_unlearn.errors import ConfigError
    from guide_unlearn.faces import DETECTORS, get_detector
    from guide_unlearn.faces.detect import registered_detectors

    assert set(DETECTORS) <= set(registered_detectors())
    with pytest.raises(ConfigError, match="mtcnn"):
        get_detector("no-such-detector")


def test_a_broken_command_module_fails_loudly_instead_of_vanishing(monkeypatch):
    from guide_unlearn import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("guide_unlearn.cli._no_such_command",))
    with pytest.raises(ImportError, match="_no_such_command"):
        cli.build_parser()


def test_help_lists_every_command(capsys):
    from guide_unlearn.cli import build_parser

    build_parser().print_help()
    out = capsys.readouterr().out
    for command in ("erase", "apply", "merge", "info", "convert"):
        assert command in out


def test_version_is_written_in_one_place():
    import guide_unlearn

    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "guide_unlearn.__version__"' in text
    assert not [line for line in text.splitlines() if line.startswith("version =") and "attr" not in line]
    assert guide_unlearn.__version__.count(".") == 2


def test_building_a_tiny_eraser_leaves_the_global_rng_alone():
    import torch

    from guide_unlearn.testing import tiny_eraser

    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    tiny_eraser()
    assert torch.equal(torch.rand(3), expected)
