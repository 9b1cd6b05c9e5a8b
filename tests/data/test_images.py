"""Decoding image files: bit depth, EXIF orientation, the pixel cap (decompression bombs)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from conceptlens.cache import content_key
from conceptlens.data import load_dataset, load_image_folder
from conceptlens.data.images import FileImages
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import FeatureCache, encode_dataset
from conceptlens.testing import TinyBackbone, write_png


def decode(path, **kw) -> np.ndarray:
    images = FileImages([path], **kw)
    return images.decode(0, images.read(0))


# every 16-bit value once, as a 256 x 256 gradient
GRADIENT = np.arange(65536, dtype=np.uint16).reshape(256, 256)


def write_pgm16(path, a: np.ndarray) -> None:
    # written by hand (the netpbm format), so the test does not depend on PIL's writer
    path.write_bytes(f"P5\n{a.shape[1]} {a.shape[0]}\n65535\n".encode() + a.astype(">u2").tobytes())


@pytest.mark.parametrize("suffix", [".png", ".tif", ".ppm"])
def test_16_bit_grey_is_scaled_to_8_bits(tmp_path, suffix):
    path = tmp_path / f"g{suffix}"
    if suffix == ".ppm":
        write_pgm16(path, GRADIENT)  # PIL opens this as mode 'I'; the others as 'I;16'
    else:
        Image.fromarray(GRADIENT).save(path)
    img = decode(path)
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    # 65535 -> 255 is a division by 257; v / 257 is never exactly k + 0.5, so rint is unambiguous
    expected = np.rint(GRADIENT / 257).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(img[..., channel], expected)
    # PIL's own convert('RGB') clips at 255, which made ~99.6% of this gradient white
    assert (img == 255).mean() < 0.01


def test_32_bit_tiff_is_scaled_by_its_bit_depth(tmp_path):
    a = np.array([[0, 2**24, 2**31 - 1]], dtype=np.int32)  # signed 32-bit: full scale 2^31 - 1
    Image.fromarray(a).save(tmp_path / "i.tif")
    assert decode(tmp_path / "i.tif")[0, :, 0].tolist() == [0, round(255 * 2**24 / (2**31 - 1)), 255]


def test_float_image_is_refused_not_blackened(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: a 32-bit float image.*8- or 16-bit PNG"):
        decode(tmp_path / "f.tif")


@pytest.mark.parametrize(
    "orientation, upright",
    [
        # EXIF orientation -> what a viewer does to the stored pixels (EXIF 2.32, tag 0x0112)
        (2, np.fliplr),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),  # stored rotated: turn 90 degrees clockwise to view
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, upright):
    stored = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(decode(tmp_path / "o.png"), upright(stored))


def test_exif_orientation_in_a_jpeg(tmp_path):
    # left half dark, right half bright; orientation 6 puts the bright half at the bottom
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, 30:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif, quality=95)
    img = decode(tmp_path / "o.jpg")
    assert img.shape == (60, 40, 3)
    assert img[:25].mean() < 10 and img[35:].mean() > 245


def test_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path):
    path = write_png(tmp_path / "big.png", (1, 2, 3), size=(12, 10))
    with pytest.raises(DataError, match=r"big\.png is 12 x 10 = 120 pixels, over the cap of 100 "
                                         r"pixels.*max_pixels=N.*on_error='skip'"):
        decode(path, max_pixels=100)
    assert decode(path, max_pixels=120).shape == (10, 12, 3)
    assert decode(path, max_pixels=0).shape == (10, 12, 3)  # 0: no cap
    with pytest.raises(ConfigError, match="max_pixels must be a positive integer"):
        FileImages([path], max_pixels=-5)


def test_pil_bomb_error_and_warning_become_the_cap_error(tmp_path, monkeypatch):
    path = write_png(tmp_path / "big.png", (1, 2, 3), size=(12, 10))
    # PIL raises DecompressionBombError above 2 x its limit and warns above its limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(DataError, match=r"big\.png is 120 pixels, over the cap of 40"):
        decode(path, max_pixels=40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under pytest: the warning is raised
        with pytest.raises(DataError, match=r"big\.png is 120 pixels, over the cap of 40"):
            decode(path, max_pixels=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in a plain run: our own header check refuses it
        with pytest.raises(DataError, match=r"big\.png is 12 x 10 = 120 pixels, over the cap"):
            decode(path, max_pixels=40)


def test_cap_above_pils_limit_lets_the_image_through(tmp_path, monkeypatch):
    path = write_png(tmp_path / "big.png", (1, 2, 3), size=(12, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # PIL alone would refuse 120 pixels
    assert decode(path, max_pixels=1000).shape == (10, 12, 3)


def test_loaders_pass_the_cap_and_subsets_keep_it(image_folder):
    write_png(image_folder / "dog" / "big.png", (9, 9, 9), size=(40, 30))
    data = load_image_folder(image_folder, max_pixels=1000)
    sub = data.subset([data.ids.index("dog/big.png")])
    with pytest.raises(DataError, match=r"40 x 30 = 1,200 pixels, over the cap of 1,000"):
        sub.images.decode(0, sub.images.read(0))
    data = load_dataset(str(image_folder), max_pixels=2000)
    i = data.ids.index("dog/big.png")
    assert data.images.decode(i, data.images.read(i)).shape == (30, 40, 3)


def test_encode_fails_or_skips_an_image_over_the_cap(image_folder, tmp_path):
    write_png(image_folder / "dog" / "big.png", (9, 9, 9), size=(40, 30))
    data = load_image_folder(image_folder, max_pixels=1000)
    with pytest.raises(DataError, match=r"dog/big\.png is 40 x 30 = 1,200 pixels, over the cap"):
        encode_dataset(TinyBackbone(), data, tmp_path / "c", progress=False)
    out = encode_dataset(TinyBackbone(), data, tmp_path / "c", on_error="skip", progress=False)
    assert len(out) == 12 and "dog/big.png" not in out.ids
    assert len(out.skipped) == 1 and out.skipped[0][0] == "dog/big.png"
    assert "over the cap of 1,000 pixels" in out.skipped[0][1]


def test_file_image_cache_key_includes_the_decoder_version(image_folder, tmp_path):
    data = load_image_folder(image_folder)
    bb = TinyBackbone()
    encode_dataset(bb, data, tmp_path, progress=False)
    cache = FeatureCache(tmp_path, backbone=bb.id, preprocess=bb.preprocess_id, kind="image")
    raw = data.images.read(0)
    # features an older decoder computed for these bytes (key = sha256 of the bytes) are not reused
    assert content_key(FileImages.key_prefix + raw) in cache
    assert content_key(raw) not in cache


# a real (tiny) EPS file: Pillow identifies it by content, whatever its name, and decodes it by
# running Ghostscript on the bytes
POSTSCRIPT = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
              b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


@pytest.fixture
def no_ghostscript(monkeypatch):
    """Records any use of Pillow's EPS decoder or any subprocess started (Ghostscript is one)."""
    import subprocess

    from PIL import EpsImagePlugin

    used: list[str] = []

    def spy(name, original):
        def record(*args, **kwargs):
            used.append(name)
            return original(*args, **kwargs)
        return record

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        spy("EpsImageFile._open", EpsImagePlugin.EpsImageFile._open))
    monkeypatch.setattr(subprocess, "Popen", spy("subprocess.Popen", subprocess.Popen))
    return used


def test_postscript_named_png_is_refused_without_its_decoder(tmp_path, no_ghostscript):
    from conceptlens.data.images import IMAGE_FORMATS
    from conceptlens.errors import ImageFormatError

    path = tmp_path / "x.png"
    path.write_bytes(POSTSCRIPT)
    with Image.open(path) as im:  # the hole: plain Pillow takes it for EPS
        assert im.format == "EPS"
    no_ghostscript.clear()
    with pytest.raises(ImageFormatError, match=r"x\.png holds EPS data \(by its content.*does not decode: "
                                               r"it decodes only PNG, JPEG, BMP, GIF, TIFF, WebP or "
                                               r"PPM/PGM\. Convert it to PNG.*on_error='skip'"):
        decode(path)
    assert no_ghostscript == []
    assert "EPS" not in IMAGE_FORMATS and len(IMAGE_FORMATS) == 7


def test_encode_skips_or_fails_on_a_postscript_file_in_a_dataset(image_folder, tmp_path, no_ghostscript):
    from conceptlens.errors import ImageFormatError

    (image_folder / "dog" / "x.png").write_bytes(POSTSCRIPT)
    data = load_image_folder(image_folder)
    with pytest.raises(ImageFormatError, match=r"dog/x\.png holds EPS data"):
        encode_dataset(TinyBackbone(), data, tmp_path / "c", progress=False)
    out = encode_dataset(TinyBackbone(), data, tmp_path / "c", on_error="skip", progress=False)
    assert len(out) == 12 and "dog/x.png" not in out.ids
    assert [item for item, _ in out.skipped] == ["dog/x.png"]
    assert "holds EPS data" in out.skipped[0][1]
    assert no_ghostscript == []
