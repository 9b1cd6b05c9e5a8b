"""`moving-fashion`: a generated video dataset whose classes need the ORDER of concepts.

Clips are Fashion-MNIST items (white on black, 28 x 28) drifting across a 64 x 64 black canvas,
written as real H.264 mp4 files through PyAV, so reading them takes the real decode path. Two
kinds of class:

* order classes, in pairs that show the same two items in opposite order ("sneaker then bag"
  vs "bag then sneaker"): the items' durations are drawn from the same distribution for both
  orders, so anything that averages over time (a frame-averaged concept bottleneck, a linear
  probe on mean embeddings) sees the same distribution for both classes of a pair and sits at
  chance (50%) within the pair;
* presence classes ("sandal", "dress"): one item appears at some time; any method can tell them.

Clip lengths vary (20 to about 50 frames at 8 fps: 3 to 7 windows of 8 frames); each item stays
on screen for 10 to 16 frames, so every item covers at least one window's first frame (the
frame the default sampling encodes). Train and validation clips use Fashion-MNIST training
images (disjoint), test clips the official test images. Generation is deterministic for a seed;
a folder generated before with the same parameters is reused (meta.json records them).

This is a dataset of our own (the reference, github:patrick-knab/MoTIF, checks temporal
modelling with synthetic concept-activation patterns in `Synthetic_temporal_pattern.ipynb`);
here the patterns are in pixels, so the backbone and the decoder are part of the test.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .._io import atomic_write, cache_root, write_json
from ..errors import ConfigError
from .fashion_mnist import load_fashion_mnist
from .video import VideoDataset, load_video_manifest

log = logging.getLogger("conceptlens")

GENERATOR_VERSION = 2  # 2: x264's mb-tree off (its output varied between runs)
# Fashion-MNIST label of each item, by the name it has in class names and concepts
ITEMS = {"sneaker": 7, "bag": 8, "trouser": 1, "pullover": 2, "sandal": 5, "dress": 3}
ORDER_PAIRS = (("sneaker", "bag"), ("trouser", "pullover"))
PRESENCE = ("sandal", "dress")
CANVAS, FPS = 64, 8
SEGMENT = (10, 16)  # frames an item stays on screen (inclusive)
PAD = (0, 6)  # blank frames before, between and after items (inclusive)


def class_kinds() -> dict[str, str]:
    """Class name -> 'order' or 'presence', in class order."""
    kinds = {}
    for a, b in ORDER_PAIRS:
        kinds[f"{a} then {b}"] = "order"
        kinds[f"{b} then {a}"] = "order"
    for item in PRESENCE:
        kinds[item] = "presence"
    return kinds


def class_items(name: str) -> list[str]:
    """The items of a class in the order they appear."""
    return name.split(" then ")


def concept_names() -> list[str]:
    """The items as concepts (plain names, as the reference embeds its concept strings)."""
    return list(ITEMS)


def _pools(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n_val_pool: int):
    """Per item: (train pool, val pool) of disjoint image indices."""
    out = {}
    for name, label in ITEMS.items():
        idx = rng.permutation(np.flatnonzero(labels == label))
        out[name] = (idx[n_val_pool:], idx[:n_val_pool])
    return out


def _clip(items: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Frames (n, 64, 64) of the given item images shown one after another, each drifting."""
    segments = [int(rng.integers(SEGMENT[0], SEGMENT[1] + 1)) for _ in items]
    pads = [int(rng.integers(PAD[0], PAD[1] + 1)) for _ in range(len(items) + 1)]
    if len(items) == 1:  # presence clips are as long as order clips: a second blank stretch
        pads[-1] += int(rng.integers(SEGMENT[0], SEGMENT[1] + 1))
    n = sum(segments) + sum(pads)
    video = np.zeros((n, CANVAS, CANVAS), np.uint8)
    t = pads[0]
    span = CANVAS - 28
    for item, length, pad in zip(items, segments, pads[1:], strict=True):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, span + 1, size=4))
        for j in range(length):
            f = j / max(length - 1, 1)
            x, y = round(x0 + f * (x1 - x0)), round(y0 + f * (y1 - y0))
            video[t + j, y : y + 28, x : x + 28] = item
        t += length + pad
    return video


def to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the (3H/2, W) planar YUV 4:2:0 array PyAV takes (BT.601, limited
    range). Converting here rather than in FFmpeg's swscale makes the encoded bytes the same on
    every run: swscale's output for the same frame was seen to vary between runs."""
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def sub(c):  # 2 x 2 mean
        return c.reshape(h // 2, 2, w // 2, 2).mean((1, 3))

    planes = [np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, sub(u), sub(v))]
    return np.concatenate([planes[0], planes[1].reshape(h // 4, w), planes[2].reshape(h // 4, w)])


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS, codec: str = "libx264") -> Path:
    """Write grey (n, H, W) or RGB (n, H, W, 3) uint8 frames (H, W multiples of 4) as a video file
    (atomically)."""
    import av

    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.shape[1] % 4 or frames.shape[2] % 4:
        raise ConfigError(f"write_mp4: frame height and width must be multiples of 4; got "
                          f"{frames.shape[1:3]}.")

    def write(tmp: Path) -> None:
        fmt = "webm" if path.suffix == ".webm" else "mp4"
        with av.open(str(tmp), "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                # near-lossless; one thread and no mb-tree give the same bytes on every run (with
                # mb-tree on, one clip in ~30 came out differently now and then, seen with PyAV 18)
                stream.options = {"crf": "12", "threads": "1", "x264-params": "mbtree=0"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(to_yuv420p(frame), format="yuv420p")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    return atomic_write(path, write)


def generate_moving_fashion(root: str | Path | None = None, per_class: tuple[int, int, int] = (40, 10, 20),
                            seed: int = 0, fashion_root: str | Path | None = None,
                            download: bool = False) -> tuple[VideoDataset, dict[str, str]]:
    """Write the clips under `root` (default: the user cache) and load them.

    `per_class`: clips per class in (train, val, test); the default makes 6 x 70 = 420 clips
    (a few seconds). Returns the dataset (its manifest has a split column) and `class_kinds()`.
    """
    if (not isinstance(per_class, tuple | list) or len(per_class) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in per_class)):
        raise ConfigError(f"moving-fashion: per_class must be three positive integers (train, val, test); "
                          f"got {per_class!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"moving-fashion: seed must be a non-negative integer; got {seed!r}.")
    kinds = class_kinds()
    root = Path(root) if root is not None else cache_root() / "datasets" / f"moving-fashion-{seed}"
    params = {"generator": GENERATOR_VERSION, "per_class": list(per_class), "seed": seed,
              "classes": list(kinds), "canvas": CANVAS, "fps": FPS}
    manifest = root / "manifest.csv"
    meta = root / "meta.json"
    if manifest.is_file() and meta.is_file() and json.loads(meta.read_text()) == params:
        return load_video_manifest(manifest), kinds
    fm = load_fashion_mnist(fashion_root, download=download)
    split = np.asarray(fm.split)
    rng = np.random.default_rng(seed)
    train_x = fm.images.array[split == "train"]
    train_y = fm.labels[split == "train"]
    test_x, test_y = fm.images.array[split == "test"], fm.labels[split == "test"]
    n_val_pool = 200
    pools = _pools(train_x, train_y, rng, n_val_pool)
    test_pools = {name: rng.permutation(np.flatnonzero(test_y == label)) for name, label in ITEMS.items()}
    rows = ["path,label,split"]
    for c, name in enumerate(kinds):
        for split_name, n in zip(("train", "val", "test"), per_class, strict=True):
            for i in range(n):
                imgs = []
                for item in class_items(name):
                    if split_name == "test":
                        imgs.append(test_x[rng.choice(test_pools[item])])
                    else:
                        pool = pools[item][0 if split_name == "train" else 1]
                        imgs.append(train_x[rng.choice(pool)])
                rel = f"videos/{c:02d}/{split_name}-{i:04d}.mp4"
                write_mp4(root / rel, _clip(imgs, rng))
                rows.append(f"{rel},{name},{split_name}")
    atomic_write(manifest, lambda p: p.write_text("\n".join(rows) + "\n"))
    write_json(meta, params)
    log.info("Wrote %d moving-fashion clips to %s", len(rows) - 1, root)
    return load_video_manifest(manifest), kinds
