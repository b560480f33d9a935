"""Loading ordinary photos: orientation, colour modes, bit depths and bad files."""

import numpy as np
import pytest
from PIL import Image

from guide_unlearn.errors import ImageLoadError
from guide_unlearn.faces import load_image


def _gradient(w=40, h=20):
    x = np.tile(np.arange(w, dtype=np.uint8)[None, :] * 5, (h, 1))
    return np.stack([x, 255 - x, np.full_like(x, 7)], axis=2)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(_gradient()).save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)  # width and height swapped: the stored 40x20 picture is shown upright
    assert img.mode == "RGB"


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((16, 16), 100, np.uint8), mode="L").save(path)
    arr = np.asarray(load_image(path))
    assert arr.shape == (16, 16, 3) and (arr == 100).all()


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :8, 3] = 255  # left half opaque red, right half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    arr = np.asarray(load_image(path)).astype(int)
    assert arr[0, 0].tolist() == [200, 0, 0]
    assert arr[0, 15].tolist() == [255, 255, 255]


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(path)
    value = np.asarray(load_image(path))[0, 0, 0]
    assert abs(int(value) - 128) <= 1  # half of 65535 -> half of 255


def test_missing_and_corrupt_files_raise_image_load_error_naming_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_image(bad)
