"""The video encode stage: videos -> per-window embeddings through any image backbone.

Each window's sampled frames (data/video.py) go through the backbone's image encoder; a window's
embedding is the mean of its frames' embeddings, L2-normalised (the reference's
`_encode_windows` averages the frame features; cosine similarities downstream are unchanged
by the normalisation). Encoding is per window, not per frame: with the default one frame per
window of 8, a video costs an eighth of its frames.

Cache: the existing content-addressed FeatureCache (conceptlens/cache.py). The namespace holds the
backbone id, its preprocessing and the sampling parameters (`VideoSampling.id`, which includes
the decoder version); an entry's key is the sha256 of the video file's bytes plus the window
number. A second namespace ("video-meta") records each finished video's window count, frame
count and frame rate; it is written after the video's window shard, so a run killed mid-way
leaves only whole videos and the next run encodes only the rest (resumable).

Reference: github:patrick-knab/MoTIF, `utils/video_embedder.py` (`embed_video`, which caches
the whole dataset's embeddings in one pickle per dataset/backbone/window size and resumes from
its last saved state).

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| cache [1] | a pickle per dataset/model/window by path | shards keyed by video bytes + sampling | no pickle |
| window embedding | mean of the frames' raw features | that mean, L2-normalised | none (cosines) |
| empty window | a zero vector | cannot happen | none |

[1] A renamed or moved video is not re-encoded; an edited one is.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone
from ..cache import FeatureCache, content_key
from ..data.video import VideoSampling
from ..errors import ConfigError, DataError
from .bundle import FeatureBundle
from .encode import ON_ERROR

log = logging.getLogger("conceptlens")


@dataclass
class VideoFeatures:
    """Encoded videos: ragged per-window embeddings aligned with `ids` and `labels`."""

    ids: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    windows: list[np.ndarray]  # per video (T_i, d) L2-normalised window embeddings
    backbone_id: str
    sampling_id: str = ""
    features: list[np.ndarray] | None = None  # per video (T_i, f) backbone features, if any
    spans: list[np.ndarray] = field(default_factory=list)  # per video (T_i, 2) window frame ranges
    fps: np.ndarray | None = None  # (n,) frames per second
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    sampling: object = None  # the data.video.VideoSampling the windows came from, if known

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(w) for w in self.windows], dtype=np.int64)

    def rows(self, idx) -> VideoFeatures:
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64, copy=False)
        return VideoFeatures(
            [self.ids[i] for i in idx], self.labels[idx], self.classes, [self.windows[i] for i in idx],
            self.backbone_id, self.sampling_id,
            None if self.features is None else [self.features[i] for i in idx],
            [self.spans[i] for i in idx] if self.spans else [],
            None if self.fps is None else self.fps[idx], self.skipped, self.sampling)

    def mean_bundle(self, normalize: bool = True):
        """A FeatureBundle of each video's mean window embedding (and mean features): what a
        frame-averaged image method or a linear probe on mean embeddings reads."""
        emb = np.stack([w.mean(0) for w in self.windows]) if self.windows else np.zeros((0, 0), np.float32)
        if normalize and len(emb):
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        feats = None if self.features is None else np.stack([f.mean(0) for f in self.features])
        return FeatureBundle(list(self.ids), self.labels, self.classes, emb.astype(np.float32), feats,
                             self.backbone_id)


def video_caches(backbone: Backbone, sampling,
                 root: str | Path | None = None) -> tuple[FeatureCache, FeatureCache]:
    """(window cache, per-video meta cache) for this backbone and sampling."""
    ident = {"backbone": backbone.id, "preprocess": backbone.preprocess_id, "sampling": sampling.id}
    if getattr(backbone, "runtime_id", ""):  # as image_cache: one runtime's features per cache
        ident["runtime"] = backbone.runtime_id
    return (FeatureCache(root, kind="video-window", **ident), FeatureCache(root, kind="video-meta", **ident))


def _window_key(video_key: str, t: int) -> str:
    return f"{video_key}/w{t}"


def encode_videos(backbone: Backbone, dataset, sampling=None, cache: str | Path | None = None,
                  batch_size: int = 64, workers: int = 2, on_error: str = "fail",
                  progress: bool = False) -> VideoFeatures:
    """Encode every video of `dataset` (data.video.VideoDataset) window by window.

    Cached videos are read back, not decoded. `on_error`: 'fail' raises on the first corrupt
    video (naming it); 'skip' leaves such videos out and lists them in `.skipped`. Videos are
    decoded in `workers` threads while the backbone runs.
    """
    sampling = (sampling or VideoSampling()).validate()
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}; got {on_error!r}.")
    if batch_size < 1 or workers < 1:
        raise ConfigError(f"batch_size and workers must be >= 1; got {batch_size}, {workers}.")
    wcache, mcache = video_caches(backbone, sampling, cache)
    skipped: list[tuple[str, str]] = []

    def read_key(i: int) -> str | None:
        try:
            return content_key(dataset.read(i))
        except DataError as e:
            if on_error == "fail":
                raise
            skipped.append((dataset.ids[i], str(e)))
            return None

    with ThreadPoolExecutor(workers) as pool:
        keys = list(pool.map(read_key, range(len(dataset))))
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is not None and k not in mcache and k not in todo:
                todo[k] = i
        _encode_missing(backbone, dataset, sampling, wcache, mcache, todo, pool, workers, batch_size,
                        on_error, skipped, progress)

    rows = [i for i, k in enumerate(keys) if k is not None and k in mcache]
    reported = {item for item, _ in skipped}
    skipped += [(dataset.ids[i], "same bytes as an unreadable video")
                for i in sorted(set(range(len(keys))) - set(rows)) if dataset.ids[i] not in reported]
    if skipped:
        log.warning("Skipped %d unreadable video(s): %s", len(skipped),
                    "; ".join(f"{i} ({r})" for i, r in skipped[:5]))
    windows, features, spans, fps = [], [], [], []
    for i in rows:
        meta = mcache.get([keys[i]])["meta"][0]
        n_win = int(meta[0])
        out = wcache.get([_window_key(keys[i], t) for t in range(n_win)])
        windows.append(out["embedding"])
        features.append(out.get("features"))
        spans.append(out["span"].astype(np.int64))
        fps.append(float(meta[2]))
    has_features = bool(rows) and all(f is not None for f in features)
    return VideoFeatures([dataset.ids[i] for i in rows], dataset.labels[rows], dataset.classes, windows,
                         backbone.id, sampling.id, features if has_features else None, spans,
                         np.asarray(fps, np.float32), skipped, sampling)


def _encode_missing(backbone, dataset, sampling, wcache, mcache, todo, pool, workers, batch_size,
                    on_error, skipped, progress):
    from ..progress import progress as tqdm  # one switch for every bar (--quiet)

    def load(i: int):
        """(prepared frames (sum k_t, ...), frames per window, bounds, fps, n_frames) or None."""
        try:
            vw = dataset.windows(i, dataset.read(i), sampling)
        except DataError as e:
            if on_error == "fail":
                raise
            skipped.append((dataset.ids[i], str(e)))
            return None
        prepared = [backbone.prepare(f) for frames in vw.frames for f in frames]
        return (torch.stack(prepared), [len(f) for f in vw.frames], vw.bounds, vw.fps, vw.n_frames)

    items = list(todo.items())
    ahead = 2 * workers  # decoded videos kept in flight: memory stays bounded
    pending = [pool.submit(load, i) for _, i in items[:ahead]]
    buffered: list[tuple[str, tuple]] = []
    n_frames_buffered = 0

    def flush():
        nonlocal buffered, n_frames_buffered
        if not buffered:
            return
        frames = torch.cat([b[0] for _, b in buffered])
        with torch.inference_mode():  # in chunks of batch_size: one long video is many batches
            outs = [backbone.encode_prepared(frames[s : s + batch_size])
                    for s in range(0, len(frames), batch_size)]
        emb = np.concatenate([np.asarray(o["embedding"]) for o in outs])
        feats = (np.concatenate([np.asarray(o["features"]) for o in outs])
                 if all("features" in o for o in outs) else None)
        wkeys, wemb, wfeat, wspan, mkeys, mrows = [], [], [], [], [], []
        cursor = 0
        for key, (_, counts, bounds, fps, n_frames) in buffered:
            for t, k in enumerate(counts):
                e = emb[cursor : cursor + k].mean(0)
                wemb.append(e / max(float(np.linalg.norm(e)), 1e-12))
                if feats is not None:
                    wfeat.append(np.asarray(feats[cursor : cursor + k]).mean(0))
                wkeys.append(_window_key(key, t))
                wspan.append(bounds[t])
                cursor += k
            mkeys.append(key)
            mrows.append((len(counts), n_frames, fps))
        outputs = {"embedding": np.stack(wemb), "span": np.asarray(wspan, np.float32)}
        if feats is not None:
            outputs["features"] = np.stack(wfeat)
        wcache.put(wkeys, outputs)  # windows first: a video counts as done only once its meta exists
        mcache.put(mkeys, {"meta": np.asarray(mrows, np.float32)})
        buffered, n_frames_buffered = [], 0

    with tqdm(total=len(items), desc="encode videos", unit="video", disable=not progress or not items) as bar:
        for j, (key, _) in enumerate(items):
            result = pending.pop(0).result()
            if j + ahead < len(items):
                pending.append(pool.submit(load, items[j + ahead][1]))
            if result is not None:
                buffered.append((key, result))
                n_frames_buffered += len(result[0])
                if n_frames_buffered >= batch_size:
                    flush()
            bar.update(1)
        flush()
