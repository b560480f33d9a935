"""Faces in ordinary photos: detection with 5 landmarks, the crops the models need, EG3D camera estimation.

    from guide_unlearn.faces import detect_faces, align_face, estimate_camera, prepare_photo

    faces = detect_faces("photo.jpg")                  # largest first; .box, .landmarks [5, 2], .score
    crop = align_face("photo.jpg", faces[0], "eg3d")   # "arcface" | "dlib150" | "ffhq" | "eg3d"
    camera = estimate_camera("photo.jpg", faces[0])    # .yaw, .pitch (EG3D sampler convention), .label [25]

Where each detector finds its weights: see ``guide_unlearn.faces.weights`` and docs/faces.md.
"""

from .align import STYLES, align_face, alignment_matrix
from .camera import estimate_camera
from .detect import DETECTORS, detect_faces, detect_faces_batch, get_detector, pick_face
from .photo import load_image
from .prepare import prepare_photo
from .types import LANDMARK_NAMES, CameraEstimate, Face

__all__ = [
    "CameraEstimate", "DETECTORS", "Face", "LANDMARK_NAMES", "STYLES", "align_face", "alignment_matrix",
    "detect_faces", "detect_faces_batch", "estimate_camera", "get_detector", "load_image", "pick_face",
    "prepare_photo",
]
