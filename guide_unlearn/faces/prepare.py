"""From an ordinary photo to the crop a backend needs: load, detect, pick a face, align, estimate the camera."""

from __future__ import annotations

from typing import Any, Optional, Union

from PIL import Image

from ..errors import NoFaceError
from .align import align_face
from .camera import estimate_camera
from .detect import detect_faces, pick_face
from .photo import ImageLike, describe, load_image
from .types import CameraEstimate, Face


def prepare_photo(image: ImageLike, style: str, size: Optional[int] = None, face_index: Optional[int] = None,
                  detector: Union[str, Any] = "mtcnn", device: str = "cpu"
                  ) -> tuple[Image.Image, Face, Optional[CameraEstimate]]:
    """Load a photo, detect its faces, pick the largest (or ``face_index`` in largest-first order), align it.

    style: "arcface", "dlib150", "ffhq" or "eg3d"; size: crop side (default per style).
    Returns (aligned RGB PIL crop, the Face in the photo's pixels, the camera for style "eg3d" else None).
    Raises NoFaceError naming the photo when no face is found, ImageLoadError when it cannot be read.
    """
    photo = load_image(image)
    faces = detect_faces(photo, detector=detector, device=device)
    if not faces:
        raise NoFaceError(f"no face found in {describe(image)}; pass a photo where the face is visible and at "
                          "least ~20 px wide, or an already aligned crop")
    face = pick_face(faces, face_index)
    crop = align_face(photo, face, style, size)
    camera = estimate_camera(photo, face) if style == "eg3d" else None
    return crop, face, camera
