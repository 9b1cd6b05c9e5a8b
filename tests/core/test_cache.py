"""The feature cache: hits, misses on every part of the key, corrupt images, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conceptlens.data import load_image_folder
from conceptlens.errors import DataError
from conceptlens.features import FeatureCache, encode_dataset, encode_texts
from conceptlens.testing import TinyBackbone


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
    original = bb.encode_texts_with_norms  # what the text cache calls
    bb.encode_texts_with_norms = lambda texts: calls.append(list(texts)) or original(texts)
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
        from conceptlens.testing import TinyBackbone
        arr = np.load({str(tmp_path / 'images.npy')!r})
        data = ImageDataset("r", ("a", "b", "c"), np.arange(300) % 3,
                            tuple(str(i) for i in range(300)), ArrayImages(arr))
        encode_dataset(TinyBackbone(delay=0.2, announce=True), data, {str(tmp_path / 'cache')!r},
                       batch_size=10, progress=False)
    """)
    env = dict(os.environ)
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
    # a kill inside a shard's write can leave its temporary file: never renamed, so never read
    assert all(p.name.startswith(".") for p in (tmp_path / "cache").rglob("*.tmp"))
    resumed = encode_dataset(bb, data, cache, batch_size=10, progress=False)
    assert bb.encoded == 300 - done
    fresh = encode_dataset(TinyBackbone(), data, tmp_path / "fresh", batch_size=10, progress=False)
    np.testing.assert_array_equal(resumed.embedding, fresh.embedding)


def _data_start(path: Path) -> int:
    """Where a safetensors file's tensor data begins: after the 8-byte little-endian header
    length and the JSON header."""
    import struct

    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_flipped_bytes_in_a_shard_are_a_miss_recomputed(grey_dataset, tmp_path, caplog):
    import logging

    from safetensors.numpy import load_file

    fresh = encode_dataset(TinyBackbone(), grey_dataset, tmp_path / "fresh", progress=False)
    encode_dataset(TinyBackbone(), grey_dataset, tmp_path / "c", batch_size=20, progress=False)
    shard = sorted(next((tmp_path / "c").iterdir()).glob("shard-*"))[1]
    raw = bytearray(shard.read_bytes())
    raw[_data_start(shard) + 3] ^= 0x40  # an exponent bit of the first float
    shard.write_bytes(bytes(raw))
    assert np.abs(load_file(str(shard))["embedding"]).max() > 1e30  # what a plain read returns
    bb = TinyBackbone()
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        out = encode_dataset(bb, grey_dataset, tmp_path / "c", batch_size=20, progress=False)
    assert bb.encoded == 20  # exactly the damaged shard's images
    assert shard.name in caplog.text and "sha256" in caplog.text
    np.testing.assert_array_equal(out.embedding, fresh.embedding)
    np.testing.assert_array_equal(out.features, fresh.features)
    # the recomputed batch replaced the damaged shard: the next run encodes nothing
    again = TinyBackbone()
    encode_dataset(again, grey_dataset, tmp_path / "c", batch_size=20, progress=False)
    assert again.encoded == 0


def test_shard_without_checksum_or_with_wrong_rows_is_a_miss(tmp_path):
    from safetensors.numpy import save_file

    cache = FeatureCache(tmp_path, kind="t")
    cache.put(["a", "b"], {"embedding": np.ones((2, 3), np.float32)})
    save_file({"embedding": np.ones((1, 3), np.float32)}, str(cache.dir / "shard-legacy.safetensors"),
              metadata={"keys": json.dumps(["c"])})  # no checksum: an older conceptlens
    from conceptlens._io import save_tensors

    save_tensors(cache.dir / "shard-rows.safetensors", {"embedding": np.ones((1, 3), np.float32)},
                 {"keys": json.dumps(["d", "e"])})  # two keys, one row
    fresh = FeatureCache(tmp_path, kind="t")
    assert len(fresh) == 5  # the index reads headers only
    assert "a" in fresh and "c" not in fresh and "d" not in fresh and "e" not in fresh
    np.testing.assert_array_equal(fresh.get(["b", "a"])["embedding"], np.ones((2, 3)))
    with pytest.raises(DataError, match="not in the feature cache"):
        fresh.get(["a", "c"])


def test_a_key_in_a_damaged_shard_falls_back_to_a_good_copy(tmp_path):
    cache = FeatureCache(tmp_path, kind="t")
    # named so that the damaged shard is indexed first for "y"
    bad = cache.put(["x", "y"], {"embedding": np.zeros((2, 2), np.float32)}).rename(
        cache.dir / "shard-0.safetensors")
    cache.put(["y", "z"], {"embedding": np.full((2, 2), 7.0, np.float32)}).rename(
        cache.dir / "shard-1.safetensors")
    raw = bytearray(bad.read_bytes())
    raw[-1] ^= 0x01
    bad.write_bytes(bytes(raw))
    again = FeatureCache(tmp_path, kind="t")
    assert "x" not in again and "y" in again
    np.testing.assert_array_equal(again.get(["y"])["embedding"], [[7.0, 7.0]])



def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; results and models must be readable like any other file
    (0666 less the process umask, as open() would make them)."""
    import os

    from conceptlens._io import write_text

    mask = os.umask(0)
    os.umask(mask)
    path = write_text(tmp_path / "r.json", "{}")
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask
    assert (path.stat().st_mode & 0o044) or mask & 0o044  # readable by others unless umask says no


def test_shards_from_an_older_conceptlens_are_warned_about_once(tmp_path, caplog):
    """Many pre-checksum shards (an upgrade) give one warning, not one per shard."""
    import logging

    from safetensors.numpy import save_file

    cache = FeatureCache(tmp_path, kind="t")
    cache.dir.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        save_file({"embedding": np.ones((1, 3), np.float32)}, str(cache.dir / f"shard-old{i}.safetensors"),
                  metadata={"keys": json.dumps([f"k{i}"])})
    fresh = FeatureCache(tmp_path, kind="t")
    with caplog.at_level(logging.WARNING, logger="conceptlens"):
        assert not any(f"k{i}" in fresh for i in range(3))
    assert caplog.text.count("older conceptlens") == 1
