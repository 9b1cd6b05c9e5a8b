"""The report's video section: the three views of a MoTIF explanation, as plain HTML + inline SVG.

For one video (`methods.motif.explain_video`):

* global concept importance: bars of g_c = sum_t alpha_t C_t[c] W[y, c] (the reference's
  `utils/explanations.py`), the concepts that carried the prediction over the whole video;
* local relevance over time: each window's score l_t[y] (whose log-sum-exp is the video's
  logit) and its time importance alpha_t = softmax_t(l_t[y] / tau), plotted over the windows,
  with each window's thumbnail (inline PNG data URI) under its point, and a table of the top
  concepts per window;
* temporal dependency: per concept, its attention map A_c (T x T, rows: the query window,
  averaged over layers) as a small heat map, for the most important concepts.

Everything is inline (no scripts, fonts or images fetched), and every name from the model or
the data is HTML-escaped. `video_section` returns one <section>; `build_video_report` a whole
page of them. `window_thumbnails` decodes the frame each window encoded (its first sampled one).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .html import png_data_uri

VIDEO_STYLE = """
.video { margin: 1.5em 0; }
.video h3 { margin: .4em 0; }
.video .views { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.video .view { min-width: 200px; }
.video .thumbs { display: flex; gap: 0; }
.video .thumbs figure { margin: 0; text-align: center; font-size: 10px; }
.video .maps { display: flex; flex-wrap: wrap; gap: 1em; }
.video .maps figure { margin: 0; font-size: 11px; }
.video table { border-collapse: collapse; font-size: 12px; }
.video td, .video th { border: 1px solid #ccc; padding: 2px 6px; }
.video rect.pos { fill: #2a7ab9; } .video rect.neg { fill: #c0392b; }
.video rect.imp { fill: #f0b429; opacity: .6; }
.video polyline { fill: none; stroke: #2a7ab9; stroke-width: 2; }
"""

CELL = 64  # px per window on the time axis: one thumbnail wide


def _esc(x) -> str:
    return html.escape(str(x))


def _importance_bars(items: list[tuple[str, float]], width: int = 380) -> str:
    """Horizontal bars (inline SVG), one per concept, signed."""
    if not items:
        return "<p class='small'>no concept carries weight for this class</p>"
    top = max(abs(v) for _, v in items) or 1.0
    h, label = 18, 170
    rows = []
    for i, (name, v) in enumerate(items):
        w = abs(v) / top * (width - label - 60)
        rows.append(f"<text x='{label - 4}' y='{i * h + 13}' font-size='11' text-anchor='end'>"
                    f"{_esc(name[:32])}</text><rect class='{'pos' if v >= 0 else 'neg'}' x='{label}' "
                    f"y='{i * h + 3}' width='{max(w, 1):.1f}' height='{h - 6}'/>"
                    f"<text x='{label + w + 4:.1f}' y='{i * h + 13}' font-size='11'>{v:+.3f}</text>")
    return (f"<svg class='global-bars' width='{width}' height='{len(items) * h + 4}' role='img' "
            f"aria-label='global concept importance'>{''.join(rows)}</svg>")


def _time_plot(scores: np.ndarray, importance: np.ndarray) -> str:
    """Window score l_t[y] as a line and time importance alpha_t as bars, one column per window
    (CELL px wide, so the thumbnails below line up)."""
    T = len(scores)
    width, height, pad = T * CELL, 140, 14
    lo, hi = float(min(scores.min(), 0.0)), float(max(scores.max(), 0.0))
    span = (hi - lo) or 1.0

    def y(v: float) -> float:
        return pad + (hi - v) / span * (height - 2 * pad)

    parts = [f"<line x1='0' x2='{width}' y1='{y(0.0):.1f}' y2='{y(0.0):.1f}' stroke='#999' "
             "stroke-dasharray='3,3'/>"]
    for t, a in enumerate(importance):  # alpha_t bars from the bottom, full height = 1
        h = float(a) * (height - 2 * pad)
        parts.append(f"<rect class='imp' x='{t * CELL + CELL * 0.3:.1f}' y='{height - pad - h:.1f}' "
                     f"width='{CELL * 0.4:.1f}' height='{h:.1f}'><title>window {t}: importance "
                     f"{float(a):.2f}</title></rect>")
    points = " ".join(f"{t * CELL + CELL / 2:.1f},{y(float(v)):.1f}" for t, v in enumerate(scores))
    parts.append(f"<polyline points='{points}'/>")
    for t, v in enumerate(scores):
        parts.append(f"<circle cx='{t * CELL + CELL / 2:.1f}' cy='{y(float(v)):.1f}' r='3' fill='#2a7ab9'>"
                     f"<title>window {t}: score {float(v):+.3f}</title></circle>")
    return (f"<svg class='time-plot' width='{width}' height='{height}' role='img' "
            f"aria-label='window score and time importance'>{''.join(parts)}</svg>")


def _thumbs(thumbnails: Sequence[np.ndarray] | None, windows: list[dict]) -> str:
    if not thumbnails:
        return ""
    if len(thumbnails) != len(windows):
        raise ConfigError(f"video_section: {len(thumbnails)} thumbnails for a video of {len(windows)} "
                          "windows; pass one image per window (window_thumbnails gives them).")
    cells = []
    for w, img in zip(windows, thumbnails, strict=True):
        frames = _frames(w) or str(w["window"])
        cells.append(f"<figure style='width:{CELL}px'><img class='window-thumb' width='{CELL - 4}' "
                     f"height='{CELL - 4}' alt='window {w['window']}' src='{png_data_uri(img, CELL)}'>"
                     f"<figcaption>{_esc(frames)}</figcaption></figure>")
    return f"<div class='thumbs'>{''.join(cells)}</div>"


def _frames(w: dict) -> str:
    """A window's frames, first-last (inclusive), or '' when unknown."""
    return f"{w['frames'][0]}-{w['frames'][1] - 1}" if w["frames"] else ""


def _heatmap(a: np.ndarray, size: int = 120) -> str:
    """A T x T attention map (rows: query window, columns: key window) as an SVG grid."""
    T = a.shape[0]
    c = size / T
    top = float(a.max()) or 1.0
    cells = [f"<rect x='{u * c:.1f}' y='{t * c:.1f}' width='{c:.1f}' height='{c:.1f}' "
             f"fill='#2a7ab9' fill-opacity='{float(a[t, u]) / top:.3f}'><title>{t} attends {u}: "
             f"{float(a[t, u]):.2f}</title></rect>" for t in range(T) for u in range(T)]
    return (f"<svg class='attention-map' width='{size}' height='{size}' role='img' "
            f"style='border:1px solid #ccc'>{''.join(cells)}</svg>")


def video_section(model, feats, video_index: int, thumbnails: Sequence[np.ndarray] | None = None,
                  target: int | None = None, top: int = 8, maps: int = 4) -> str:
    """One video's explanation as an HTML <section> (the three views; see the module docstring).

    `model`: a fitted `motif`; `feats`: VideoFeatures (or an image bundle); `thumbnails`: one
    (H, W) or (H, W, 3) uint8 image per window of the video, or None for none; `target`: the class
    to explain (default: the prediction); `top` concepts in the bars and per window; `maps`:
    attention maps of the most important concepts."""
    from ..methods.motif import explain_video

    if not 0 <= int(video_index) < len(feats):
        raise ConfigError(f"video_section: video_index {video_index} is outside 0..{len(feats) - 1}.")
    e = explain_video(model, feats, int(video_index), target=target, top=min(top, 3))
    i = int(video_index)
    global_items = [(n, v) for n, v in e["global"][:top]]
    head = (f"<h3>{_esc(e['id'])}</h3><p>predicted <b>{_esc(e['predicted'])}</b>; explaining the score "
            f"for <b>{_esc(e['target'])}</b> = {e['logit']:.3f}, the log-sum-exp of {len(e['windows'])} "
            f"window scores (intercept {e['intercept']:+.3f}).</p>")
    view_global = (f"<div class='view' id='video-{i}-global'><h4>Global concept importance</h4>"
                   f"{_importance_bars(global_items)}</div>")
    rows = "".join(
        f"<tr><td>{w['window']}</td><td>{_esc(_frames(w))}</td><td class='num'>{w['score']:+.3f}</td>"
        f"<td class='num'>{w['importance']:.2f}</td><td>"
        + ", ".join(f"{_esc(n)} {c:+.2f}" for n, _, c in w["top"]) + "</td></tr>" for w in e["windows"])
    view_local = (f"<div class='view' id='video-{i}-local'><h4>Local relevance over time</h4>"
                  "<p class='small'>line: window score for the class; bars: time importance</p>"
                  f"{_time_plot(np.asarray(e['window_scores']), np.asarray(e['time_importance']))}"
                  f"{_thumbs(thumbnails, e['windows'])}"
                  "<table class='windows'><tr><th>window</th><th>frames</th><th>score</th>"
                  f"<th>importance</th><th>top concepts (contribution)</th></tr>{rows}</table></div>")
    att = np.asarray(e["attention"]).mean(0)  # (k, T, T), averaged over layers
    g = (np.asarray(e["time_importance"])[:, None] * e["window_contributions"]).sum(0)
    figures = "".join(f"<figure>{_heatmap(att[c])}<figcaption>{_esc(model.concepts_[c])}</figcaption>"
                      "</figure>" for c in np.argsort(-g, kind="stable")[:maps])
    view_attention = (f"<div class='view' id='video-{i}-attention'><h4>Attention over time per concept</h4>"
                      "<p class='small'>row: query window, column: attended window</p>"
                      f"<div class='maps'>{figures}</div></div>")
    return (f"<section class='video' id='video-{i}'>{head}<div class='views'>{view_global}{view_local}"
            f"{view_attention}</div></section>")


def window_thumbnails(path, sampling=None) -> list[np.ndarray]:
    """Per window of the video file `path`, the first frame it encoded (its first sampled frame),
    cut with `sampling` (a data.video.VideoSampling; a motif model's `video_sampling()`)."""
    from ..data.video import read_windows

    return [w[0] for w in read_windows(path, sampling, where=f"video {path}").frames]


def build_video_report(model, feats, thumbnails: Mapping[int, Sequence[np.ndarray]] | None = None,
                       indices: Sequence[int] | None = None, title: str = "conceptlens video explanations",
                       top: int = 8) -> str:
    """A whole self-contained HTML page with one `video_section` per video in `indices`
    (default: the videos in `thumbnails`, else the first 8)."""
    thumbnails = dict(thumbnails or {})
    if indices is None:
        indices = sorted(thumbnails) if thumbnails else list(range(min(len(feats), 8)))
    sections = "".join(video_section(model, feats, i, thumbnails.get(i), top=top) for i in indices)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>body{{font-family:sans-serif;margin:1.5em}} .small{{color:#555;font-size:12px}}"
            f"{VIDEO_STYLE}</style></head><body><h1>{_esc(title)}</h1>"
            f"<p class='small'>model: {_esc(getattr(model, 'name', type(model).__name__))}, "
            f"{len(model.concepts_)} concepts, {len(model.classes_)} classes</p>{sections}</body></html>")
