"""Video decoding, windows, video datasets, the generated moving-fashion set, and the video encode cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("av")

from conceptlens.data.moving_fashion import write_mp4
from conceptlens.data.video import (
    VideoSampling,
    decode_video,
    load_video_folder,
    load_video_manifest,
    read_windows,
    sample_indices,
    window_bounds,
)
from conceptlens.errors import ConfigError, DataError
from conceptlens.features.video_encode import encode_videos
from conceptlens.testing import TinyBackbone


def grey_ramp(n: int, size: int = 32) -> np.ndarray:
    """n frames whose grey level is 10 * frame index: each decoded frame says which it is."""
    return np.stack([np.full((size, size), 10 * i, np.uint8) for i in range(n)])


def level(frame: np.ndarray) -> int:
    return round(frame.mean() / 10)


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9")])
def test_decode_generated_files_frame_by_frame(tmp_path, suffix, codec):
    path = write_mp4(tmp_path / f"ramp{suffix}", grey_ramp(20), codec=codec)
    frames = decode_video(path)
    assert frames.shape == (20, 32, 32, 3) and frames.dtype == np.uint8
    assert [level(f) for f in frames] == list(range(20))  # every frame, in order (lossy, within 5 levels)


def test_windows_non_overlapping_default_last_shorter(tmp_path):
    path = write_mp4(tmp_path / "v.mp4", grey_ramp(20))
    vw = read_windows(path)
    assert vw.bounds == [(0, 8), (8, 16), (16, 20)] and vw.n_frames == 20
    # the reference's rule for one frame per window: the window's first frame
    assert [level(f[0]) for f in vw.frames] == [0, 8, 16]
    assert vw.spans[0] == (0.0, 7 / 8)  # seconds, at 8 fps
    three = read_windows(path, VideoSampling(window=8, frames_per_window=3))
    assert [[level(x) for x in f] for f in three.frames] == [[0, 4, 7], [8, 12, 15], [16, 18, 19]]
    centre = read_windows(path, VideoSampling(window=8, sampling="center"))
    assert [level(f[0]) for f in centre.frames] == [4, 12, 18]


@pytest.mark.parametrize("n,window,stride", [(20, 8, None), (20, 8, 4), (7, 8, None), (17, 5, 7), (16, 8, 8)])
def test_window_bounds_match_the_streamed_windows_and_brute_force(tmp_path, n, window, stride):
    step = stride or window
    brute = []
    for s in range(0, n, step):  # every start until one window reaches the end
        brute.append((s, min(s + window, n)))
        if s + window >= n:
            break
    assert window_bounds(n, window, stride) == brute
    path = write_mp4(tmp_path / "v.mp4", grey_ramp(n))
    vw = read_windows(path, VideoSampling(window=window, stride=stride))
    assert vw.bounds == brute and [level(f[0]) for f in vw.frames] == [a for a, _ in brute]


def test_sample_indices_reference_rule():
    # the reference's _sample_indices: step (n-1)/(k-1), rounded
    assert sample_indices(8, 3) == [round(i * 3.5) for i in range(3)] == [0, 4, 7]
    assert sample_indices(8, 1) == [0] and sample_indices(3, 5) == [0, 1, 2] and sample_indices(0, 1) == []
    r = sample_indices(8, 3, "random", np.random.default_rng(0))
    assert len(set(r)) == 3 and all(0 <= i < 8 for i in r)


def test_one_frame_video(tmp_path):
    vw = read_windows(write_mp4(tmp_path / "one.mp4", grey_ramp(1)))
    assert vw.bounds == [(0, 1)] and len(vw.frames) == 1 and vw.frames[0].shape == (1, 32, 32, 3)


def write_dataset(root, n_frames=(20, 9, 1, 13)):
    for i, n in enumerate(n_frames):
        write_mp4(root / ("ramp" if i % 2 else "flat") / f"{i}.mp4", grey_ramp(n) if i % 2 else np.full(
            (n, 32, 32), 200, np.uint8))
    return load_video_folder(root)


def test_folder_and_manifest(tmp_path):
    (tmp_path / "v" / "flat").mkdir(parents=True)
    (tmp_path / "v" / "flat" / "notes.txt").write_text("not a video")
    ds = write_dataset(tmp_path / "v")
    assert ds.classes == ("flat", "ramp") and list(ds.labels) == [0, 0, 1, 1]
    assert ds.ids == ("flat/0.mp4", "flat/2.mp4", "ramp/1.mp4", "ramp/3.mp4")
    (tmp_path / "m.csv").write_text("path,label,split\nv/ramp/1.mp4,up,train\nv/flat/0.mp4,still,test\n")
    m = load_video_manifest(tmp_path / "m.csv")
    assert m.classes == ("up", "still") and m.split == ("train", "test") and len(m) == 2
    assert list(m.split_indices("test")) == [1]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_folder_dangling_class_link_is_an_error_and_loose_files_are_named(tmp_path, caplog):
    import logging

    write_dataset(tmp_path / "v")
    (tmp_path / "v" / "stray.mp4").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        assert len(load_video_folder(tmp_path / "v")) == 4
    assert "at the top of" in caplog.text and "stray.mp4" in caplog.text
    os.symlink(tmp_path / "gone", tmp_path / "v" / "jump")
    with pytest.raises(DataError, match=r"/jump is a symbolic link to .*gone, which does not exist"):
        load_video_folder(tmp_path / "v")


def test_zero_byte_and_undecodable_videos_fail_naming_the_file_or_are_skipped(tmp_path):
    from fractions import Fraction

    import av

    root = tmp_path / "v"
    ds = write_dataset(root)
    (root / "flat" / "empty.mp4").write_bytes(b"")
    (root / "ramp" / "garbage.mp4").write_bytes(b"\x00\x01not a video at all" * 50)
    # a valid mp4 container whose three H.264 packets are junk: it opens, no frame decodes
    with av.open(str(root / "ramp" / "noframes.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for t in range(3):
            packet = av.Packet(bytes(range(200)))
            packet.stream, packet.pts, packet.dts, packet.time_base = s, t, t, Fraction(1, 8)
            c.mux(packet)
    ds = load_video_folder(root)
    i = ds.ids.index("flat/empty.mp4")
    with pytest.raises(DataError, match=r"empty\.mp4.*zero-byte.*on_error='skip'"):
        ds.windows(i, ds.read(i))
    j = ds.ids.index("ramp/noframes.mp4")
    with pytest.raises(DataError, match=r"noframes\.mp4 has no decodable frames"):
        ds.windows(j, ds.read(j))
    g = ds.ids.index("ramp/garbage.mp4")
    with pytest.raises(DataError, match=r"garbage\.mp4.*not a readable video"):
        ds.windows(g, ds.read(g))
    with pytest.raises(DataError, match="empty.mp4"):
        encode_videos(TinyBackbone(), ds, cache=tmp_path / "cache")
    out = encode_videos(TinyBackbone(), ds, cache=tmp_path / "cache", on_error="skip")
    assert sorted(i for i, _ in out.skipped) == ["flat/empty.mp4", "ramp/garbage.mp4", "ramp/noframes.mp4"]
    assert len(out) == 4


def test_encode_matches_direct_encoding_and_the_cache_resumes(tmp_path):
    ds = write_dataset(tmp_path / "v")
    sampling = VideoSampling(window=4, frames_per_window=2)
    bb = TinyBackbone()
    first = encode_videos(bb, ds.subset([0, 2]), sampling, cache=tmp_path / "cache")
    done = bb.encoded
    full = encode_videos(bb, ds, sampling, cache=tmp_path / "cache", batch_size=3)
    # resume: only flat/2 (1 frame: one window of 1) and ramp/3 (13 frames: windows of 4, 4, 4, 1,
    # 2 frames sampled from each full one) were encoded now: 1 + (2 + 2 + 2 + 1) frames
    expected = 8
    assert bb.encoded - done == expected
    again = encode_videos(bb, ds, sampling, cache=tmp_path / "cache")
    assert bb.encoded - done == expected  # everything read back
    # independent reference: the backbone on each window's sampled frames, averaged, normalised
    ref_bb = TinyBackbone()
    for i in range(len(ds)):
        vw = read_windows(ds.paths[i], sampling)
        want = np.stack([ref_bb.encode_images(list(f))["embedding"].mean(0) for f in vw.frames])
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(full.windows[i], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(again.windows[i], full.windows[i])
        assert [tuple(s) for s in full.spans[i]] == vw.bounds
    np.testing.assert_array_equal(first.windows[1], full.windows[2])
    assert full.lengths.tolist() == [5, 1, 3, 4] and full.features[0].shape == (5, 4)
    # the sampling travels with the features (a motif model keeps it for `conceptlens explain`)
    assert full.sampling == sampling and full.rows([1]).sampling == sampling
    # another sampling is another cache namespace: encoded afresh
    encode_videos(bb, ds.subset([1]), VideoSampling(window=8), cache=tmp_path / "cache")
    assert bb.encoded - done == expected + 1
    mean = full.mean_bundle()
    assert mean.embedding.shape == (4, 6)
    np.testing.assert_allclose(np.linalg.norm(mean.embedding, axis=1), 1, rtol=1e-5)


def test_bad_sampling_is_a_config_error():
    with pytest.raises(ConfigError, match="frames_per_window"):
        VideoSampling(window=2, frames_per_window=3).validate()
    with pytest.raises(ConfigError, match="sampling must be one of"):
        VideoSampling(sampling="middle").validate()
    with pytest.raises(ConfigError, match="window must be an integer"):
        VideoSampling(window=0).validate()


def test_moving_fashion_is_deterministic_and_has_order_classes(tmp_path):
    from conceptlens.data.fashion_mnist import search_dirs
    from conceptlens.data.moving_fashion import class_items, generate_moving_fashion

    if not any((d / "t10k-images-idx3-ubyte.gz").is_file() for d in search_dirs()):
        pytest.skip("dataset-fashion-mnist not installed")
    a, kinds = generate_moving_fashion(tmp_path / "a", per_class=(2, 1, 1), seed=3)
    b, _ = generate_moving_fashion(tmp_path / "b", per_class=(2, 1, 1), seed=3)
    assert len(a) == 24 and a.split.count("test") == 6
    assert [p.read_bytes() for p in a.paths] == [p.read_bytes() for p in b.paths]
    assert list(kinds.values()).count("order") == 4 and class_items("sneaker then bag") == ["sneaker", "bag"]
    lengths = [len(read_windows(p)) for p in a.paths]
    assert min(lengths) >= 3 and max(lengths) <= 7
    # an order clip shows its first item early and its second late: the frame-averaged means are
    # the same kind of picture for both orders, the sequences are not
    i = a.classes.index("sneaker then bag")
    video = decode_video(a.paths[int(np.flatnonzero(a.labels == i)[0])])
    lit = [f.mean() > 5 for f in video]
    assert sum(lit) >= 20 and not all(lit)
