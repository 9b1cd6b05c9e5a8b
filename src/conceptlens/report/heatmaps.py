"""Attribution heat maps as HTML: one row per image, the image and one colour-mapped overlay per
concept (red: pixels that raise the concept's score, blue: pixels that lower it), as inline PNG data
URIs (no files beside the report). Each overlay is scaled by the 99th percentile of its own absolute
attribution, so one hot pixel does not wash out the rest; the scale is printed under it."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError


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


def _per_image(concepts, n: int) -> list[list[str]] | None:
    """Per-image concept lists when `concepts` is a list of lists (one per image), else None."""
    if len(concepts) and all(not isinstance(c, str) and isinstance(c, Sequence) for c in concepts):
        if len(concepts) != n:
            raise DataError(f"{n} images but {len(concepts)} concept lists; give one list per image.")
        return [[str(x) for x in c] for c in concepts]
    return None


def heatmap_section(images: Sequence[np.ndarray], heatmaps, concepts, *,
                    labels: Sequence[str] | None = None, title: str = "Where concepts look",
                    size: int = 112, note: str = "") -> str:
    """A `<section id='heatmaps'>`: per image (a row), the image and one overlay per concept.

    `heatmaps`: an `explain.attribution.Heatmaps` (its `maps`), or per image a (len(concepts), H, W)
    array (a list, or one (n, t, H, W) array); `concepts`: the concept names, one column each, or
    per image its own list (then each overlay is captioned with its concept); `labels`: an optional
    caption per image; `note`: escaped text added to the explanation under the title."""
    maps = list(getattr(heatmaps, "maps", heatmaps))
    if len(maps) != len(images):
        raise DataError(f"{len(images)} images but {len(maps)} heat map sets; give one set per image.")
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{len(images)} images but {len(labels)} labels; give one label per image.")
    own = _per_image(concepts, len(images))
    rows_concepts = own if own is not None else [[str(c) for c in concepts]] * len(images)
    esc = html.escape
    width = max((len(c) for c in rows_concepts), default=0)
    head = ("".join(f"<th>{esc(c)}</th>" for c in rows_concepts[0]) if own is None and images
            else "".join(f"<th>concept {j + 1}</th>" for j in range(width)))
    rows = []
    for i, (image, m, names) in enumerate(zip(images, maps, rows_concepts, strict=True)):
        m = np.asarray(m)
        if m.ndim != 3 or len(m) != len(names):
            raise DataError(f"image {i}: expected ({len(names)}, H, W) heat maps, one per concept; "
                            f"got shape {m.shape}.")
        cells = [f"<td><img src='{png_uri(np.asarray(image), size)}' alt='image {i}'>"
                 + (f"<br><span class='small'>{esc(str(labels[i]))}</span>" if labels is not None else "")
                 + "</td>"]
        for c, h in zip(names, m, strict=True):
            rgb, scale = overlay(image, h)
            caption = f"<b class='concept'>{esc(c)}</b><br>" if own is not None else ""
            cells.append(f"<td data-concept='{esc(c)}'><img src='{png_uri(rgb, size)}' "
                         f"alt='{esc(c)}, image {i}'>"
                         f"<br><span class='small'>{caption}|a| p99 {scale:.2g}</span></td>")
        cells += ["<td></td>"] * (width - len(names))
        rows.append("<tr class='heatmap-row'>" + "".join(cells) + "</tr>")
    return (f"<section id='heatmaps'><h2>{esc(title)}</h2><p class='small'>Input attributions of each "
            f"concept's prediction: red pixels raise it, blue lower it.{' ' + esc(note) if note else ''}</p>"
            f"<table class='heatmaps'><tr><th>image</th>{head}</tr>{''.join(rows)}</table></section>")


def top_concept_heatmaps(model, bundle, image: Callable[[str], np.ndarray], backbone, indices: Sequence[int],
                         *, concepts: int = 3, steps: int = 16, size: int = 112,
                         title: str = "Where concepts look") -> str:
    """The report's heat maps: for each image `indices` of `bundle` (decoded by `image(id)`), the
    integrated-gradient maps (`steps` steps, explain/attribution.attribute) of its `concepts` top
    concepts, the largest contributions to its predicted class (as the report's example cards),
    through `backbone`'s differentiable path and `model`'s concept predictor. Where attributions
    cannot be computed for this backbone or model (a ConfigError saying why), the section says so
    instead."""
    from ..explain.attribution import attribute
    from ..explain.contributions import explain_image

    for key, value, low in (("concepts", concepts, 1), ("steps", steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"heat maps: {key} must be an integer >= {low}; got {value!r}.")
    images, maps, names, labels = [], [], [], []
    for i in indices:
        ex = explain_image(model, bundle, int(i), top=concepts)
        targets = [c.concept for c in ex["top"]]
        pixels = np.asarray(image(ex["id"]))
        try:
            hm = attribute(backbone, model, [pixels], targets, n_steps=steps)
        except ConfigError as e:  # this backbone or model has no differentiable path: say so
            return (f"<section id='heatmaps'><h2>{html.escape(title)}</h2><p class='small heatmaps-missing'>"
                    f"Not shown: {html.escape(str(e))}</p></section>")
        images.append(pixels)
        maps.append(hm.maps[0])
        names.append(list(hm.targets))
        truth = model.classes_[int(bundle.labels[int(i)])]
        labels.append(f"{ex['id']}: true {truth}, predicted {ex['predicted']}")
    return heatmap_section(images, maps, names, labels=labels, title=title, size=size,
                           note=f"Each image's {concepts} top concepts (largest contributions to its "
                                f"predicted class); integrated gradients from a black image, {steps} steps.")
