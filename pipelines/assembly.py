"""Building an IdentityEraser from a name or a path, and the photo glue (alignment, cameras)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image

from guide_unlearn.errors import BackendUnavailableError, FaceChoiceError, InputError, NoFaceError

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
    """Resolve ``name_or_path`` to a generator (+ its default inverter) and build ``cls`` around it. Missing
    registry files are downloaded only with ``allow_download``."""
    from guide_unlearn.pipelines import registry

    entry = registry.REGISTRY.get(str(name_or_path)) if not Path(name_or_path).exists() else None
    if entry is not None and entry.format == "tiny":
        eraser = tiny_eraser(cls, entry.family)
        if device.type != "cpu":  # the tiny models are built on the CPU; move every part to the device asked for
            for part in (eraser.generator, eraser.identity_model, eraser.perceptual):
                if isinstance(part, torch.nn.Module):
                    part.to(device)
        for key, value in components.items():
            if key not in ("inverter", "identity_model", "perceptual"):
                raise InputError(f"unknown component {key!r}; use inverter, identity_model, perceptual")
            setattr(eraser, key, value)
        return eraser
    from guide_unlearn.pipelines import loading

    generator = loading.load_generator(name_or_path, device=device, allow_download=allow_download)
    if Path(name_or_path).is_dir():
        from guide_unlearn.pipelines.export import restore_record

        restore_record(generator, name_or_path)  # patches merged before export keep their base fingerprint
    perceptual = components.pop("perceptual", None)
    inverter = components.pop("inverter", None)
    if inverter is None:  # built at the first inversion, so rendering-only commands never load or warn about it
        from guide_unlearn.pipelines.components import Deferred as _Deferred

        inverter = _Deferred(lambda: model_default_inverter(name_or_path, generator, device, allow_download))
    identity = components.pop("identity_model", "default")
    if isinstance(identity, str) and identity == "default":  # ArcFace, looked up at the first erase (not for apply)
        from guide_unlearn.pipelines.components import Deferred as _Deferred

        identity = _Deferred(lambda: default_identity_model(device))
    if components:
        raise InputError(f"unknown components {sorted(components)}; use inverter, identity_model, perceptual")
    defaults = dict(entry.erase_defaults) if entry is not None else {}
    return cls(generator, inverter=inverter, identity_model=identity, perceptual=perceptual, name=str(name_or_path),
               erase_defaults=defaults)


def model_default_inverter(name: str, generator, device, allow_download: bool = False):
    """A new instance of the registry's default inverter of the model ``name`` (with the code book shipped beside
    its weights, for code-space inverters) over ``generator``, or None when the model has none (or its weights are
    missing: one warning); the caller then builds the optimisation projector."""
    from guide_unlearn.pipelines.loading import load_inverter
    from guide_unlearn.pipelines.registry import default_inverter_for

    inv_name = default_inverter_for(name)
    if inv_name:
        book = _code_book_file(name) if inv_name == "code-projector" else None  # only code-space inverters use one
        try:
            return load_inverter(inv_name, device=device, generator=generator, code_book=book,
                                 allow_download=allow_download)
        except BackendUnavailableError as e:
            logger.warning("%s; falling back to the optimisation inverter", e)
    return None  # IdentityEraser builds the optimisation projector


def _code_book_file(name: str):
    """The ``code_book.safetensors`` beside a model folder's config.json (GLO models ship one), else None."""
    from guide_unlearn.adapters.projector import CODE_BOOK_FILE
    from guide_unlearn.errors import GuideUnlearnError
    from guide_unlearn.pipelines.registry import resolve_checkpoint

    try:
        folder, _ = resolve_checkpoint(name, allow_download=False)
    except GuideUnlearnError:
        return None
    book = Path(folder) / CODE_BOOK_FILE
    return book if Path(folder).is_dir() and book.is_file() else None


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
