"""Plain data types of the faces package: a detected face and an estimated camera."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# Order of the 5 landmarks everywhere in this package (InsightFace / MTCNN convention, "left" = the viewer's
# left, i.e. smaller x in a frontal photo): left eye centre, right eye centre, nose tip, left and right mouth
# corners.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    box:       [4] float array (x1, y1, x2, y2).
    landmarks: [5, 2] float array (x, y) in the order of ``LANDMARK_NAMES``.
    score:     detector confidence in [0, 1].
    detector:  name of the detector that found it ("mtcnn", "dlib", "insightface").
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    detector: str = "mtcnn"
    extra: dict = field(default_factory=dict)  # detector-specific data (e.g. dlib's own 5 points)

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float64).reshape(4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(5, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def scaled(self, factor: float) -> "Face":
        """The same face in an image resized by ``factor`` (coordinates multiplied by it)."""
        extra = dict(self.extra)
        if "dlib_points" in extra:
            extra["dlib_points"] = np.asarray(extra["dlib_points"]) * factor
        return Face(self.box * factor, self.landmarks * factor, self.score, self.detector, extra)


@dataclass
class CameraEstimate:
    """A camera estimated from a face's 5 landmarks (EG3D conventions, docs/eg3d.md).

    yaw, pitch: radians in EG3D's ``LookAtPoseSampler`` parametrisation of the camera POSITION on its sphere
                around the world origin ((pi/2, pi/2) = frontal): yaw = pi/2 + atan2(o_x, o_z); pitch is the
                sampler's polar parameter v = pi/2 * (1 - o_y / |o|) (not a geometric angle). Fed back to the
                sampler (looking at the pivot) they rebuild ``label`` up to its roll.
    azimuth, elevation, roll: geometric angles in radians of the viewing direction (from the face towards
                the camera), in EG3D's world frame (azimuth > 0: camera on the +x side, as for EG3D yaw > pi/2; elevation > 0: camera above
                the face; roll: rotation about the viewing axis).
    label:      [25] float32 — cam2world 4x4 (OpenCV axes) flattened row-major + normalised 3x3 intrinsics.
    """

    yaw: float
    pitch: float
    azimuth: float
    elevation: float
    roll: float
    label: np.ndarray
    residual: Optional[float] = None  # RMS landmark fit error, in units of the inter-ocular distance

    @property
    def cam2world(self) -> np.ndarray:
        """[4, 4] camera-to-world matrix (OpenCV axes: x right, y down, z forward)."""
        return np.asarray(self.label[:16], dtype=np.float64).reshape(4, 4)

    @property
    def intrinsics(self) -> np.ndarray:
        """[3, 3] intrinsics normalised by the image size."""
        return np.asarray(self.label[16:], dtype=np.float64).reshape(3, 3)
