"""Videos: decoding with PyAV, windows of frames, and video datasets (folders, manifests).

A video is cut into windows of `window` frames starting every `stride` frames (default: the
reference's non-overlapping windows of 8 frames, the last one shorter when the frame count is
not a multiple); from each window `frames_per_window` frames are sampled (default 1) and each
sampled frame goes through an image backbone (features/video_encode.py averages them per
window). Frames are decoded as a stream: only the current window's frames are held, so a long
video never sits in memory whole.

Reference: github:patrick-knab/MoTIF, `utils/video_embedder.py` (`_read_windows`: windows
`range(0, frame_count, window_size)`, last one shorter; `_sample_indices`: evenly spaced or
random frames per window; `_encode_windows`: the mean of the sampled frames' embeddings).

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| decoder [1] | OpenCV, BGR, header frame count | PyAV (FFmpeg in the wheel), RGB | none on windows |
| frame sampling [2] | random (train_MoTIF.py) | `sampling="even"`, its `random=False` rule | none measured |
| stride | windows never overlap | `stride`, default = `window` | none at the default |
| short video | read count padded to one window | one shorter window | same windows |
| unreadable video [3] | dropped, no message | DataError naming it, or skip and list | none dropped silently |

[1] Frames are counted while decoding, so a header count that lies (common for webm) cannot drop
or invent windows; no OpenCV dependency.
[2] The encode cache keys on the sampling parameters, so the frames chosen must be a function
of them: 'even' takes k evenly spaced frames (k=1: the window's first frame); 'random' is an
option, seeded by `seed`. On the generated dataset items stay on screen for whole windows.
[3] As corrupt images (data/images.py): `on_error='fail'` raises naming the file, 'skip' lists it.
"""

from __future__ import annotations

import io
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import SPLITS, normalize_class_names, require_classes
from .folder import _files, _refuse_same_file_twice, class_folders
from .manifest import load_manifest

log = logging.getLogger("conceptlens")

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".ogg"}
# Changes whenever decoding or sampling gives different pixels for the same bytes; part of the
# video encode cache's namespace, so windows from an older decoder are never reused.
VIDEO_DECODER_VERSION = "pyav-rgb24-v1"
SAMPLING_MODES = ("even", "center", "random")
DEFAULT_WINDOW = 8  # the reference's window_size
# a frame over this many pixels is refused (a guard like images' max_pixels; 8K UHD is 33 Mpx)
DEFAULT_MAX_FRAME_PIXELS = 40_000_000


def _require_av():
    try:
        import av
    except ImportError as e:
        raise ConfigError("Reading videos needs PyAV: pip install av (or pip install "
                          "'conceptlens[video]').") from e
    return av


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"video sampling: {name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class VideoSampling:
    """How a video becomes windows and which frames of each window are encoded.

    `window`: frames per window (reference default 8); `stride`: frames between window starts
    (None = `window`, non-overlapping); `frames_per_window`: frames sampled from each window
    (their embeddings are averaged); `sampling`: 'even' (the reference's evenly spaced rule;
    k=1 takes the window's first frame), 'center' (k frames centred in the window) or 'random'
    (k distinct frames drawn with `seed`).
    """

    window: int = DEFAULT_WINDOW
    stride: int | None = None
    frames_per_window: int = 1
    sampling: str = "even"
    seed: int = 0

    def validate(self) -> VideoSampling:
        _positive_int("window", self.window)
        if self.stride is not None:
            _positive_int("stride", self.stride)
        _positive_int("frames_per_window", self.frames_per_window)
        if self.frames_per_window > self.window:
            raise ConfigError(f"video sampling: frames_per_window ({self.frames_per_window}) cannot "
                              f"exceed the window length ({self.window}); lower it or lengthen the window.")
        if self.sampling not in SAMPLING_MODES:
            raise ConfigError(f"video sampling: sampling must be one of {SAMPLING_MODES}; got "
                              f"{self.sampling!r}.")
        _positive_int("seed", self.seed, minimum=0)
        return self

    @property
    def step(self) -> int:
        return self.window if self.stride is None else self.stride

    @property
    def id(self) -> str:
        """Everything that decides which frames are encoded (part of the cache namespace)."""
        seed = f"-seed{self.seed}" if self.sampling == "random" else ""
        return (f"w{self.window}-s{self.step}-k{self.frames_per_window}-{self.sampling}{seed}-"
                f"{VIDEO_DECODER_VERSION}")


def sample_indices(n: int, k: int, mode: str = "even", rng: np.random.Generator | None = None) -> list[int]:
    """Indices of k frames in a window of n frames (fewer when n < k), as the reference's
    `_sample_indices` does for 'even' and 'random'."""
    if n <= 0 or k <= 0:
        return []
    if mode == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())
    if k >= n:
        return list(range(n))
    if mode == "center":
        # the middles of k equal parts of the window
        return [int((2 * i + 1) * n // (2 * k)) for i in range(k)]
    step = (n - 1) / (k - 1) if k > 1 else 1e9  # the reference's rule: k=1 -> frame 0
    return [round(i * step) for i in range(k)]


def window_bounds(n_frames: int, window: int = DEFAULT_WINDOW,
                  stride: int | None = None) -> list[tuple[int, int]]:
    """(start, end) frame ranges of the windows of a video with `n_frames` frames: one every
    `stride` frames; the last window may be shorter; a window whose start lies past a window
    that already reached the last frame is not made (overlapping windows stop at the end)."""
    step = window if stride is None else stride
    out: list[tuple[int, int]] = []
    for start in range(0, n_frames, step):
        if out and out[-1][1] >= n_frames:
            break
        out.append((start, min(start + window, n_frames)))
    return out


@dataclass
class VideoWindows:
    """One decoded video: the sampled frames of each window and where the windows lie."""

    frames: list[np.ndarray]  # per window (k_t, H, W, 3) uint8, the sampled frames
    bounds: list[tuple[int, int]]  # per window (first frame, end frame), end exclusive
    fps: float
    n_frames: int

    @property
    def spans(self) -> list[tuple[float, float]]:
        """(start, end) seconds of each window, as the reference's `video_window_spans`."""
        return [(a / self.fps, (b - 1) / self.fps) for a, b in self.bounds]

    def __len__(self) -> int:
        return len(self.frames)


def _open(source, where: str):
    av = _require_av()
    if isinstance(source, bytes | bytearray):
        if not source:
            raise DataError(f"{where} is an empty (zero-byte) file.")
        source = io.BytesIO(source)
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not a readable video ({type(e).__name__}: {e}).") from e
    if not container.streams.video:
        container.close()
        raise DataError(f"{where} has no video stream.")
    return container


def iter_frames(source: bytes | str | Path, where: str = "video",
                max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS) -> Iterator[np.ndarray]:
    """Decode a video's frames one at a time as (H, W, 3) uint8 RGB."""
    av = _require_av()
    container = _open(source, where)
    try:
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if max_frame_pixels and w * h > max_frame_pixels:
            raise DataError(f"{where}: frames of {w} x {h} pixels are over the cap of "
                            f"{max_frame_pixels:,} pixels per frame.")
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError, EOFError) as e:
            # a file cut short decodes up to the damage: the frames before it are real
            log.warning("%s: decoding stopped early (%s: %s)", where, type(e).__name__, e)
    finally:
        container.close()


def video_fps(source: bytes | str | Path, where: str = "video") -> float:
    container = _open(source, where)
    try:
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
        return float(rate) if rate else 30.0  # the reference's fallback
    finally:
        container.close()


def decode_video(source: bytes | str | Path, where: str = "video",
                 max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS) -> np.ndarray:
    """All frames (N, H, W, 3) uint8; a video with no decodable frame raises DataError."""
    frames = list(iter_frames(source, where, max_frame_pixels))
    if not frames:
        raise DataError(f"{where} has no decodable frames.")
    return np.stack(frames)


def read_windows(source: bytes | str | Path, sampling: VideoSampling | None = None, where: str = "video",
                 max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS) -> VideoWindows:
    """Decode a video into windows and keep only each window's sampled frames.

    Frames stream through a buffer of one window, so memory stays at `window` frames."""
    s = (sampling or VideoSampling()).validate()
    rng = np.random.default_rng(s.seed)
    fps = video_fps(source, where)
    buffer: deque[tuple[int, np.ndarray]] = deque()  # (frame index, frame) of open windows
    frames, bounds = [], []
    next_start, n = 0, 0

    def close(start: int, end: int) -> None:
        picks = sample_indices(end - start, s.frames_per_window, s.sampling, rng)
        held = {i: f for i, f in buffer}
        frames.append(np.stack([held[start + j] for j in picks]))
        bounds.append((start, end))

    for i, frame in enumerate(iter_frames(source, where, max_frame_pixels)):
        n = i + 1
        buffer.append((i, frame))
        while next_start + s.window - 1 <= i:  # a full window ends at this frame
            close(next_start, next_start + s.window)
            next_start += s.step
        while buffer and buffer[0][0] < next_start:
            buffer.popleft()
    if n == 0:
        raise DataError(f"{where} has no decodable frames.")
    # the last, shorter window(s), exactly as window_bounds lays them out
    for start, end in window_bounds(n, s.window, s.stride)[len(bounds):]:
        close(start, end)
    return VideoWindows(frames, bounds, fps, n)


# -- datasets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoDataset:
    """Video files with integer labels into `classes`; `split` as the data came with it."""

    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    split: tuple[str, ...] | None = None

    def __post_init__(self):
        n = len(self.ids)
        if len(self.labels) != n or len(self.paths) != n:
            raise DataError(f"Video dataset {self.name!r}: {n} ids, {len(self.labels)} labels and "
                            f"{len(self.paths)} paths; they must be equally many.")
        if self.split is not None and len(self.split) != n:
            raise DataError(f"Video dataset {self.name!r}: split has {len(self.split)} entries for {n}.")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"Video dataset {self.name!r}: a label is outside 0..{len(self.classes) - 1}.")

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, i: int) -> bytes:
        try:
            return self.paths[i].read_bytes()
        except OSError as e:
            raise DataError(f"Cannot read video {self.paths[i]}: {e.strerror or e}.") from e

    def windows(self, i: int, data: bytes, sampling: VideoSampling | None = None) -> VideoWindows:
        """Decode video i (its bytes `data`); a corrupt one raises DataError naming the file."""
        try:
            return read_windows(data, sampling, where=f"video {self.paths[i]}")
        except DataError as e:
            raise DataError(f"Corrupt or unreadable video: {e} Replace or delete the file, or pass "
                            "on_error='skip' (--on-error skip) to leave it out and report it.") from e

    def subset(self, indices: Sequence[int] | np.ndarray) -> VideoDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return VideoDataset(self.name, self.classes, self.labels[idx], tuple(self.ids[i] for i in idx),
                            tuple(self.paths[i] for i in idx),
                            None if self.split is None else tuple(self.split[i] for i in idx))

    def split_indices(self, split: str) -> np.ndarray:
        if self.split is None:
            raise DataError(f"Video dataset {self.name!r} has no split column; split it by seed instead.")
        if split not in SPLITS:
            raise DataError(f"split must be one of {SPLITS}; got {split!r}.")
        return np.flatnonzero(np.asarray(self.split) == split)


def load_video_folder(root: str | Path, allow_non_ascii: bool = False) -> VideoDataset:
    """Read `root/<class>/<video>`; classes are the subfolders in sorted order. Files with
    other suffixes, or at the top of `root`, are listed in a warning; a class folder with no
    video, or a dangling link, is an error; links are followed as for image folders (data/folder.py)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Video folder {root} does not exist or is not a folder.")
    class_dirs = class_folders(root)
    if not class_dirs:
        raise DataError(f"Video folder {root} has no class subfolders; expected {root}/<class name>/<video>.")
    classes = normalize_class_names([d.name for d in class_dirs], allow_non_ascii)
    require_classes(root.name, classes, f"Add a subfolder of videos for each class to {root}.")
    real_root = os.path.realpath(root)
    paths, labels, ignored, empty = [], [], [], []
    for label, d in enumerate(class_dirs):
        files = list(_files(d, root, real_root))
        videos = [(p, r) for p, r in files if r and p.suffix.lower() in VIDEO_SUFFIXES]
        ignored += [p for p, r in files if not r or p.suffix.lower() not in VIDEO_SUFFIXES]
        if not videos:
            empty.append(d.name)
        paths += videos
        labels += [label] * len(videos)
    if empty:
        raise DataError(f"Class folder(s) with no videos in {root}: {', '.join(empty)}. Add videos "
                        f"(suffixes {', '.join(sorted(VIDEO_SUFFIXES))}) or remove the folder(s).")
    _refuse_same_file_twice(root, paths)
    if ignored:
        log.warning("Ignored %d non-video file(s) in %s: %s%s", len(ignored), root,
                    ", ".join(str(p.relative_to(root)) for p in ignored[:5]),
                    " ..." if len(ignored) > 5 else "")
    return VideoDataset(root.name, tuple(classes), np.asarray(labels, dtype=np.int64),
                        tuple(str(p.relative_to(root)) for p, _ in paths), tuple(p for p, _ in paths))


def load_video_manifest(path: str | Path, allow_non_ascii: bool = False) -> VideoDataset:
    """A manifest (CSV `path,label[,split]` or JSONL) of video files, checked exactly as image
    manifests are (data/manifest.py): missing files, empty labels, repeated files are errors."""
    ds = load_manifest(path, allow_non_ascii=allow_non_ascii, max_pixels=None)
    paths = tuple(ds.images.paths)
    odd = [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
    if odd:
        log.warning("Manifest %s lists %d file(s) without a video suffix (e.g. %s); they are read "
                    "as videos.", path, len(odd), odd[0])
    return VideoDataset(ds.name, ds.classes, ds.labels, ds.ids, paths, ds.split)


def load_video_dataset(spec: str | Path, allow_non_ascii: bool = False) -> VideoDataset:
    """A folder of class subfolders, or a manifest (.csv / .jsonl)."""
    path = Path(spec)
    if path.is_dir():
        return load_video_folder(path, allow_non_ascii)
    if path.suffix.lower() in (".csv", ".jsonl") and path.is_file():
        return load_video_manifest(path, allow_non_ascii)
    missing = " (no such file or folder)." if not path.exists() else "."
    raise DataError(f"Cannot read video dataset {str(spec)!r}: expected a folder with one subfolder per "
                    f"class or a manifest ending in .csv or .jsonl{missing}")
