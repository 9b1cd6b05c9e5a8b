"""Attribution heat maps as HTML: one row per image, the image and one colour-mapped overlay per
concept (red: pixels that raise the concept's score, blue: pixels that lower it), as inline PNG data
URIs (no files beside the report). Each overlay is scaled by the 99th percentile of its own absolute
attribution, so one hot pixel does not wash out the rest; the scale is printed under it."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np

from ..errors import DataError


def _grey(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(-1)
    if a.ndim != 2:
        raise DataError(f"an image must be (H, W) or (H, W, channels) pixels; got shape {np.shape(image)}.")
    return a.astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.75) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8: the image in grey, tinted red where the attribution is positive and blue
    where it is negative, opacity up to `alpha` at the map's 99th percentile of |attribution|
    (returned as the scale)."""
    grey = _grey(image)
    h = np.asarray(heatmap, dtype=np.float32)
    if h.shape != grey.shape:
        raise DataError(f"heat map {h.shape} and image {grey.shape} must have the same height and width.")
    scale = float(np.percentile(np.abs(h), 99)) if h.size else 0.0
    v = np.clip(h / scale, -1, 1) if scale > 0 else np.zeros_like(h)
    base = np.repeat(grey[..., None], 3, -1) * 0.6 + 0.4 * 255  # faded, so colour reads over dark images
    red, blue = np.array([220, 30, 30], np.float32), np.array([30, 80, 220], np.float32)
    colour = np.where(v[..., None] >= 0, red, blue)
    a = alpha * np.abs(v)[..., None]
    return np.clip(base * (1 - a) + colour * a, 0, 255).astype(np.uint8), scale


def png_uri(rgb: np.ndarray, size: int = 112) -> str:
    """An inline PNG of an (H, W[, 3]) uint8 array, longest side scaled to `size` (nearest)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    f = size / max(img.size)
    img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def heatmap_section(images: Sequence[np.ndarray], heatmaps, concepts: Sequence[str], *,
                    labels: Sequence[str] | None = None, title: str = "Where concepts look",
                    size: int = 112) -> str:
    """A `<section id='heatmaps'>`: per image (a row), the image and one overlay per concept.

    `heatmaps`: an `explain.attribution.Heatmaps` (its `maps`), or per image a (len(concepts), H, W)
    array (a list, or one (n, t, H, W) array); `labels`: an optional caption per image."""
    maps = list(getattr(heatmaps, "maps", heatmaps))
    concepts = [str(c) for c in concepts]
    if len(maps) != len(images):
        raise DataError(f"{len(images)} images but {len(maps)} heat map sets; give one set per image.")
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{len(images)} images but {len(labels)} labels; give one label per image.")
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in concepts)
    rows = []
    for i, (image, m) in enumerate(zip(images, maps, strict=True)):
        m = np.asarray(m)
        if m.ndim != 3 or len(m) != len(concepts):
            raise DataError(f"image {i}: expected ({len(concepts)}, H, W) heat maps, one per concept; "
                            f"got shape {m.shape}.")
        cells = [f"<td><img src='{png_uri(np.asarray(image), size)}' alt='image {i}'>"
                 + (f"<br><span class='small'>{esc(str(labels[i]))}</span>" if labels is not None else "")
                 + "</td>"]
        for c, h in zip(concepts, m, strict=True):
            rgb, scale = overlay(image, h)
            cells.append(f"<td><img src='{png_uri(rgb, size)}' alt='{esc(c)}, image {i}'>"
                         f"<br><span class='small'>|a| p99 {scale:.2g}</span></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<section id='heatmaps'><h2>{esc(title)}</h2><p class='small'>Input attributions of each "
            "concept's prediction: red pixels raise it, blue lower it.</p>"
            f"<table class='heatmaps'><tr><th>image</th>{head}</tr>{''.join(rows)}</table></section>")
