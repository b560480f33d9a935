"""Building an IdentityEraser from a name or a path, saving it as a folder that builds the same eraser again, and
the photo glue (alignment, cameras)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image

from guide_unlearn.errors import BackendUnavailableError, CheckpointError, FaceChoiceError, InputError, NoFaceError
from guide_unlearn.lineage import INDEX_FILE, source_dir

logger = logging.getLogger(__name__)


def tiny_eraser(cls, family: str = "stylegan2", seed: int = 0, inverter_steps: int = 60):
    """``cls`` (an IdentityEraser) around the ``family``'s tiny random generator (its registry entry
    ``tiny-<family>``), with the optimisation inverter (``inverter_steps`` steps), a tiny random identity network
    and the offline perceptual stand-in. For tests, examples and benchmarks; it erases nothing real."""
    from guide_unlearn.adapters.perceptual import MultiScaleGradL1
    from guide_unlearn.adapters.projector import OptimizationInverter
    from guide_unlearn.adapters.toy import ToyIdentityNet
    from guide_unlearn.families import get_family

    spec = get_family(family)
    gen = spec.tiny(seed=seed)
    with torch.random.fork_rng(devices=[]):  # the toy network's default init must not move the caller's RNG
        identity = ToyIdentityNet(seed=seed)
    perceptual = MultiScaleGradL1()
    inverter = OptimizationInverter(gen, perceptual, steps=inverter_steps, lr=0.05,
                                    input_alignment=spec.input_alignment)
    return cls(gen, inverter=inverter, identity_model=identity, perceptual=perceptual, name=f"tiny-{family}")


def assemble(cls, name_or_path: str, device: torch.device, allow_download: bool = False, **components: Any):
    """Resolve ``name_or_path`` to a generator and build ``cls`` around it with what its :class:`ModelIndex`
    says (registry entry for a name, ``model_index.json`` for a folder): the inverter and its code book, the
    recommended erase settings. Missing registry files are downloaded only with ``allow_download``."""
    from guide_unlearn.pipelines import loading, registry
    from guide_unlearn.pipelines.components import Deferred

    entry = registry.REGISTRY.get(str(name_or_path)) if not Path(name_or_path).exists() else None
    if entry is not None and entry.format == "tiny":
        return _tiny_assembled(cls, entry.family, device, components)
    generator = loading.load_generator(name_or_path, device=device, allow_download=allow_download)
    index = registry.model_index_of(generator) or _generic_index(name_or_path, generator)
    if index.family not in (None, generator.family):
        raise CheckpointError(f"{name_or_path}: {INDEX_FILE} describes a {index.family} generator but the weights "
                              f"are a {generator.family} one; fix or delete {INDEX_FILE}")
    perceptual = components.pop("perceptual", None)
    inverter = components.pop("inverter", None)
    if inverter is None:  # built at the first inversion, so rendering-only commands never load or warn about it
        inverter = Deferred(lambda: model_default_inverter(name_or_path, generator, device, allow_download))
    identity = components.pop("identity_model", "default")
    if isinstance(identity, str) and identity == "default":  # ArcFace, looked up at the first erase (not for apply)
        identity = Deferred(lambda: default_identity_model(device))
    if components:
        raise InputError(f"unknown components {sorted(components)}; use inverter, identity_model, perceptual")
    return cls(generator, inverter=inverter, identity_model=identity, perceptual=perceptual, name=str(name_or_path),
               erase_defaults=dict(index.erase_defaults))


def _tiny_assembled(cls, family: str, device: torch.device, components: dict[str, Any]):
    eraser = tiny_eraser(cls, family)
    if device.type != "cpu":  # the tiny models are built on the CPU; move every part to the device asked for
        for part in (eraser.generator, eraser.identity_model, eraser.perceptual):
            if isinstance(part, torch.nn.Module):
                part.to(device)
    for key, value in components.items():
        if key not in ("inverter", "identity_model", "perceptual"):
            raise InputError(f"unknown component {key!r}; use inverter, identity_model, perceptual")
        setattr(eraser, key, value)
    return eraser


def _generic_index(name_or_path: str, generator):
    """No record of this model's settings: the generic ones, said once per path."""
    from guide_unlearn.pipelines.registry import ModelIndex

    path = Path(name_or_path).expanduser().resolve()
    what = (f"{path} has no {INDEX_FILE}" if path.is_dir() else
            f"{path} is a checkpoint file, which records no erase settings")
    warn_once(f"index:{path}", "%s: the eraser uses the generic erase settings and the optimisation inverter. "
              "IdentityEraser.from_pretrained(<registry name>) and folders written by IdentityEraser.save_pretrained "
              "use the model's recommended ones", what)
    return ModelIndex(family=generator.family)


def model_default_inverter(name_or_path: Optional[str], generator, device, allow_download: bool = False):
    """A new instance of the default inverter of the model (what its :class:`ModelIndex` names: the one
    ``generator`` was loaded with, else the one of ``name_or_path``; with the code book shipped beside its weights)
    over ``generator``, or None when the model has none (or its weights are missing: one warning); the caller then
    builds the optimisation projector."""
    from guide_unlearn.pipelines.loading import load_inverter
    from guide_unlearn.pipelines.registry import model_index_for, model_index_of
    from guide_unlearn.protocols import module_of

    generator = module_of(generator)
    index = model_index_of(generator) or model_index_for(name_or_path)
    if index is None or not index.inverter:
        return None
    book = None
    if index.code_book:
        folder = source_dir(generator)
        book = folder / index.code_book if folder is not None else None
        if book is None or not book.is_file():
            warn_once(f"book:{book}", "the model's code book %s is missing: photos of its training people start "
                      "from random codes", book or index.code_book)
            book = None
    try:
        return load_inverter(index.inverter, device=device, generator=generator, code_book=book,
                             allow_download=allow_download)
    except BackendUnavailableError as e:
        logger.warning("%s; falling back to the optimisation inverter", e)
    return None


def save_eraser(eraser, directory, overwrite: bool = False) -> Path:
    """``IdentityEraser.save_pretrained``: the generator folder (:func:`guide_unlearn.lineage.save_generator`)
    with the eraser's ``model_index.json``: the inverter, code book, licence and card the generator was loaded
    with, and the eraser's ``erase_defaults``. -> the folder."""
    from guide_unlearn.lineage import CARRIED_FILES, save_generator
    from guide_unlearn.pipelines.registry import ModelIndex, model_index_of
    from guide_unlearn.protocols import module_of

    generator = module_of(eraser.generator)
    index = model_index_of(generator) or ModelIndex(family=generator.family)
    folder = source_dir(generator)
    carried = {n for n in CARRIED_FILES if folder is not None and (folder / n).is_file()}
    index = dataclasses.replace(index, erase_defaults=dict(eraser.erase_defaults),  # files the folder will not hold
                                code_book=index.code_book if index.code_book in carried else None,
                                card=index.card if index.card in carried else None)
    return save_generator(generator, directory, overwrite=overwrite, index=index.to_json())


_WARNED: set = set()  # warnings already given in this process (each missing-weights warning is said once)


def warn_once(key: str, message: str, *args: Any) -> None:
    """``logger.warning(message, *args)`` the first time ``key`` is seen in this process; later calls log at
    INFO (visible with ``-v``)."""
    if key in _WARNED:
        logger.info(message, *args)
        return
    _WARNED.add(key)
    logger.warning(message, *args)


def default_identity_model(device: torch.device):
    """The paper's ID-loss network (ArcFace IR-SE50) when its weights are found, else None (ID term off)."""
    try:
        from guide_unlearn.adapters.identity import load_identity_model
    except ImportError:
        return None
    try:
        return load_identity_model("arcface", device=str(device))
    except Exception as e:  # weights missing: the ID term is disabled and we say so, once, in one short line
        logger.info("ArcFace: %s", e)  # the full search path, with -v
        warn_once("arcface", "ArcFace weights (model_ir_se50.pth) not found: the ID loss term is off "
                             "(docs/faces.md says where to put them)")
        return None


def align_photo(img: Image.Image, style: str, source: Any, face: Optional[int] = None, min_face: int = 0):
    """Detect the faces and align the chosen one for ``style``. -> (crop, camera label or None).

    A deletion must not guess whom it erases: with several faces, or with only a face whose box is smaller than
    ``min_face`` pixels, a FaceChoiceError lists the faces (index, box, size; largest first) unless ``face``
    (an index into that list) chose one.
    """
    try:
        from guide_unlearn import faces
    except ImportError as e:
        raise BackendUnavailableError("photo alignment needs guide_unlearn.faces; pass an aligned crop as a tensor "
                                      "or align=False") from e
    label = source if isinstance(source, (str, Path)) else "the given image"
    found = faces.detect_faces(img)  # largest first
    if not found:
        raise NoFaceError(f"no face found in {label}; pass a photo with a visible face, or an aligned crop with "
                          "align=False",
                          cli_message=f"no face found in {label}; pass a photo with a visible face, or an aligned "
                                      "crop with --no-align")
    listed = [{"index": i, "box": [round(float(v)) for v in f.box], "size": [round(f.width), round(f.height)],
               "score": round(f.score, 3)} for i, f in enumerate(found)]
    text = "; ".join(f"#{d['index']}: box {d['box']} ({d['size'][0]}x{d['size'][1]} px)" for d in listed)
    how = "choose one with face=INDEX (Python) or --face INDEX (command line)"
    if face is not None:
        if not -len(found) <= face < len(found):
            raise FaceChoiceError(f"face={face} but {label} has {len(found)} face(s): {text}; {how}", listed)
        chosen = found[face]
    elif len(found) > 1:
        raise FaceChoiceError(f"{label} shows {len(found)} faces ({text}); a deletion request must not guess whom to "
                              f"erase: {how}", listed)
    else:
        chosen = found[0]
        if min(chosen.width, chosen.height) < min_face:
            raise FaceChoiceError(
                f"the only face in {label} is {round(chosen.width)}x{round(chosen.height)} px (box "
                f"{listed[0]['box']}), far smaller than the {min_face} px this model's inverter needs; pass a "
                f"larger photo of the person, or {how.replace('choose one', 'confirm it')} to use it anyway", listed)
    if min(chosen.width, chosen.height) < min_face:
        logger.warning("the chosen face in %s is %dx%d px, smaller than the %d px the inverter needs; the inversion "
                       "may not look like the person", label, round(chosen.width), round(chosen.height), min_face)
    crop = faces.align_face(img, chosen, style)
    cam = None
    if style == "eg3d":
        cam = list(faces.estimate_camera(img, chosen).label)
    return crop, cam


def camera_from_user(generator, camera: Any, n: int) -> torch.Tensor:
    """A 25-number label [c_dim] / [n, c_dim] or (yaw, pitch) in radians -> cameras [n, c_dim]."""
    cam = torch.as_tensor(camera, dtype=torch.float32)
    if cam.numel() == 2:
        make = getattr(generator, "camera_from_angles", None)
        if make is None:
            raise InputError("this generator cannot build a camera from (yaw, pitch); pass the full label")
        cam = make(float(cam[0]), float(cam[1]))
    cam = cam.reshape(-1, generator.c_dim) if cam.numel() % generator.c_dim == 0 else None
    if cam is None or not torch.isfinite(cam).all():
        raise InputError(f"camera must be {generator.c_dim} finite numbers (or yaw, pitch in radians)")
    return cam.expand(n, -1) if cam.shape[0] == 1 else cam
