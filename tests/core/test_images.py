"""Loading photos: every odd format becomes RGB, every bad file becomes a typed error."""

import numpy as np
import pytest
from PIL import Image

from guide_unlearn.errors import ImageLoadError
from guide_unlearn.images import load_image, pil_to_tensor


def _save(img, path):
    img.save(path)
    return path


def test_palette_images_become_rgb(tmp_path):
    pal = load_image(_save(Image.new("RGB", (32, 32), (10, 20, 30)).convert("P"), tmp_path / "p.png"))
    assert pal.mode == "RGB"


def test_cmyk_jpeg_is_converted(tmp_path):
    out = load_image(_save(Image.new("CMYK", (32, 32), (0, 0, 0, 0)), tmp_path / "c.jpg"))
    assert out.mode == "RGB" and out.getpixel((1, 1))[0] > 240


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = load_image(tmp_path / "a.gif")
    r, g, _ = out.getpixel((5, 5))
    assert r > 150 and g < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_corrupt_and_non_image_files_name_the_file(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="x.jpg"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_tiny_images_are_refused(tmp_path):
    with pytest.raises(ImageLoadError, match="at least"):
        load_image(_save(Image.new("RGB", (8, 8)), tmp_path / "t.png"))


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 MP, a small file
    with pytest.raises(ImageLoadError, match="limit|too large"):
        load_image(path)


def test_tensor_conversion_range_and_shape():
    x = pil_to_tensor(Image.new("RGB", (20, 20), (255, 0, 128)), size=16)
    assert x.shape == (1, 3, 16, 16)
    assert abs(float(x[0, 0, 5, 5]) - 1.0) < 1e-5 and abs(float(x[0, 1, 5, 5]) + 1.0) < 1e-5
