"""The feature cache: hits, misses on every part of the key, corrupt images, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tiny_backbone import TinyBackbone

from conceptlens.data import load_image_folder
from conceptlens.errors import DataError
from conceptlens.features import FeatureCache, encode_dataset, encode_texts

TESTS = Path(__file__).parent


def test_hit_returns_identical_features_without_encoding(grey_dataset, tmp_path):
    first = encode_dataset(TinyBackbone(), grey_dataset, tmp_path, batch_size=16, progress=False)
    again_bb = TinyBackbone()
    again = encode_dataset(again_bb, grey_dataset, tmp_path, batch_size=16, progress=False)
    assert again_bb.encoded == 0
    np.testing.assert_array_equal(first.embedding, again.embedding)
    np.testing.assert_array_equal(first.features, again.features)
    assert first.ids == list(grey_dataset.ids) and first.labels.tolist() == grey_dataset.labels.tolist()
    # and they equal a direct, uncached encoding
    direct = TinyBackbone().encode_images(
        [grey_dataset.images.decode(i, grey_dataset.images.read(i)) for i in range(60)])
    np.testing.assert_allclose(first.embedding, direct["embedding"], rtol=1e-6, atol=1e-6)
    norms = np.linalg.norm(first.embedding, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_changed_weights_or_preprocessing_is_a_miss(grey_dataset, tmp_path):
    encode_dataset(TinyBackbone(seed=0), grey_dataset, tmp_path, progress=False)
    other_weights = TinyBackbone(seed=1)
    encode_dataset(other_weights, grey_dataset, tmp_path, progress=False)
    assert other_weights.encoded == 60
    other_pre = TinyBackbone(seed=0, size=4)
    out = encode_dataset(other_pre, grey_dataset, tmp_path, progress=False)
    assert other_pre.encoded == 60
    assert not np.allclose(out.embedding, encode_dataset(TinyBackbone(), grey_dataset, tmp_path,
                                                         progress=False).embedding)


def test_changed_image_bytes_is_a_miss(grey_dataset, tmp_path):
    encode_dataset(TinyBackbone(), grey_dataset, tmp_path, progress=False)
    grey_dataset.images.array.setflags(write=True)
    grey_dataset.images.array[5, 0, 0] ^= 0xFF
    bb = TinyBackbone()
    encode_dataset(bb, grey_dataset, tmp_path, progress=False)
    assert bb.encoded == 1


def test_duplicate_images_encoded_once(grey_dataset, tmp_path):
    twice = grey_dataset.subset(list(range(10)) * 2)
    bb = TinyBackbone()
    out = encode_dataset(bb, twice, tmp_path, progress=False)
    assert bb.encoded == 10 and len(out) == 20
    np.testing.assert_array_equal(out.embedding[:10], out.embedding[10:])


def test_corrupt_image_fail_or_skip(image_folder, tmp_path):
    (image_folder / "dog" / "9.png").write_bytes(b"garbage")
    data = load_image_folder(image_folder)
    with pytest.raises(DataError, match=r"dog/9\.png"):
        encode_dataset(TinyBackbone(), data, tmp_path / "c", progress=False)
    out = encode_dataset(TinyBackbone(), data, tmp_path / "c", on_error="skip", progress=False)
    assert len(out) == 12 and "dog/9.png" not in out.ids
    assert [i for i, _ in out.skipped] == ["dog/9.png"]


def test_text_cache(tmp_path):
    bb = TinyBackbone()
    calls = []
    original = bb.encode_texts
    bb.encode_texts = lambda texts: calls.append(list(texts)) or original(texts)
    a = encode_texts(bb, ["red crest", "laces", "red crest"], tmp_path)
    b = encode_texts(bb, ["laces", "wings"], tmp_path)
    assert calls == [["red crest", "laces"], ["wings"]]
    np.testing.assert_array_equal(a[1], b[0])
    np.testing.assert_array_equal(a[0], a[2])


def test_damaged_shard_is_a_miss_not_an_error(grey_dataset, tmp_path):
    encode_dataset(TinyBackbone(), grey_dataset, tmp_path, batch_size=30, progress=False)
    cache_dir = next(tmp_path.iterdir())
    shard = sorted(cache_dir.glob("shard-*"))[0]
    shard.write_bytes(b"truncated")
    bb = TinyBackbone()
    encode_dataset(bb, grey_dataset, tmp_path, batch_size=30, progress=False)
    assert bb.encoded == 30


def test_killed_run_resumes_without_redoing_finished_batches(tmp_path):
    """A run killed mid-way (SIGKILL, no cleanup) keeps its finished batches."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", arr)
    script = textwrap.dedent(f"""
        import numpy as np
        from conceptlens.data import ImageDataset
        from conceptlens.data.images import ArrayImages
        from conceptlens.features import encode_dataset
        from tiny_backbone import TinyBackbone
        arr = np.load({str(tmp_path / 'images.npy')!r})
        data = ImageDataset("r", ("a", "b", "c"), np.arange(300) % 3,
                            tuple(str(i) for i in range(300)), ArrayImages(arr))
        encode_dataset(TinyBackbone(delay=0.2, announce=True), data, {str(tmp_path / 'cache')!r},
                       batch_size=10, progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                          text=True) as proc:
        seen = 0
        for line in proc.stdout:
            seen += line.startswith("encoded")
            if seen == 5:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    from conceptlens.data import ImageDataset
    from conceptlens.data.images import ArrayImages

    data = ImageDataset("r", ("a", "b", "c"), np.arange(300) % 3,
                        tuple(str(i) for i in range(300)), ArrayImages(arr))
    bb = TinyBackbone()
    cache = FeatureCache(tmp_path / "cache", backbone=bb.id, preprocess=bb.preprocess_id,
                         kind="image")
    done = len(cache)
    assert 40 <= done < 300 and done % 10 == 0  # whole batches only, killed mid-way
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    resumed = encode_dataset(bb, data, cache, batch_size=10, progress=False)
    assert bb.encoded == 300 - done
    fresh = encode_dataset(TinyBackbone(), data, tmp_path / "fresh", batch_size=10, progress=False)
    np.testing.assert_array_equal(resumed.embedding, fresh.embedding)
