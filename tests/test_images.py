import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxstyle import ImageError, load_image, save_image


def _rgb(h=6, w=10):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w) * 20
    a[..., 1] = np.arange(h)[:, None] * 30
    a[..., 2] = 77
    return a


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(_rgb(6, 10)).save(path, exif=exif, quality=100)
    assert load_image(path).shape == (10, 6, 3)


def test_png_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(img[0, 0], [1, 0, 0])
    np.testing.assert_allclose(img[3, 0], [1, 1, 1])


def test_grayscale_16bit_and_cmyk(tmp_path):
    Image.fromarray(np.full((5, 5), 128, np.uint8), "L").save(tmp_path / "g.png")
    np.testing.assert_allclose(load_image(tmp_path / "g.png"), 128 / 255, atol=1e-6)
    Image.fromarray(np.full((5, 5), 65535 // 4, np.uint16)).save(tmp_path / "g16.png")
    g16 = load_image(tmp_path / "g16.png")
    assert g16.shape == (5, 5, 3)
    np.testing.assert_allclose(g16, (65535 // 4) / 65535, atol=1e-4)
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert np.abs(load_image(tmp_path / "c.jpg") - _rgb() / 255).max() < 0.1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"this is not an image"), "not an image"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_bad_inputs(tmp_path, make, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_image(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:1500])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(cut)


def test_refuses_absurd_sizes_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)


def test_save_round_trip_and_format_from_extension(tmp_path):
    img = _rgb() / 255.0
    for name, fmt in [("o.png", "PNG"), ("o.jpg", "JPEG"), ("o.webp", "WEBP"), ("o.tif", "TIFF")]:
        save_image(tmp_path / name, img)
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt
    np.testing.assert_allclose(load_image(tmp_path / "o.png"), img, atol=1 / 255)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_refuses_inputs_unknown_extensions_and_missing_folders(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(_rgb()).save(src)
    before = src.read_bytes()
    with pytest.raises(ImageError, match="refusing to overwrite the input"):
        save_image(src, np.zeros((2, 2, 3)), inputs=[src])
    assert src.read_bytes() == before
    with pytest.raises(ImageError, match="extension"):
        save_image(tmp_path / "out.xyz", np.zeros((2, 2, 3)))
    with pytest.raises(ImageError, match="does not exist"):
        save_image(tmp_path / "nope" / "out.png", np.zeros((2, 2, 3)))


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "out.png"
    save_image(out, np.ones((3, 3, 3)))
    before = out.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ImageError, match="No space left on device"):
        save_image(out, np.zeros((3, 3, 3)))
    assert out.read_bytes() == before
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["out.png"]


def test_written_files_get_ordinary_permissions(tmp_path):
    out = save_image(tmp_path / "o.png", np.zeros((2, 2, 3)))
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    out.chmod(0o640)
    save_image(out, np.ones((2, 2, 3)))
    assert out.stat().st_mode & 0o777 == 0o640


def test_description_is_embedded(tmp_path):
    save_image(tmp_path / "o.png", np.zeros((2, 2, 3)), description="weights: random")
    save_image(tmp_path / "o.jpg", np.zeros((2, 2, 3)), description="weights: random")
    with Image.open(tmp_path / "o.png") as png, Image.open(tmp_path / "o.jpg") as jpg:
        assert png.text["Description"] == "weights: random"
        assert jpg.getexif()[0x010E] == "weights: random"
