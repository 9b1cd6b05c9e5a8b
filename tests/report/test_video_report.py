"""`conceptlens explain` on video files, and the report's video section (also in headless Chromium)."""

from __future__ import annotations

import html
import json
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("av")

from conceptlens.cli import main
from conceptlens.data.moving_fashion import write_mp4
from conceptlens.data.video import VideoDataset, VideoSampling, read_windows
from conceptlens.errors import ConfigError, DataError
from conceptlens.features.video_encode import VideoFeatures, encode_videos
from conceptlens.methods import Method
from conceptlens.methods.base import Context
from conceptlens.methods.motif import Motif
from conceptlens.report.video import build_video_report, video_section, window_thumbnails
from conceptlens.testing import TinyBackbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAMPLING = VideoSampling(window=4)  # not the default 8: explain must take it from the model folder
CLASSES = ("bright then dark", "dark then bright")
CONCEPTS = ["bright", "dark", "stripes"]


def clip(order: int, n: int, seed: int) -> np.ndarray:
    """n grey 32 x 32 frames: a bright half then a dark half, or the reverse, with noise."""
    rng = np.random.default_rng(seed)
    levels = np.r_[np.full(n // 2, 200), np.full(n - n // 2, 40)][:: 1 if order == 0 else -1]
    frames = levels[:, None, None] + rng.integers(0, 20, size=(n, 32, 32))
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A motif model fitted on 8 tiny encoded clips (window 4), saved; and the clips."""
    root = tmp_path_factory.mktemp("videos")
    paths, labels = [], []
    for i in range(8):
        paths.append(write_mp4(root / f"c{i}.mp4", clip(i % 2, 12 + 4 * (i % 3), i)))
        labels.append(i % 2)
    ds = VideoDataset("clips", CLASSES, np.asarray(labels), tuple(p.name for p in paths), tuple(paths))
    bb = TinyBackbone()
    feats = encode_videos(bb, ds, SAMPLING, cache=root / "cache")
    ctx = Context(CLASSES, CONCEPTS, bb.encode_texts(CONCEPTS), backbone_id=bb.id)
    model = Motif(epochs=30, lr=3e-2, seed=0).fit(feats, ctx)
    model.save(root / "model")
    return model, feats, paths, root


def test_the_model_folder_keeps_the_sampling(fitted):
    model, _, _, root = fitted
    assert model.video_sampling() == SAMPLING
    saved = json.loads((root / "model" / "model.json").read_text())["extra"]["sampling"]
    assert saved == {"window": 4, "stride": None, "frames_per_window": 1, "sampling": "even", "seed": 0}
    assert Method.load(root / "model").video_sampling() == SAMPLING


def test_a_bad_saved_sampling_is_refused_at_load(fitted, tmp_path):
    _, _, _, root = fitted
    shutil.copytree(root / "model", tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["extra"]["sampling"]["frames_per_window"] = 9
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="frames_per_window"):
        Method.load(tmp_path / "m")


def test_explain_a_video_prints_top_concepts_per_window(fitted, monkeypatch, capsys):
    import conceptlens.backbones

    model, _, paths, root = fitted
    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())
    video = paths[4]  # 16 frames: windows 0-3, 4-7, 8-11, 12-15
    assert main(["explain", str(root / "model"), str(video), "--backbone", "tiny", "--no-progress",
                 "--top", "2"]) == 0
    out = capsys.readouterr().out
    # independent reference: the window embeddings computed here, straight from the decoded frames
    bb = TinyBackbone()
    frames = read_windows(video, SAMPLING).frames
    emb = np.stack([bb.encode_images(list(f))["embedding"].mean(0) for f in frames])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ref = VideoFeatures(["v"], np.zeros(1, np.int64), CLASSES, [emb.astype(np.float32)], bb.id)
    logits = model.decision_function(ref)[0]
    contrib = model.window_contributions(ref, 0)
    assert len(np.unique(contrib.round(4))) > 2  # distinct contributions: the order below means something
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("window ")]
    assert len(lines) == 4
    assert f"predicted {CLASSES[int(logits.argmax())]!r}" in out
    for t, line in enumerate(lines):
        assert line.strip().startswith(f"window {t} frames {4 * t}-{4 * t + 3}:")
        top = [CONCEPTS[c] for c in np.argsort(-contrib[t], kind="stable")[:2]]
        shown = re.findall(r"(\w+) [+-]\d", line.split(":", 1)[1].split("importance")[1])
        assert shown == top, line


def test_explain_a_video_with_an_image_model_says_which_method_to_use(tmp_path, monkeypatch, capsys):
    import conceptlens.backbones
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import get_method

    bb = TinyBackbone()
    b = FeatureBundle(["a", "b"], np.array([0, 1]), CLASSES, np.eye(2, 6, dtype=np.float32), None, bb.id)
    ctx = Context(CLASSES, CONCEPTS, bb.encode_texts(CONCEPTS), backbone_id=bb.id)
    get_method("posthoc").fit(b, ctx).save(tmp_path / "m")
    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())
    video = write_mp4(tmp_path / "x.webm", clip(0, 8, 0), codec="libvpx-vp9")
    assert main(["explain", str(tmp_path / "m"), str(video), "--backbone", "tiny", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "x.webm is a video" in err and "'posthoc'" in err and "'motif'" in err


# -- the report's video section ---------------------------------------------------------------------

def test_video_section_has_the_three_views_and_one_thumbnail_per_window(fitted):
    model, feats, paths, _ = fitted
    i = 4
    thumbs = window_thumbnails(paths[i], model.video_sampling())
    assert len(thumbs) == len(feats.windows[i]) == 4
    np.testing.assert_array_equal(thumbs[1], read_windows(paths[i], SAMPLING).frames[1][0])
    page = video_section(model, feats, i, thumbs, maps=2)
    for view in ("global", "local", "attention"):
        assert f"id='video-{i}-{view}'" in page
    assert page.count("data:image/png;base64,") == 4
    assert page.count("class='attention-map'") == 2
    assert page.count("<rect x=") == 2 * 4 * 4  # two 4 x 4 heat maps
    # the bars are the global importance, largest first
    g = [float(v) for v in re.findall(r"<text x='[\d.]+' y='\d+' font-size='11'>([+-][\d.]+)</text>", page)]
    assert len(g) == len(CONCEPTS) and g == sorted(g, reverse=True)
    with pytest.raises(ConfigError, match="3 thumbnails for a video of 4 windows"):
        video_section(model, feats, i, thumbs[:3])


def test_video_section_escapes_names(fitted):
    import copy

    model, feats, _, _ = fitted
    model = copy.deepcopy(model)
    evil = "<script>alert(1)</script>"
    model.concepts_ = [evil, *model.concepts_[1:]]
    model.classes_ = (evil, *model.classes_[1:])
    page = build_video_report(model, feats, indices=[0])
    assert "<script" not in page and html.escape(evil) in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="Debian's chromium is not installed")
def test_video_report_in_a_real_browser(fitted, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    model, feats, paths, _ = fitted
    thumbs = {i: window_thumbnails(paths[i], model.video_sampling()) for i in (2, 4)}
    page = tmp_path / "video.html"
    page.write_text(build_video_report(model, feats, thumbs))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        driver.get(page.as_uri())
        for i in (2, 4):
            for view in ("global", "local", "attention"):
                el = driver.find_element(By.ID, f"video-{i}-{view}")
                assert el.is_displayed() and el.size["width"] > 50 and el.size["height"] > 50, view
            section = driver.find_element(By.ID, f"video-{i}")
            imgs = section.find_elements(By.CSS_SELECTOR, "img.window-thumb")
            assert len(imgs) == len(feats.windows[i])
            # every thumbnail decoded (a broken data URI has naturalWidth 0) and is on screen
            assert all(driver.execute_script("return arguments[0].naturalWidth", im) > 0 for im in imgs)
            assert all(im.is_displayed() for im in imgs)
            plot = section.find_element(By.CSS_SELECTOR, "svg.time-plot")
            assert plot.is_displayed() and plot.size["width"] == 64 * len(feats.windows[i])
            maps = section.find_elements(By.CSS_SELECTOR, "svg.attention-map")
            assert len(maps) == 3 and all(m.is_displayed() for m in maps)
    finally:
        driver.quit()
