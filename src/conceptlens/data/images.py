"""Image sources: the bytes that identify an image (for the cache) and how to decode them.

Decoding (`FileImages.decode`) guards against inputs that used to give silently wrong pixels
or crash: 16-bit and 32-bit integer images are scaled by their bit depth to 8 bits (PIL's own
conversion clips them, so a 16-bit image came out almost white); the EXIF orientation is
applied (a phone photo stored sideways is seen upright); images over `max_pixels` are refused
from the header, before any pixel is decoded (a decompression bomb is a corrupt image, not an
out-of-memory crash); float images, whose value range cannot be known, are refused. Only the
formats in `IMAGE_FORMATS` are decoded: Pillow otherwise picks a decoder from the file's content
whatever its name, and its EPS/PostScript decoder runs Ghostscript on the bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, ImageFormatError

# 64 megapixels (8000 x 8000): larger than any photo a vision backbone needs (they resize to a
# few hundred pixels), small enough that the decoded RGB array stays under 200 MB.
DEFAULT_MAX_PIXELS = 64_000_000
# Changes whenever decoding gives different pixels for the same file bytes (16-bit scaling,
# EXIF orientation: version 2; only IMAGE_FORMATS: version 3, as a file in another format is now
# refused); the encode stage folds it into the cache key so features computed by an older
# decoder are not reused.
DECODER_VERSION = "pil-decode-v3"
ORIENTATION = 0x0112  # the EXIF tag
# The image formats conceptlens decodes (docs/guides/reliability.md), by Pillow's names, and their file
# suffixes; the one list every caller uses (dataset folders, uploads, the explorer's examples).
# Any other content (EPS/PostScript, PDF, ICO, ...) is refused before a decoder sees it.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
FORMATS_SHOWN = "PNG, JPEG, BMP, GIF, TIFF, WebP or PPM/PGM"


def check_max_pixels(max_pixels: int | None) -> int | None:
    """Validate a pixel cap; None or 0 turns the cap off."""
    if max_pixels is None or max_pixels == 0:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer) or max_pixels < 0:
        raise ConfigError(
            f"max_pixels must be a positive integer (pixels per image), or 0/None for no cap; "
            f"got {max_pixels!r}."
        )
    return int(max_pixels)


def _full_scale(im) -> int:
    """The value that means 'white' in an integer-mode ('I', 'I;16*') PIL image."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return 65535
    if im.format in ("PNG", "PPM"):  # PIL widens 16-bit PNG/PGM samples to 'I', full scale 65535
        return 65535
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)  # BitsPerSample
        bits = bits[0] if isinstance(bits, tuple) else bits
        signed = im.tag_v2.get(339) in (2, (2,))  # SampleFormat 2 = signed integer
        if isinstance(bits, int) and 1 <= bits <= 32:
            return 2 ** (bits - signed) - 1
    raise DataError(
        f"a {im.format or 'raw'} image in 32-bit integer mode whose bit depth is unknown; "
        "convert it to an 8- or 16-bit PNG"
    )


def to_rgb8(im) -> np.ndarray:
    """An (H, W, 3) uint8 array from a PIL image, integer images scaled by their bit depth."""
    if im.mode == "F":
        raise DataError(
            "a 32-bit float image: its value range (0..1? 0..255?) cannot be known; convert "
            "it to an 8- or 16-bit PNG"
        )
    if im.mode != "I" and not im.mode.startswith("I;16"):
        return np.asarray(im.convert("RGB"))
    full = _full_scale(im)
    wide = np.uint32 if full <= 65535 else np.uint64  # room for value * 255 without overflow
    a = np.asarray(im)
    if a.dtype.kind == "i" or a.max(initial=0) > full:  # out-of-range samples clip, never wrap
        a = np.clip(a, 0, full)
    a = a.astype(wide)
    grey = ((a * 255 + full // 2) // full).astype(np.uint8)  # round to nearest
    return np.repeat(grey[..., None], 3, axis=-1)


def decode_file_bytes(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image file bytes to (H, W, 3) uint8, upright, refusing images over `max_pixels`.

    Raises DataError (without the file's name; the caller adds it) for anything unreadable, and
    ImageFormatError for content that is not one of IMAGE_FORMATS (never handed to its decoder).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    if max_pixels is None or (limit is not None and max_pixels > limit):
        # the user asked for a higher cap than PIL's own bomb guard (89 Mpx): raise PIL's, or
        # PIL would refuse what the user allowed. Never lowered, so concurrent calls agree.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        try:
            opened = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except UnidentifiedImageError:
            other = _other_format(data[:16])
            if other is None:
                raise  # not an image at all: corrupt, below
            raise ImageFormatError(
                f"{other} data (by its content, whatever the file's name), a format conceptlens "
                f"does not decode: it decodes only {FORMATS_SHOWN}"
            ) from None
        with opened as im:
            w, h = im.size  # from the header; nothing is decoded yet
            if max_pixels is not None and w * h > max_pixels:
                raise _TooLarge(w, h)
            im = ImageOps.exif_transpose(im) if _orientation(im) not in (None, 1) else im
            return to_rgb8(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL's guard fires before ours only above its limit, which is above our cap
        raise _TooLarge(*_size_in(str(e))) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError,
            TypeError, KeyError, ZeroDivisionError) as e:
        # the set PIL's decoders raise on malformed files; anything else is our bug, not the file's
        raise DataError(f"{type(e).__name__}: {e}") from e


def image_format(data: bytes) -> tuple[str, str]:
    """(Pillow's format name, MIME type) of image bytes, read from the header alone; ImageFormatError
    for another format, DataError for bytes that are no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            return im.format, im.get_format_mimetype() or "application/octet-stream"
    except UnidentifiedImageError:
        other = _other_format(data[:16])
        if other is not None:
            raise ImageFormatError(f"{other} data, a format conceptlens does not decode") from None
        raise DataError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"too large: {e}") from e
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError) as e:
        raise DataError(f"{type(e).__name__}: {e}") from e


def _other_format(prefix: bytes) -> str | None:
    """The Pillow format outside IMAGE_FORMATS whose signature `prefix` has, if any: only each
    plugin's signature check runs (a comparison of a few bytes), never its decoder."""
    from PIL import Image

    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            found = accept(prefix)
        except Exception:  # a signature check that trips on odd bytes matched nothing
            continue
        if found and not isinstance(found, str):  # a string is Pillow's warning, not a match
            return name
    return None


def _orientation(im) -> int | None:
    try:
        return im.getexif().get(ORIENTATION)
    except Exception:  # an unparsable EXIF block: PIL then shows the image as stored, so do we
        return None


def _size_in(message: str) -> tuple[int | None, int | None]:
    import re

    m = re.search(r"Image size \((\d+) pixels\)", message)
    return (int(m.group(1)), None) if m else (None, None)


class _TooLarge(DataError):
    def __init__(self, w: int | None, h: int | None):
        self.w, self.h = w, h
        size = (f"{w} x {h} = {w * h:,} pixels" if h is not None
                else f"{w:,} pixels" if w is not None else "too large")
        super().__init__(size)


class FileImages:
    """Images stored as files (JPEG, PNG, ...). The cache key hashes the file's bytes.

    `max_pixels` caps width x height (checked from the header before decoding); None or 0
    turns the cap off.
    """

    key_prefix = DECODER_VERSION.encode()

    def __init__(self, paths: Sequence[str | Path], max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.paths = [Path(p) for p in paths]
        self.max_pixels = check_max_pixels(max_pixels)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> bytes:
        try:
            return self.paths[i].read_bytes()
        except OSError as e:
            raise DataError(f"Cannot read image {self.paths[i]}: {e.strerror or e}.") from e

    def decode(self, i: int, data: bytes) -> np.ndarray:
        try:
            return decode_file_bytes(data, self.max_pixels)
        except _TooLarge as e:
            raise DataError(
                f"Image {self.paths[i]} is {e}, over the cap of {self.max_pixels or 0:,} pixels "
                "(a guard against decompression bombs, which would exhaust memory). If the image "
                "is genuine, raise the cap when loading the dataset: max_pixels=N "
                "(load_dataset(..., max_pixels=N), --max-pixels N; 0 turns it off). Or pass "
                "on_error='skip' (--on-error skip) to leave it out and report it."
            ) from e
        except ImageFormatError as e:
            raise ImageFormatError(
                f"Image {self.paths[i]} holds {e}. Convert it to PNG or delete it, or pass "
                "on_error='skip' (--on-error skip) to leave it out and report it."
            ) from e
        except DataError as e:
            raise DataError(
                f"Corrupt or unreadable image {self.paths[i]}: {e}. Replace or delete the file, "
                "or pass on_error='skip' (--on-error skip) to leave it out and report it."
            ) from e

    def subset(self, indices: Sequence[int]) -> FileImages:
        return FileImages([self.paths[i] for i in indices], self.max_pixels)


class ArrayImages:
    """Images held in a uint8 array (N, H, W) or (N, H, W, 3), e.g. Fashion-MNIST."""

    key_prefix = b""  # decoding an array never changes, so keys stay as they were

    def __init__(self, array: np.ndarray):
        if array.dtype != np.uint8 or array.ndim not in (3, 4):
            raise DataError(
                f"Image array must be uint8 with shape (N, H, W) or (N, H, W, 3); "
                f"got {array.dtype} {array.shape}."
            )
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def read(self, i: int) -> bytes:
        img = self.array[i]
        # the shape is part of the identity: the same bytes in another shape are another image
        return repr(img.shape).encode() + np.ascontiguousarray(img).tobytes()

    def decode(self, i: int, data: bytes) -> np.ndarray:
        img = self.array[i]
        return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img

    def subset(self, indices: Sequence[int]) -> ArrayImages:
        return ArrayImages(self.array[np.asarray(indices, dtype=np.int64)])
