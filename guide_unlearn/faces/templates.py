"""Landmark templates and constants of the face crops (5 points in ``types.LANDMARK_NAMES`` order)."""

from __future__ import annotations

import numpy as np

# InsightFace / ArcFace 112x112 template (the crop of GUIDE's ID metric).
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])

# dlib's 5-point chip template (its shape_predictor_5 points: right eye outer/inner, left eye outer/inner,
# nose base) in the unit square of a chip without padding; dlib maps p -> (padding + p) / (1 + 2 padding) * size.
DLIB_CHIP_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
DLIB_CHIP_PADDING = 0.25
DLIB_CHIP_SIZE = 150

# Where MTCNN's 5 landmarks fall in dlib's unit chip frame, measured here: dlib's 5-point shape predictor and
# MTCNN run on the same 82 photos of shared/faces (stargan_v2_celebahq, codeformer_cropped, ilvr_ffhq); mean
# over photos (std 0.015-0.05). Lets the "dlib150" crop be made from any detector's 5 points, and lets a
# dlib detection report the 5 standard points.
MTCNN_IN_DLIB_CHIP = np.array([
    [0.22068, 0.20302],
    [0.76378, 0.19655],
    [0.48102, 0.53764],
    [0.24731, 0.75854],
    [0.73968, 0.75382],
])

# Deep3DFaceRecon's standard 5 landmarks of the BFM mean face (x right, y up, z towards the viewer), used by
# EG3D's in-the-wild preprocessing: 3-D points for eye centres, nose tip and mouth corners.
BFM_LM3D = np.array([
    [-0.31148657, 0.29036078, 0.13377953],
    [0.30979887, 0.28972036, 0.13179526],
    [0.0032535, -0.04617932, 0.55244243],
    [-0.25216928, -0.38133916, 0.22405732],
    [0.2484662, -0.38128236, 0.22235769],
])
# EG3D crop (its crop_images_in_the_wild step): the photo is scaled so the fitted face scale is 300 px per BFM
# unit, a 700 px square is cut around the projected BFM origin and resized to 512.
EG3D_RESCALE = 300.0
EG3D_CROP = 700.0
EG3D_SIZE = 512

# FFHQ crop recipe (Karras et al. 2019): from eye centres and mouth corners.
FFHQ_SIZE = 1024
