"""Distributed encoding on a real local Ray cluster: a head node and one worker node (two raylets),
loopback only, two logical CPUs each. The reference is the local encode: the cache a Ray run
writes must hold the same shard files, with the same keys, checksums and tensor bytes."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conceptlens.data import ImageDataset, load_image_folder
from conceptlens.data.images import ArrayImages
from conceptlens.errors import ConfigError, DataError
from conceptlens.features import encode_dataset
from conceptlens.features.ray_encode import encode_dataset_ray
from conceptlens.testing import TinyBackbone

TESTS = Path(__file__).parent
# Loopback only: Ray otherwise swaps 127.0.0.1 in a cluster address for the machine's outward IP
# (`resolve_ip_for_localhost`), which a sandbox may not route. Despite its name this switch
# only picks the node IP; the test cluster still has two nodes. Read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

try:
    import ray
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed")
# Ray Data's own DataContext() sets an option it deprecates itself; nothing we can change
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


def _cache_files(root: Path) -> dict[str, object]:
    """Every file of a cache root: namespace.json's bytes; for a shard, its parsed header and the
    bytes after it. (safetensors writes its __metadata__ map in a per-process hash order, so only
    the order of those two entries in the header may differ between two writes of one shard.)"""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir() or path.name.startswith("."):  # temporary files: never read as shards
            continue
        raw = path.read_bytes()
        if path.suffix == ".safetensors":
            n = struct.unpack("<Q", raw[:8])[0]
            out[str(path.relative_to(root))] = (json.loads(raw[8 : 8 + n]), raw[8 + n :])
        else:
            out[str(path.relative_to(root))] = raw
    return out


def _assert_same_bundle(a, b) -> None:
    assert a.ids == b.ids and a.labels.tolist() == b.labels.tolist() and a.backbone_id == b.backbone_id
    def reasons(bundle):  # PIL's message names an object's address, which differs by process
        return sorted((i, re.sub(r"0x[0-9a-f]+", "0x?", r)) for i, r in bundle.skipped)

    assert reasons(a) == reasons(b)
    for name in ("embedding", "features", "embedding_norm"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def _random_dataset(n: int, seed: int = 1) -> ImageDataset:
    arr = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return ImageDataset("r", ("a", "b", "c"), np.arange(n) % 3, tuple(f"r/{i}" for i in range(n)),
                        ArrayImages(arr))


def tiny_with_pid(pid_dir: str, delay: float) -> TinyBackbone:
    """A TinyBackbone that leaves its process id in `pid_dir` (how the test finds the actors)."""
    Path(pid_dir, str(os.getpid())).touch()
    return TinyBackbone(delay=delay)


@pytest.fixture(scope="module")
def cluster():
    if ray is None:
        pytest.skip("ray is not installed")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "object_store_memory": 80 * 2**20, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        c.add_node(**node)
        # the workers import this module (the pid factory) from its folder
        path = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
        ray.init(address=c.address, runtime_env={"env_vars": {"PYTHONPATH": path}},
                 logging_level="WARNING")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_missing_ray_is_a_config_error_naming_the_extra(monkeypatch, grey_dataset, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when not installed
    with pytest.raises(ConfigError, match=r"pip install 'conceptlens\[ray\]'"):
        encode_dataset_ray(TinyBackbone, grey_dataset, tmp_path, progress=False)


@needs_ray
def test_bad_options_are_config_errors(grey_dataset, tmp_path):
    with pytest.raises(ConfigError, match="workers must be an integer >= 1; got 0"):
        encode_dataset_ray(TinyBackbone, grey_dataset, tmp_path, workers=0, progress=False)
    with pytest.raises(ConfigError, match="on_error must be one of"):
        encode_dataset_ray(TinyBackbone, grey_dataset, tmp_path, on_error="ignore", progress=False)
    with pytest.raises(ConfigError, match="returned int, not a conceptlens Backbone"):
        encode_dataset_ray(lambda: 3, grey_dataset, tmp_path, progress=False)


@needs_ray
def test_cluster_writes_the_local_cache_bit_for_bit(cluster, image_folder, tmp_path):
    (image_folder / "dog" / "9.png").write_bytes(b"garbage")
    shutil.copy(image_folder / "cat" / "0.png", image_folder / "cat" / "9.png")  # same bytes twice
    data = load_image_folder(image_folder)
    local = encode_dataset(TinyBackbone(), data, tmp_path / "local", batch_size=3, on_error="skip",
                           progress=False)
    dist = encode_dataset_ray(TinyBackbone, data, tmp_path / "ray", workers=2, batch_size=3,
                              on_error="skip", progress=False)
    files = _cache_files(tmp_path / "local")
    # 13 distinct files (12 images and the garbage), 3 a batch; the garbage's batch keeps 2 rows
    assert len([f for f in files if f.endswith(".safetensors")]) == 5
    assert _cache_files(tmp_path / "ray") == files
    _assert_same_bundle(dist, local)
    assert [i for i, _ in dist.skipped] == ["dog/9.png"] and len(dist) == 13

    with pytest.raises(DataError, match=r"dog/9\.png"):  # on_error='fail' names the file, as locally
        encode_dataset_ray(TinyBackbone, data, tmp_path / "fail", workers=1, batch_size=3,
                           progress=False)


@needs_ray
def test_a_worker_killed_mid_run_is_survived(cluster, tmp_path):
    data = _random_dataset(64)
    pids = tmp_path / "pids"
    pids.mkdir()
    root = tmp_path / "ray"
    result: dict[str, object] = {}

    def run():
        try:
            result["out"] = encode_dataset_ray(
                functools.partial(tiny_with_pid, str(pids), 0.4), data, root, workers=2,
                batch_size=4, progress=False)
        except BaseException as e:  # re-raised below, in the test's thread
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()

    def actors() -> list[int]:  # the driver opens a backbone too: never kill ourselves
        return sorted(int(p.name) for p in pids.iterdir() if int(p.name) != os.getpid())

    deadline = time.monotonic() + 90
    while (len(actors()) < 2 or not list(root.rglob("shard-*"))) and time.monotonic() < deadline:
        assert thread.is_alive(), result
        time.sleep(0.05)
    first = actors()
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    written_at_kill = len(list(root.rglob("shard-*")))
    thread.join(timeout=120)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    assert len(first) == 2 and 1 <= written_at_kill < 16  # killed with batches still to do
    assert len(actors()) > len(first)  # a replacement actor opened its own backbone

    local = encode_dataset(TinyBackbone(), data, tmp_path / "local", batch_size=4, progress=False)
    assert _cache_files(root) == _cache_files(tmp_path / "local")
    _assert_same_bundle(result["out"], local)


@needs_ray
def test_resume_mixes_local_and_ray_either_way(cluster, grey_dataset, tmp_path):
    every = encode_dataset(TinyBackbone(), grey_dataset, tmp_path / "all", batch_size=10, progress=False)
    reference = _cache_files(tmp_path / "all")
    first_half = grey_dataset.subset(range(30))  # whole batches, so the shards are the same

    encode_dataset(TinyBackbone(), first_half, tmp_path / "local-then-ray", batch_size=10, progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "local-then-ray").rglob("shard-*")}
    out = encode_dataset_ray(TinyBackbone, grey_dataset, tmp_path / "local-then-ray", workers=2,
                             batch_size=10, progress=False)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the local shards were not redone
    assert _cache_files(tmp_path / "local-then-ray") == reference
    _assert_same_bundle(out, every)

    encode_dataset_ray(TinyBackbone, first_half, tmp_path / "ray-then-local", workers=2,
                       batch_size=10, progress=False)
    bb = TinyBackbone()
    out = encode_dataset(bb, grey_dataset, tmp_path / "ray-then-local", batch_size=10, progress=False)
    assert bb.encoded == 30  # only the half Ray did not do
    assert _cache_files(tmp_path / "ray-then-local") == reference
    _assert_same_bundle(out, every)


def test_encode_command_hands_its_ray_options_to_encode_dataset_ray(monkeypatch, image_folder, tmp_path):
    """The CLI's wiring only (no cluster): what `conceptlens encode --ray ...` asks for."""
    import conceptlens.backbones
    import conceptlens.features.ray_encode as ray_encode
    from conceptlens._io import load_tensors
    from conceptlens.cli import main

    calls = []
    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())

    def fake(spec, data, cache, **options):
        calls.append((spec, cache, {k: v for k, v in options.items() if k != "backbone"}))
        return encode_dataset(options["backbone"], data, cache, progress=False)

    monkeypatch.setattr(ray_encode, "encode_dataset_ray", fake)
    out = tmp_path / "f.safetensors"
    assert main(["encode", str(image_folder), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--ray", "10.0.0.1:6379", "--ray-workers", "3", "--ray-gpus-per-worker", "0.5",
                 "--batch-size", "5", "--no-progress"]) == 0
    assert calls == [("offline", tmp_path / "c" / "features",
                      {"address": "10.0.0.1:6379", "workers": 3, "batch_size": 5, "num_gpus": 0.5,
                       "cpus_per_worker": 1.0, "on_error": "fail", "progress": False,
                       "text_cache_dir": str(tmp_path / "c")})]
    assert len(load_tensors(out)[0]["embedding"]) == 12
