"""The discovery step of a run: what methods that find their own concepts read (DiscoveryInputs).

Discover-then-Name (`dn_cbm`) and V2C-CBM (`v2c`) do not take the run's concept list; they find
concepts in an unlabelled image pool and name them from a vocabulary. `build_discovery` builds,
once per run, only what the configured methods name in their `discovery_needs`:

- "pool": the [discovery] pool encoded through the feature cache (resumable: every finished
  batch is a cache shard; progress bar). "train" is the run's own training images; anything
  else is a dataset spec (`fashion-mnist:train` = the 60,000 training images). Labels are never
  read: only the embeddings (and their raw norms) leave the pool. `pool_size` draws that many
  images with `seed`, before encoding, so a cap also caps the encoding.
- "words": the naming vocabulary (`load_vocabulary`) and its plain text embeddings (no
  template, as the reference names latents), cached by text.
- "sae": the sparse autoencoder, trained on the pool (`sae_for`: cached by backbone id, pool
  fingerprint and parameters, so a second run loads it) or read from a saved file (checked
  against the backbone). Its input is the raw embedding (the reference's raw CLIP outputs)
  when the backbone reports norms, else the L2-normalised one ([discovery] input).
- "codebook": V2C's texts (adjectives, nouns, pairs; `v2c_vocabulary`) and their embeddings
  averaged over prompt templates (`codebook_embeddings`, cached, with a progress bar).

The pool and the SAE never see labels, so a few-shot run builds them once for every k, and a
confounded run reuses them for every pair. The `record` dict (results.json's "discovery")
says what was built: pool size and id, the SAE's id, parameters and training summary,
vocabulary and codebook sizes, and the seconds each step took.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from ..errors import ConceptLensError, ConfigError, DataError
from .config import DiscoveryConfig, split_pool

log = logging.getLogger("conceptlens")
PLAIN_TEMPLATES = ("{}",)  # V2C's "plain" template set: the text itself
NEEDS = ("pool", "words", "sae", "codebook")


# -- the modules that do the work (one seam each, so tests can stand in for them) -----------

def _sae_api():
    from ..discovery import sae

    return sae


def _vocabulary_api():
    from ..discovery import vocabulary

    return vocabulary


def _naming_api():
    from ..discovery import naming

    return naming


def _v2c_api():
    from ..concepts import v2c

    return v2c


# -- what to build ---------------------------------------------------------------------

def discovery_needs(methods: dict) -> set[str] | None:
    """The union of the configured methods' `discovery_needs`; None when no method discovers
    its own concepts (then a run builds nothing)."""
    from ..methods.aliases import method_class

    needs: set[str] | None = None
    for name, params in methods.items():
        cls = method_class(name, params)  # a table's `method` key names the registered method
        from ..methods.tags import get_tags
        tags = get_tags(cls)
        if tags.discovers_concepts:
            needs = (needs or set()) | set(tags.discovery_needs)
    if needs is not None and needs - set(NEEDS):
        raise ConfigError(f"discovery_needs {sorted(needs - set(NEEDS))} are unknown; known: "
                          f"{', '.join(NEEDS)}.")
    return needs


def _pool_dataset(d: DiscoveryConfig, data_cfg):
    """The pool's ImageDataset (labels kept only because the type has them; never read)."""
    from ..data import BUILTIN, COMPOSITE, load_dataset, split_indices

    base, split = split_pool(d.pool)
    fashion = base in BUILTIN or base == COMPOSITE or base.startswith(COMPOSITE + ":")
    options = {"allow_non_ascii": data_cfg.allow_non_ascii, "max_pixels": data_cfg.max_pixels or None}
    if fashion:
        options["root"] = data_cfg.data_dir
        if split in ("train", "test"):  # the official splits
            options["split"] = split
    try:
        data = load_dataset(base, **options)
        if split is not None and "split" not in options:
            data = data.subset(split_indices(data, seed=data_cfg.seed, val_fraction=data_cfg.val_fraction,
                                             test_fraction=data_cfg.test_fraction,
                                             use_given=data_cfg.use_given_split)[split])
    except ConceptLensError as e:
        raise type(e)(f"[discovery] pool = {d.pool!r}: {e}") from e
    if base == data_cfg.dataset and split != "train":
        log.warning("[discovery] pool = %r holds images of the run's own dataset outside its training split; "
                    "the methods then see (unlabelled) test images. Use %r for a strict split.", d.pool,
                    f"{base}:train")
    return data


def _draw(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of n rows drawn by `seed` (all of them when size is 0 or >= n), in order."""
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def load_pool(d: DiscoveryConfig, data_cfg, backbone, cache, train=None, batch_size: int = 64,
              workers: int = 2, progress: bool = True, for_sae: bool = False) -> dict:
    """The pool as {"embedding" (n, d) L2-normalised, "norm" (n,) raw norms or None, "ids",
    "available" (images before the pool_size draw), "spec"}; labels are not returned. `for_sae`:
    refuse a pool too small for the SAE before encoding it."""
    from ..features import encode_dataset

    t = time.perf_counter()
    if d.pool == "train":
        if train is None:
            raise ConfigError('[discovery] pool = "train" is the run\'s own training images; outside a run '
                              'give a dataset spec, e.g. "fashion-mnist:train".')
        rows = _draw(len(train), d.pool_size, d.seed)
        emb, norm, ids, available = train.embedding[rows], train.embedding_norm, train.ids, len(train)
        norm = None if norm is None else norm[rows]
        ids = [ids[i] for i in rows]
    else:
        data = _pool_dataset(d, data_cfg)
        available = len(data)
        data = data.subset(_draw(len(data), d.pool_size, d.seed))
        if for_sae:
            check_pool_size(d, len(data), backbone.embed_dim)
        log.info("[discovery] encoding %d pool images (%s) ...", len(data), d.pool)
        bundle = encode_dataset(backbone, data, cache, batch_size=batch_size, workers=workers,
                                on_error=data_cfg.on_error, progress=progress)
        emb, norm, ids = bundle.embedding, bundle.embedding_norm, list(bundle.ids)
    if not len(ids):
        raise DataError(f"[discovery] pool = {d.pool!r} holds no image; give a dataset with images.")
    log.info("[discovery] pool: %d images (of %d) in %.1fs", len(ids), available, time.perf_counter() - t)
    return {"embedding": np.asarray(emb, np.float32), "norm": None if norm is None else np.asarray(norm),
            "ids": ids, "available": available, "spec": d.pool}


def check_pool_size(d: DiscoveryConfig, n: int, dim: int) -> None:
    """Refuse, before any image is encoded, a pool too small for the SAE to be trained on it
    (n >= expansion x d for an expansion given in [discovery] sae; without one the width follows
    the pool, discovery/sae.py fitted_expansion, which needs n >= d); a saved SAE file needs no
    pool size."""
    if isinstance(d.sae, str):
        return
    expansion = d.sae.get("expansion", 1)
    if isinstance(expansion, int) and not isinstance(expansion, bool) and n < expansion * dim:
        raise ConfigError(
            f"[discovery] pool = {d.pool!r} gives {n} images, too few for an SAE of width expansion x d = "
            f"{expansion} x {dim} = {expansion * dim} (it needs at least as many images as latents). "
            f"Use a larger pool (pool_size = 0 takes every image; another dataset or split), or set "
            f"sae = {{ expansion = {max(n // dim, 1) if n >= dim else 1} }} or less"
            + (f" (the pool is smaller than d = {dim}: no expansion fits; use more images)." if n < dim
               else ".") + " Nothing was encoded yet.")


def resolve_input(mode: str, norm) -> str:
    """'raw' or 'normalised' for [discovery] input ("auto": raw when the norms are known)."""
    if mode == "auto":
        return "raw" if norm is not None else "normalised"
    if mode == "raw" and norm is None:
        raise ConfigError("[discovery] input = 'raw' needs the raw embedding norms, which this backbone (or "
                          "cache entries written before norms were kept) does not give; set input = "
                          "'normalised' or 'auto'.")
    return mode


def sae_input(pool: dict, mode: str) -> np.ndarray:
    """What the SAE is trained on: raw = normalised * norm (the reference's raw CLIP outputs)."""
    emb = pool["embedding"]
    return emb * pool["norm"][:, None].astype(np.float32) if mode == "raw" else emb


def load_sae_file(path: str | Path, backbone_id: str):
    """A saved SAE, refused (ConfigError naming both ids) when trained for another backbone."""
    try:
        return _sae_api().SparseAutoencoder.load(path, backbone_id)
    except ConceptLensError as e:
        raise ConfigError(f"[discovery] sae = {str(path)!r}: {e}") from e


def get_sae(d: DiscoveryConfig, pool: dict | None, backbone_id: str, sae_root, progress: bool = False):
    """(SAE, id) for [discovery] sae: the saved file (id: its path), or trained on the pool and
    cached under `sae_root`/sae (None: the user cache) by backbone, pool fingerprint and
    parameters (id: that cache key)."""
    if isinstance(d.sae, str):
        sae = load_sae_file(d.sae, backbone_id)
        trained_on = (getattr(sae, "meta", None) or {}).get("input")
        if d.input != "auto" and trained_on and trained_on != d.input:
            raise ConfigError(f"[discovery] sae = {d.sae!r} was trained on {trained_on} embeddings but "
                              f"input = {d.input!r}; set input = 'auto' or {trained_on!r}.")
        return sae, str(d.sae)
    api = _sae_api()
    mode = resolve_input(d.input, pool["norm"])
    X = sae_input(pool, mode)
    params = {"input": mode, **d.sae}
    try:
        sae = api.sae_for(X, backbone_id, api.pool_fingerprint(X), sae_root, progress=progress, **params)
        return sae, api.sae_key(X, backbone_id, **params)
    except ConceptLensError as e:
        raise type(e)(f"[discovery] the SAE on pool {d.pool!r} ({len(X)} images): {e}") from e


def load_words(d: DiscoveryConfig) -> list[str]:
    try:
        words = list(_vocabulary_api().load_vocabulary(d.vocabulary, d.vocabulary_size))
    except ConceptLensError as e:
        raise type(e)(f"[discovery] vocabulary = {d.vocabulary!r}: {e}") from e
    if not words:
        raise DataError(f"[discovery] vocabulary = {d.vocabulary!r} gave no word; give a word list.")
    return words


def word_embeddings(backbone, words, cache_root) -> np.ndarray:
    """Plain words through the backbone's text side (no template), L2-normalised, cached."""
    from ..features import encode_texts

    t = time.perf_counter()
    emb = np.asarray(encode_texts(backbone, list(words), cache_root), np.float32)
    log.info("[discovery] %d vocabulary words encoded in %.1fs", len(words), time.perf_counter() - t)
    return emb


def _jsonable(x):
    """A JSON-safe copy of SAE metadata (numbers, strings, lists, dicts; arrays summarised)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else f"array{x.shape}"
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x if x is None or isinstance(x, bool | int | float | str) else str(x)


def sae_summary(sae) -> dict:
    """The SAE's parameters and training summary (from its `meta`; the per-epoch history is
    reduced to the final epoch's mse and L0), JSON-safe; dead = latents that never fired in
    the last training epoch."""
    meta = dict(getattr(sae, "meta", None) or {})
    history = meta.pop("history", None) or []
    out = {k: meta[k] for k in ("backbone_id", "pool_id", "input", "params", "n_train", "d", "h",
                                "train_seconds") if k in meta}
    if history:
        last = history[-1]
        out |= {"epochs_run": len(history), "final_mse": last.get("mse"), "final_l0": last.get("L0")}
    fired = getattr(sae, "fired_", None)
    if fired is not None:
        fired = np.asarray(fired)
        out |= {"latents": int(fired.size), "dead": int((fired == 0).sum()), "alive": int((fired > 0).sum())}
    return _jsonable(out)


def build_discovery(cfg, backbone, cache, cache_root, train, methods: dict, record: dict | None = None):
    """DiscoveryInputs for the configured `methods` ({name: params}), or None when none of them
    discovers concepts. `cache` is the image FeatureCache, `cache_root` the feature cache root
    (texts, the SAE) or None for the user cache, `train` the run's training FeatureBundle (only
    its embeddings are read, for pool = "train"). `record`, when given, is filled with what
    results.json keeps (see the module docstring)."""
    from ..methods import DiscoveryInputs

    needs = discovery_needs(methods)
    if needs is None:
        return None
    d: DiscoveryConfig = cfg.discovery
    out = DiscoveryInputs()
    rec: dict = {"needs": sorted(needs), "seconds": {}}
    seconds = rec["seconds"]
    t0 = time.perf_counter()
    pool = None
    if "pool" in needs or ("sae" in needs and not isinstance(d.sae, str)):
        t = time.perf_counter()
        pool = load_pool(d, cfg.data, backbone, cache, train, cfg.batch_size, cfg.workers, cfg.progress,
                         for_sae="sae" in needs and not isinstance(d.sae, str))
        out.pool_embedding, out.pool_norm = pool["embedding"], pool["norm"]
        out.pool_id = _sae_api().pool_fingerprint(pool["embedding"])
        rec["pool"] = {"spec": d.pool, "size": len(pool["ids"]), "available": pool["available"],
                       "id": out.pool_id, "seed": d.seed, "norms": pool["norm"] is not None}
        seconds["pool"] = time.perf_counter() - t
    if "sae" in needs:
        t = time.perf_counter()
        sae_root = None if cfg.cache_dir is None else Path(cfg.cache_dir)
        out.sae, sae_id = get_sae(d, pool, backbone.id, sae_root, cfg.progress)
        rec["sae"] = {"id": sae_id, "source": "file" if isinstance(d.sae, str) else "trained or cache",
                      **sae_summary(out.sae)}
        if not isinstance(d.sae, str) and "expansion" not in d.sae:  # the width followed the pool
            from ..discovery.sae import fitted_expansion

            note = fitted_expansion(*np.shape(pool["embedding"]))[1]
            if note:
                rec["sae"]["note"] = note
        seconds["sae"] = time.perf_counter() - t
    words = None
    if "words" in needs or "codebook" in needs:
        t = time.perf_counter()
        words = load_words(d)
        rec["vocabulary"] = {"spec": d.vocabulary, "requested": d.vocabulary_size, "size": len(words)}
        seconds["vocabulary"] = time.perf_counter() - t
    if "words" in needs:
        t = time.perf_counter()
        out.words = tuple(words)
        out.word_embedding = word_embeddings(backbone, words, cache_root)
        seconds["words"] = time.perf_counter() - t
    if "codebook" in needs:
        t = time.perf_counter()
        texts, templates = codebook_texts(d, words)
        out.codebook_texts = tuple(texts)
        out.codebook_embedding = _v2c_api().codebook_embeddings(backbone, texts, cache_root=cache_root,
                                                                templates=templates, progress=cfg.progress)
        seconds["codebook"] = time.perf_counter() - t
        log.info("[discovery] codebook: %d texts x %d templates encoded in %.1fs", len(texts), len(templates),
                 seconds["codebook"])
        rec["codebook"] = {"size": len(texts), "templates": len(templates),
                           "template_set": d.v2c.get("templates", "full")}
    seconds["total"] = time.perf_counter() - t0
    if record is not None:
        record.update(rec)
    return out


def codebook_texts(d: DiscoveryConfig, words: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """V2C's texts from the vocabulary's adjectives and nouns, and the templates to average."""
    api, vocab = _v2c_api(), _vocabulary_api()
    adjectives, nouns = vocab.split_pos(words)
    options = {k: v for k, v in d.v2c.items() if k != "templates"}
    if options.get("max_texts") == 0:
        options["max_texts"] = None  # 0 = every text
    try:
        texts = list(api.v2c_vocabulary(list(adjectives), list(nouns), **options))
    except ConceptLensError as e:
        raise type(e)(f"[discovery] v2c vocabulary from {d.vocabulary!r}: {e}") from e
    if not texts:
        raise DataError(f"[discovery] vocabulary = {d.vocabulary!r} gave no adjective or noun for V2C's "
                        "codebook; give a word list with common English adjectives and nouns.")
    templates = PLAIN_TEMPLATES if d.v2c.get("templates", "full") == "plain" else tuple(api.V2C_TEMPLATES)
    return texts, templates
