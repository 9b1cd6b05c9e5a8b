"""The encode stage on a Ray cluster: the same cache shards as `encode_dataset`, written by many workers.

    bundle = encode_dataset_ray("offline", dataset, "/shared/cache/features", address="auto", workers=8)

Two Ray Data passes, then a read-back:

1. keys: Ray tasks read every item (`images.read(i)`: a file's bytes, or an array row) and
   hash it exactly as the local path does (`content_key(key_prefix + bytes)`); only the keys
   travel back to the driver. The driver keeps the items whose key is not in the cache, the
   first item of each distinct key, in dataset order.
2. encode: the driver cuts that list into the batches the local path would cut (`batch_size`
   items each, in the same order) and hands each batch, as one row, to a fixed pool of actors
   (one backbone per actor, CPU or GPU). An actor reads, decodes, prepares and encodes its
   batch and writes it as one shard through `FeatureCache.put`: same namespace, same shard
   name (a hash of the batch's keys), same keys, same tensors, written atomically. So a cache
   can be filled partly by `encode_dataset` and partly here, and either resumes the other.
3. the driver reads everything back from the cache into the FeatureBundle `encode_dataset`
   would return (same rows, ids, labels, `skipped`).

Faults: a shard is written only when its whole batch is encoded, through a temporary file
renamed into place, so a killed actor (or driver) loses only the batches in flight. Actors
are restarted (`max_restarts`) and their unfinished batches retried (`max_task_retries`);
a killed driver's finished shards stay, and the next run (local or Ray) skips them.

Where the files must be: every node reads the dataset's files at their paths and writes the
cache under `cache_root`, so on a cluster of several machines both must be on a filesystem
they all see (NFS, a mounted bucket) at the same path; an in-memory dataset (`ArrayImages`)
travels through Ray's object store. Every node needs conceptlens (and the backbone's weights)
installed; each actor checks that it opens a backbone with the driver's id and refuses
otherwise, so no worker writes features of other weights into the namespace.

Bit-for-bit: the shards equal the local path's when each batch gives the same floats on the
actor as on the driver; that holds for the same hardware and torch build. CPU and GPU (or two
GPU types) give slightly different floats; the cache namespace (backbone id) does not tell
them apart, as for the local path. safetensors writes its `__metadata__` map in a
per-process hash order, so two writes of the same shard (local or here) can differ in the
order of the two metadata entries in the header; names, keys, checksums and tensor bytes are
identical (tests/features/test_ray_encode.py compares those).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._io import cache_root as default_cache_root
from ..backbones import Backbone
from ..backbones import open_backbone as open_spec
from ..cache import FeatureCache, content_key
from ..data import ImageDataset
from ..errors import ConfigError, DataError
from .bundle import FeatureBundle
from .encode import ON_ERROR, _progress, bundle_from_cache, encode_dataset, image_cache

log = logging.getLogger("conceptlens")

INSTALL_HINT = "pip install 'conceptlens[ray]'"
# items hashed per Ray task in the key pass: big enough that task overhead (~ms) is small
# next to reading the files, small enough that a lost task redoes little
KEY_BLOCK = 2048

BackboneSpec = str | Callable[[], Backbone]


def require_ray():
    """Import ray (and Ray Data), or say how to install them."""
    try:
        import ray
        import ray.data  # the [data] extra: pyarrow, pandas
    except ImportError as e:
        raise ConfigError(
            f"Distributed encoding needs Ray with Ray Data, which is not installed ({e}). "
            f"Install it with: {INSTALL_HINT} (or pip install 'ray[data]>=2.9'), or encode "
            "locally (drop --ray / [encode] ray)."
        ) from e
    return ray


def connect(address: str = "auto", **init_options) -> bool:
    """Connect this process to a Ray cluster; True when this call did it (then the caller
    shuts the connection down when done), False when Ray was already initialised.

    `address`: 'auto' (the cluster started on this machine with `ray start`, or RAY_ADDRESS),
    'local' (start a throwaway single-machine cluster for this process), or an address such
    as 'HOST:6379' or 'ray://HOST:10001'.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    if not isinstance(address, str) or not address:
        raise ConfigError(f"ray address must be 'auto', 'local' or HOST:PORT; got {address!r}.")
    options = {"include_dashboard": False, "logging_level": logging.WARNING, **init_options}
    try:
        if address == "local":
            ray.init(**options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as e:
        raise ConfigError(
            f"Could not connect to a Ray cluster at {address!r} ({e}). Start one with "
            "`ray start --head` (and `ray start --address HEAD:6379` on the other machines), "
            "pass its address (--ray HOST:6379), or use --ray local for a cluster on this "
            "machine only."
        ) from e
    return True


def open_backbone(spec: BackboneSpec, text_cache_dir: str | Path | None = None) -> Backbone:
    """A backbone from a spec string (as `get_backbone`) or a zero-argument picklable factory
    (a class, a functools.partial): what each actor calls to get its own model."""
    if callable(spec):
        backbone = spec()
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"The backbone factory {spec!r} returned {type(backbone).__name__}, "
                              "not a conceptlens Backbone.")
        return backbone
    if not isinstance(spec, str):
        raise ConfigError(f"backbone must be a spec string (e.g. 'offline') or a factory; got {spec!r}.")
    return open_spec(spec, text_cache_dir)


def encode_dataset_ray(
    backbone_spec: BackboneSpec,
    dataset: ImageDataset,
    cache_root: str | Path | None = None,
    address: str = "auto",
    workers: int = 2,
    batch_size: int = 64,
    num_gpus: float = 0,
    cpus_per_worker: float = 1,
    on_error: str = "fail",
    progress: bool = True,
    text_cache_dir: str | Path | None = None,
    max_restarts: int | None = None,
    max_task_retries: int | None = None,
    backbone: Backbone | None = None,
) -> FeatureBundle:
    """Encode every image of `dataset` on a Ray cluster; returns what `encode_dataset` would.

    `backbone_spec`: what each actor opens ('offline', 'hf:...', or a picklable factory such
    as `functools.partial(MyBackbone, ...)`; a factory's module must be importable on every
    node). `cache_root`: the feature cache root (as `encode_dataset`'s `cache`; None = the
    user cache, which is only shared by a single-machine cluster). `address`: see `connect`.
    `workers`: actors, each with its own backbone, `cpus_per_worker` CPUs (decoding threads
    and torch threads) and `num_gpus` GPUs (fractions share a GPU). `on_error`: as
    `encode_dataset`. `text_cache_dir`: the `--cache-dir` that also holds a backbone's own
    text caches (the offline backbone's class texts). `max_restarts` / `max_task_retries`:
    how often a dead actor is restarted and its batches retried before the run fails; None
    keeps Ray Data's defaults (both without limit: a lost node never fails the run).
    `backbone`: the driver's copy of the model if the caller has one (its id names the cache
    namespace); otherwise the driver opens one from `backbone_spec`.
    """
    ray = require_ray()  # before opening a model: say what is missing first
    _check_options(on_error, batch_size, workers, num_gpus, cpus_per_worker, max_restarts,
                   max_task_retries)
    driver_bb = backbone if backbone is not None else open_backbone(backbone_spec, text_cache_dir)
    if hasattr(driver_bb, "lookup_ids"):  # features the user brought: nothing to compute
        return encode_dataset(driver_bb, dataset, cache_root, progress=progress)
    if isinstance(cache_root, FeatureCache):
        cache_root = cache_root.dir.parent
    # resolved here, so every worker writes where the driver reads (not its own home folder)
    root = Path(cache_root or default_cache_root() / "features").absolute()
    if len(dataset) == 0:
        return encode_dataset(driver_bb, dataset, root, progress=False)
    if hasattr(driver_bb, "tower"):  # export the ONNX image tower once, before the actors look for it
        driver_bb.tower()

    started = connect(address)
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = False  # ours counts images; Ray's would count blocks
    try:
        holder = [ray.put(dataset.images)]  # in a list: actors fetch it, Ray does not inline it
        keys, skipped = _keys_on_cluster(ray, dataset, holder, on_error)
        cache = image_cache(driver_bb, root)
        todo: dict[str, int] = {}  # unique missing key -> first item with it (as encode_dataset)
        for i, k in enumerate(keys):
            if k is not None and k not in cache and k not in todo:
                todo[k] = i
        if todo:
            _check_capacity(ray, workers, cpus_per_worker, num_gpus)
            skipped += _encode_on_cluster(
                ray, dataset, todo, holder, root, backbone_spec, text_cache_dir, driver_bb,
                workers, batch_size, num_gpus, cpus_per_worker, on_error, progress,
                max_restarts, max_task_retries)
    finally:
        ctx.enable_progress_bars = bars
        if started:
            ray.shutdown()
    # a fresh cache object: the one above indexed the shards before the workers wrote theirs
    return bundle_from_cache(driver_bb, dataset, image_cache(driver_bb, root), keys, skipped)


def _check_options(on_error, batch_size, workers, num_gpus, cpus_per_worker, max_restarts,
                   max_task_retries) -> None:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {ON_ERROR}; got {on_error!r}.")
    for name, value in (("batch_size", batch_size), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1; got {value!r}.")
    if not num_gpus >= 0 or not cpus_per_worker > 0:
        raise ConfigError(f"num_gpus must be >= 0 and cpus_per_worker > 0 (per actor); got "
                          f"{num_gpus!r} and {cpus_per_worker!r}.")
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < -1)
           for v in (max_restarts, max_task_retries)):
        raise ConfigError(f"max_restarts and max_task_retries must be >= 0, or -1 for no limit; "
                          f"got {max_restarts} and {max_task_retries}.")


def _check_capacity(ray, workers, cpus_per_worker, num_gpus) -> None:
    """A pool larger than the cluster waits for nodes that may never come: say so up front."""
    have = ray.cluster_resources()
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * num_gpus}
    short = [f"{need[r]:g} {r} (the cluster has {have.get(r, 0):g})" for r in need
             if need[r] > have.get(r, 0)]
    if short:
        log.warning("The Ray actor pool asks for %s; it waits until an autoscaler adds nodes. "
                    "Lower --ray-workers / --ray-gpus-per-worker if the cluster is fixed.",
                    " and ".join(short))


_LOADED: dict[str, object] = {}  # per worker process: the dataset's images, fetched once


def _images(holder):
    """The dataset's image source from the object store, kept while this worker process is reused
    (unpickling a million file paths per task would cost more than hashing a block)."""
    import ray

    ref = holder[0]
    if ref.hex() not in _LOADED:
        _LOADED.clear()
        _LOADED[ref.hex()] = ray.get(ref)
    return _LOADED[ref.hex()]


def _hash_block(batch: dict[str, np.ndarray], holder) -> dict[str, np.ndarray]:
    """The key pass, per block of item indices: (index, content key or '', error or '')."""
    images = _images(holder)
    prefix = getattr(images, "key_prefix", b"")
    idx = np.asarray(batch["id"], dtype=np.int64)
    keys, errors = [], []
    for i in idx.tolist():
        try:
            keys.append(content_key(prefix + images.read(i)))
            errors.append("")
        except DataError as e:  # reported by the driver, which knows on_error and the ids
            keys.append("")
            errors.append(str(e) or type(e).__name__)
    return {"i": idx, "key": np.asarray(keys, dtype=object), "error": np.asarray(errors, dtype=object)}


def _keys_on_cluster(ray, dataset, holder, on_error) -> tuple[list[str | None], list[tuple[str, str]]]:
    n = len(dataset)
    blocks = max(1, math.ceil(n / KEY_BLOCK))
    ds = ray.data.range(n, override_num_blocks=blocks).map_batches(
        _hash_block, batch_size=None, batch_format="numpy", fn_kwargs={"holder": holder})
    keys: list[str | None] = [None] * n
    errors: dict[int, str] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, k, err in zip(batch["i"].tolist(), batch["key"], batch["error"], strict=True):
            if err:
                errors[i] = str(err)
            else:
                keys[i] = str(k)
    if errors and on_error == "fail":
        first = min(errors)  # the item the local path would have raised on
        raise DataError(errors[first])
    return keys, [(dataset.ids[i], errors[i]) for i in sorted(errors)]


class _Encoder:
    """One actor: its own backbone; encodes whole batches and writes each as one cache shard."""

    def __init__(self, spec, text_cache_dir, expected: tuple[str, str], root: str, holder,
                 on_error: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.backbone = open_backbone(spec, text_cache_dir)
        got = (self.backbone.id, self.backbone.preprocess_id)
        if got != expected:
            raise ConfigError(
                f"A Ray worker opened backbone {got[0]!r} (preprocess {got[1]!r}) but the driver "
                f"has {expected[0]!r} (preprocess {expected[1]!r}): the nodes have different "
                "weights or conceptlens versions. Install the same ones on every node."
            )
        self.images = _images(holder)
        self.writer = _ShardWriter(root, backbone=got[0], preprocess=got[1], kind="image")
        self.on_error = on_error
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _prepare(self, i: int):
        try:
            return self.backbone.prepare(self.images.decode(i, self.images.read(i))), ""
        except DataError as e:
            return None, str(e) or type(e).__name__

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        b = int(batch["b"][0])
        items = json.loads(str(batch["items"][0]))  # [[key, index], ...]
        idx = [i for _, i in items]
        prepared = list(self.pool.map(self._prepare, idx) if self.pool else map(self._prepare, idx))
        bad = [[i, err] for i, (_, err) in zip(idx, prepared, strict=True) if err]
        error = bad[0][1] if bad and self.on_error == "fail" else ""
        ok = [(k, x) for (k, _), (x, _) in zip(items, prepared, strict=True) if x is not None]
        if ok and not error:  # like the local path: a failing batch writes nothing
            with torch.inference_mode():
                outputs = self.backbone.encode_prepared(torch.stack([x for _, x in ok]))
            self.writer.put([k for k, _ in ok], outputs)
        return {"b": np.asarray([b]), "n": np.asarray([len(items)]),
                "skipped": np.asarray([json.dumps(bad)], dtype=object),
                "error": np.asarray([error], dtype=object)}


class _ShardWriter(FeatureCache):
    """`FeatureCache.put` (same shard names, files and atomic write) without the in-memory index
    and tensors: an actor writes thousands of shards and reads none, so it neither globs the
    cache folder nor keeps what it wrote."""

    def _load_index(self) -> dict[str, tuple[Path, int]]:
        return {}

    def put(self, keys, outputs) -> Path:
        path = super().put(keys, outputs)
        self._shards.clear()
        return path


def _encode_on_cluster(ray, dataset, todo, holder, root, spec, text_cache_dir, driver_bb,
                       workers, batch_size, num_gpus, cpus_per_worker, on_error, progress,
                       max_restarts, max_task_retries) -> list[tuple[str, str]]:
    items = [[k, i] for k, i in todo.items()]
    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    # one batch per row and per block: the local path's batches exactly (so the same shards),
    # and a lost actor task redoes one batch
    rows = [{"b": b, "items": json.dumps(batch)} for b, batch in enumerate(batches)]
    threads = max(1, int(cpus_per_worker))
    retries = {k: v for k, v in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries))
               if v is not None}
    with warnings.catch_warnings():
        # Ray Data 2.60 deprecates these remote args with no named replacement yet; they are
        # passed only when the caller sets them (Ray Data's defaults already restart and retry)
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Encoder, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(batches)),
                                               max_tasks_in_flight_per_actor=2),
            fn_constructor_kwargs={"spec": spec, "text_cache_dir": text_cache_dir,
                                   "expected": (driver_bb.id, driver_bb.preprocess_id),
                                   "root": str(root), "holder": holder, "on_error": on_error,
                                   "threads": threads},
            num_cpus=cpus_per_worker, num_gpus=num_gpus or None, **retries,
        )
    skipped: list[tuple[int, int, str]] = []
    with _progress(len(items), f"encode (ray, {workers} workers)", progress) as bar:
        for row in ds.iter_rows():
            if row["error"]:
                # stops the pool; batches already written stay in the cache for the next run
                raise DataError(str(row["error"]))
            skipped += [(int(row["b"]), i, err) for i, err in json.loads(str(row["skipped"]))]
            bar.update(int(row["n"]))
    return [(dataset.ids[i], err) for _, i, err in sorted(skipped)]


