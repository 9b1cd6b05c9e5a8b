"""V2C-CBM's concept discovery: a vocabulary, its codebook, and the V2C tokenizer (He et al., AAAI 2025).

Followed: riverback/V2C-CBM @a078ff6, `code_appendix/`:
`step0_generate_word_list.py` (texts = atoms + "adj noun" + "rel adj noun", deduplicated),
`step1_generate_classname_embedding.py` (class queries: 80 ImageNet templates of the class name,
each L2-normalised; or, few-shot, the normalised features of the k-shot images),
`step2_get_quantification_list_for_each_class.py` (score of a pool image for a class = mean over
templates of the cosine; the class's quantisation set = the top `number_of_images` by score, a
stable descending sort, so ties keep pool order) and `step3_generate_and_filter_codebooks.py`
(codebook row = mean over 86 prompts of the unit prompt embeddings, not re-normalised; per image
of a class's set, the top-5 codebook rows by dot product with the unit image embedding; per class
the 50 most frequent tokens, `np.argsort(freq)[::-1][:50]`). Spec summary:
../shared/METHODS_WAVE2.md section 2.

Pipeline here: `v2c_vocabulary` (texts) -> `codebook_embeddings` (C, d) -> `v2c_concepts`
(`quantisation_sets` per class, `tokenize` each image, top tokens by frequency) -> ConceptSet.

Cost of the codebook (measured). The offline backbone's text encoder took 2.2 ms per prompt on
an idle 2-core CPU and 4.6-8.3 ms with other jobs running (400 texts x 86 templates: 287 s), so
one vocabulary text costs T prompts: per 1,000 texts, about 3-12 minutes with the reference's 86
templates (86,000 prompts) and 2-8 seconds with `templates=("{}",)`. CLIP text towers on a CPU
are slower. `codebook_embeddings` logs this estimate before it starts (a warning from a minute
up, so the CLI shows it), shows a progress bar with `progress=True` and is resumable: each
finished batch of codebook rows is a shard of the feature cache (namespace: backbone id, kind
"v2c-codebook", the templates), so an interrupted encode restarts where it stopped and a second
call reads everything back.
`DEFAULT_MAX_TEXTS` (5,000 texts, about the reference's 5,541 base words) keeps the default at
15-60 minutes once per backbone with the 86 templates, under a minute with one.

Templates matter (measured, offline backbone, 400 texts, 1,000 Fashion-MNIST test images):
codebook rows from ("{}",) and from the 86 templates have cosine 0.69 on average (min 0.40);
an image's top-5 tokens overlap by 11% and the per-class top-50 concepts by 12%. The 86
templates are therefore the default; fewer is a speed option that changes the concepts.

Deviations from the reference (numbers refer to the notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| vocabulary size [1] | full product, ~20M texts | `max_texts` cap (5,000), common first | fewer tokens |
| relation phrases [1] | "has/part of/at location/made of a n" | off (`relation_texts=True`) | fewer tokens |
| text order [2] | `list(set(texts))`: hash order per run | ranked order, deterministic | ties only |
| "w w" pairs | included when a word is in both lists | skipped | negligible |
| codebook cache [3] | one `.pth` file, written at the end | a feature-cache shard per batch | resumable |
| augmentation [4] | RandomResizedCrop + flip before encoding | none (embeddings only) | not measured |
| class queries [5] | 80 templates (zero-shot) | the run's class embedding (one template) | small |
| ties [6] | torch.topk / np.argsort (unspecified) | stable: lower index first | ties only |
| unseen tokens [7] | pad to 50 with never-chosen words | only tokens chosen at least once | few concepts |
| small pool [8] | slicing: every class gets the whole pool | DataError | clear failure |

[1] The reference multiplies 864 adjectives by 4,677 nouns and 5 forms (~20M texts x 86 prompts,
    GPU days). Inputs are taken as ranked lists, most common first (wordfreq's order); the cap
    keeps all atoms first (adjectives and nouns interleaved by relative rank), then pairs in order
    of the product of their ranks (a Zipf estimate of how common the pair is), each pair followed
    by its relation phrases when `relation_texts=True`. Pass shorter word lists to leave room for
    pairs: the top 100 adjectives and 300 nouns give 400 atoms and 30,000 pairs.
[2] The reference's text order is Python's set order (random per process), which decides its
    tie-breaks; ours is the ranked order above.
[3] Prompt embeddings are not cached one by one (86 rows of d floats per text: 132 MB per 1,000
    texts at d = 384); the cached row is the mean over the templates, keyed by the text.
[4] The reference augments each image of a quantisation set (one random crop and flip per batch
    of 128, after CLIP's preprocessing; its Compose also holds a literal `...`, so the released
    script does not run as written). We have only embeddings. Pre-encoded augmented views can be
    passed as the pool; the effect of the missing augmentation was not measured.
[5] The score is linear in the class query, so the mean over templates of cosines equals the
    dot product with the mean template embedding: `quantisation_sets` takes either (m, T, d)
    template embeddings or (m, d) means. A run's `context.class_embedding` is one template
    ("a photo of a {}."), so the ranking differs from the reference's 80-template one.
[6] `tokenize` and the per-class ranking break ties by the lower codebook index (tokens) and
    the higher index among equal frequencies (`np.argsort(freq, kind="stable")[::-1]`, the
    stable reading of the reference's `np.argsort(freq)[::-1]`).
[7] The reference takes the top 50 by frequency even when fewer than 50 tokens were ever chosen
    (500 images x 5 tokens usually hit far more), padding with zero-frequency words in its random
    text order. `pad_unseen=True` does the same in our order.
[8] With `n_images` >= the pool size every class's quantisation set is the whole pool, so all
    classes would get the same concepts; the reference slices silently. We raise DataError
    (the reference uses 500 of 1,000 images).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import numbers
from collections.abc import Sequence

import numpy as np

from ..cache import FeatureCache, cached_texts, content_key
from ..errors import ConfigError, DataError
from .conceptset import ConceptSet, concept_key

log = logging.getLogger("conceptlens")

# CLIP's 80 ImageNet prompt templates followed by the reference's 6 extra ones, in its order
V2C_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.", "has a {} on it.",
    "is made of {}.", "is a {}.", "has many {} on it.", "is a type of {}.", "part of a {}.",
)
V2C_RELATIONS: tuple[str, ...] = ("has", "part of", "at location", "made of")
DEFAULT_MAX_TEXTS = 5_000
# measured: offline backbone, 2 shared CPU cores (2.2 ms idle, up to 8.3 ms busy); for the estimate
_MS_PER_PROMPT = (2.2, 8.5)
_PROMPTS_PER_SHARD = 4096  # an interrupted encode loses at most one shard's work


# -- vocabulary -----------------------------------------------------------------------------
def _ranked_words(words: Sequence[str], what: str) -> list[str]:
    if isinstance(words, str):
        raise DataError(f"v2c_vocabulary: {what} must be a list of words; got one string {words[:40]!r}.")
    out: dict[str, None] = {}
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w.split():
            raise DataError(f"v2c_vocabulary: {what}[{i}] is {w!r}; expected a non-empty word. Remove "
                            "blank entries from the word list.")
        out.setdefault(" ".join(w.split()), None)  # first occurrence keeps its rank
    return list(out)


def _pairs_by_rank(n_adj: int, n_noun: int):
    """(i, j) in increasing (i+1)(j+1), ties by i then j: a k-way merge over adjectives."""
    heap = [(i + 1, i, 0) for i in range(n_adj)] if n_noun else []
    heapq.heapify(heap)
    while heap:
        _, i, j = heapq.heappop(heap)
        yield i, j
        if j + 1 < n_noun:
            heapq.heappush(heap, ((i + 1) * (j + 2), i, j + 1))


def v2c_vocabulary(adjectives: Sequence[str], nouns: Sequence[str], max_texts: int | None = DEFAULT_MAX_TEXTS,
                   relations: Sequence[str] = V2C_RELATIONS, pairs: bool = True,
                   relation_texts: bool = False) -> list[str]:
    """V2C's texts from two ranked word lists (most common first), deduplicated, deterministic.

    Uncapped there are A + N atoms, A*N "adj noun" pairs and, with `relation_texts`, R*A*N
    "rel adj noun" phrases (R = len(relations)): the reference's ~20M. `max_texts` (None: no
    cap) keeps the first texts of this order: all atoms (adjectives and nouns interleaved by
    relative rank), then pairs by the product of their ranks, each followed by its relation
    phrases. The result has min(max_texts, distinct texts) entries; the count is logged.
    """
    if max_texts is not None and (not isinstance(max_texts, numbers.Integral)
                                  or isinstance(max_texts, bool) or max_texts < 1):
        raise ConfigError(f"v2c_vocabulary: max_texts must be an integer >= 1 or None (no cap); got "
                          f"{max_texts!r}. The default is {DEFAULT_MAX_TEXTS}.")
    for name, flag in (("pairs", pairs), ("relation_texts", relation_texts)):
        if not isinstance(flag, bool):
            raise ConfigError(f"v2c_vocabulary: {name} must be True or False; got {flag!r}.")
    adj, noun = _ranked_words(adjectives, "adjectives"), _ranked_words(nouns, "nouns")
    rels = _ranked_words(relations, "relations") if relation_texts else []
    cap = float("inf") if max_texts is None else int(max_texts)
    out: dict[str, None] = {}
    counts = {"atoms": 0, "pairs": 0, "relation phrases": 0}

    def add(text: str, kind: str) -> bool:
        if text not in out:
            out[text] = None
            counts[kind] += 1
        return len(out) < cap

    ranked = sorted([((i + 0.5) / len(adj), 0, i, w) for i, w in enumerate(adj)]
                    + [((j + 0.5) / len(noun), 1, j, w) for j, w in enumerate(noun)])
    going = all(add(w, "atoms") for *_, w in ranked) if ranked else True
    if going and pairs:
        for i, j in _pairs_by_rank(len(adj), len(noun)):
            if adj[i] == noun[j]:
                continue
            pair = f"{adj[i]} {noun[j]}"
            if not add(pair, "pairs") or not all(add(f"{r} {pair}", "relation phrases") for r in rels):
                break
    possible = len(adj) + len(noun) + (len(adj) * len(noun) * (1 + len(rels)) if pairs else 0)
    log.info("v2c vocabulary: %d texts (%s) of at most %d; max_texts=%s", len(out),
             ", ".join(f"{v} {k}" for k, v in counts.items()), possible, max_texts)
    return list(out)


# -- codebook -------------------------------------------------------------------------------
def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or not len(templates):
        raise ConfigError(f"codebook_embeddings: templates must be a non-empty list of prompt templates "
                          f"with one '{{}}' each; got {templates!r}. Default: V2C_TEMPLATES (86).")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ConfigError(f"codebook_embeddings: template {t!r} must hold exactly one '{{}}' where the "
                              "text goes, e.g. 'a photo of a {}.' or '{}'.")
    return tuple(templates)


def estimate_minutes(n_texts: int, n_templates: int) -> tuple[float, float]:
    """(low, high) minutes to encode n_texts x n_templates prompts with the offline backbone
    on 2 CPU cores (idle, busy); other backbones differ."""
    prompts = n_texts * n_templates
    return prompts * _MS_PER_PROMPT[0] / 60_000, prompts * _MS_PER_PROMPT[1] / 60_000


def codebook_embeddings(backbone, texts: Sequence[str], cache_root=None,
                        templates: Sequence[str] = V2C_TEMPLATES, progress: bool = False) -> np.ndarray:
    """(C, d) float32: row w = mean over `templates` of the unit embedding of template.format(w),
    not re-normalised (the reference). Fewer templates (e.g. ("{}",), the text alone) cost
    proportionally less; the rows then carry none of the prompt ensemble's averaging, which
    changes which tokens are nearest (see `estimate_minutes` and the module docstring).

    Cached per text in the feature cache under `cache_root` (None: the user cache; the same
    argument `features.encode_texts` takes), one shard per batch: resumable and reused."""
    from ..progress import progress as tqdm  # one switch for every bar (--quiet)

    from ..backbones.base import l2_normalize  # deferred: torch (concepts imports without it)

    templates = _check_templates(templates)
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"codebook_embeddings: text #{i} is {t!r}; expected a non-empty string.")
    digest = hashlib.sha256("\n".join(templates).encode()).hexdigest()[:16]
    cache = FeatureCache(cache_root, backbone=backbone.id, kind="v2c-codebook", templates=digest)
    T = len(templates)

    def encode(chunk: list[str]) -> np.ndarray:
        prompts = [t.format(w) for w in chunk for t in templates]
        # at most 256 prompts per call: some backbones (open_clip) encode a call as one batch
        unit = np.concatenate([l2_normalize(backbone.encode_texts(prompts[s:s + 256]))
                               for s in range(0, len(prompts), 256)])
        return unit.reshape(len(chunk), T, -1).mean(1)

    missing = list(dict.fromkeys(t for t in texts if _key(t) not in cache))
    if missing:
        low, high = estimate_minutes(len(missing), T)
        # a build of a minute or more is a warning: the CLI shows warnings by default, not info
        # (issue #23: a bare [methods.v2c] encoded for 15-37 min with nothing said)
        level = logging.WARNING if high >= 1.0 else logging.INFO
        hint = ("; [discovery.v2c] templates = \"plain\" or a smaller max_texts is faster"
                if level == logging.WARNING and T > 1 else "")
        log.log(level, "v2c codebook: encoding %d of %d texts x %d templates = %d prompts (offline "
                "backbone on 2 CPU cores: %.1f-%.1f min); resumable, cached in %s%s", len(missing),
                len(texts), T, len(missing) * T, low, high, cache.dir, hint)
    per_shard = max(1, _PROMPTS_PER_SHARD // T)
    with tqdm(total=len(missing), desc="v2c codebook", unit="text", disable=not progress or not missing,
              dynamic_ncols=True) as bar:
        for s in range(0, len(missing), per_shard):
            chunk = missing[s:s + per_shard]
            cached_texts(cache, chunk, encode, batch_size=len(chunk))
            bar.update(len(chunk))
    return cached_texts(cache, texts, encode, dim=backbone.embed_dim).astype(np.float32, copy=False)


def _key(text: str) -> str:
    return content_key(text.encode("utf-8"))


# -- tokenizer ------------------------------------------------------------------------------
def _matrix(x, name: str, ndim: tuple[int, ...] = (2,)) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DataError(f"v2c: {name} must be a numeric array; got {type(x).__name__} ({e}).") from e
    if a.ndim not in ndim:
        raise DataError(f"v2c: {name} must have {' or '.join(map(str, ndim))} dimensions; got shape "
                        f"{a.shape}.")
    if not np.isfinite(a).all():
        raise DataError(f"v2c: {name} has {int((~np.isfinite(a)).sum())} non-finite value(s); re-encode it.")
    return a


def _positive_int(v, name: str, default) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"v2c: {name} must be an integer >= 1; got {v!r}. The default is {default}.")
    return int(v)


def quantisation_sets(class_embedding, pool_embedding, n_images: int = 500) -> list[np.ndarray]:
    """Per class, the `n_images` pool indices with the highest mean-over-templates cosine to
    the class query, best first (ties: lower pool index first, as the reference's stable sort).

    class_embedding: (m, d) class queries or (m, T, d) unit template embeddings; pool_embedding:
    (n, d) unit image embeddings. The mean of cosines over templates is the dot product with the
    mean template embedding, which is what is computed (in float64)."""
    n_images = _positive_int(n_images, "n_images", 500)
    C = _matrix(class_embedding, "class_embedding", (2, 3))
    P = _matrix(pool_embedding, "pool_embedding")
    queries = C.astype(np.float64).mean(1) if C.ndim == 3 else C.astype(np.float64)
    if len(P) == 0:
        raise DataError("v2c: the unlabelled image pool is empty; V2C ranks pool images per class. Give "
                        "[discovery] a pool of images (the reference uses 1,000 ImageNet images).")
    if len(queries) == 0:
        raise DataError("v2c: no class embeddings; V2C needs one query per class.")
    if queries.shape[1] != P.shape[1]:
        raise DataError(f"v2c: class embeddings have dimension {queries.shape[1]} but pool images "
                        f"{P.shape[1]}; encode both with the same backbone.")
    if n_images >= len(P):
        raise DataError(
            f"v2c: n_images={n_images} but the pool has only {len(P)} images, so every class's "
            f"quantisation set would be the whole pool and all classes would get the same concepts. "
            f"Pass n_images < {len(P)} (the reference takes 500 of 1,000, about half: "
            f"n_images={max(1, len(P) // 2)}) or a larger pool.")
    scores = P.astype(np.float64) @ queries.T  # (n, m)
    return [np.argsort(-scores[:, k], kind="stable")[:n_images] for k in range(scores.shape[1])]


def tokenize(image_embedding, codebook_embedding, top_k: int = 5) -> np.ndarray:
    """(n, top_k) codebook indices: each image's top_k codebook rows by dot product, best
    first; ties go to the lower index (a stable sort of the negated similarities)."""
    top_k = _positive_int(top_k, "top_k", 5)
    X = _matrix(image_embedding, "image_embedding")
    E = _matrix(codebook_embedding, "codebook_embedding")
    if X.shape[1] != E.shape[1]:
        raise DataError(f"v2c: image embeddings have dimension {X.shape[1]} but the codebook "
                        f"{E.shape[1]}; encode both with the same backbone.")
    if top_k > len(E):
        raise ConfigError(f"v2c: top_k={top_k} but the codebook has only {len(E)} texts; pass top_k <= "
                          f"{len(E)} (the reference: 5) or a larger vocabulary.")
    out = np.empty((len(X), top_k), dtype=np.int64)
    step = max(1, (1 << 24) // max(1, len(E)))  # ~64 MB of similarities per chunk
    for s in range(0, len(X), step):
        sims = X[s:s + step] @ E.T
        out[s:s + step] = _top_stable(sims, top_k)
    return out


def _top_stable(sims: np.ndarray, k: int) -> np.ndarray:
    """Row-wise `np.argsort(-sims, kind='stable')[:, :k]` without sorting whole rows."""
    if k >= sims.shape[1]:
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    rows = np.arange(len(sims))[:, None]
    kth = sims[rows, part].min(1)
    # a row with more than k entries >= its k-th value has ties at the boundary: sort it fully
    tied = (sims >= kth[:, None]).sum(1) > k
    order = np.lexsort((part, -sims[rows, part]), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    if tied.any():
        top[tied] = np.argsort(-sims[tied], axis=1, kind="stable")[:, :k]
    return top


def v2c_select(classes: Sequence[str], class_embedding, pool_embedding, codebook_texts: Sequence[str],
               codebook_embedding, n_images: int = 500, top_k: int = 5, per_class: int = 50,
               pad_unseen: bool = False) -> tuple[ConceptSet, np.ndarray]:
    """`v2c_concepts` and, per concept of the returned set, the codebook row it came from."""
    classes = list(classes)
    per_class = _positive_int(per_class, "per_class", 50)
    if not isinstance(pad_unseen, bool):
        raise ConfigError(f"v2c: pad_unseen must be True or False; got {pad_unseen!r}.")
    E = _matrix(codebook_embedding, "codebook_embedding")
    texts = list(codebook_texts)
    if len(texts) != len(E):
        raise DataError(f"v2c: {len(texts)} codebook texts but {len(E)} codebook embeddings; they must "
                        "match row for row. Rebuild the codebook from the same text list.")
    if not len(texts):
        raise DataError("v2c: the codebook is empty; build it with v2c_vocabulary + codebook_embeddings.")
    C = _matrix(class_embedding, "class_embedding", (2, 3))
    if len(C) != len(classes):
        raise DataError(f"v2c: {len(classes)} classes but {len(C)} class embeddings.")
    sets = quantisation_sets(C, pool_embedding, n_images)
    pool = _matrix(pool_embedding, "pool_embedding")
    used = np.unique(np.concatenate(sets))  # an image in several classes' sets is tokenized once
    tokens = np.empty((len(pool), _positive_int(top_k, "top_k", 5)), dtype=np.int64)
    tokens[used] = tokenize(pool[used], E, top_k)
    out = ConceptSet(classes)
    rows: dict[str, int] = {}  # concept key -> codebook row of the first text with that key
    for cls, members in zip(classes, sets, strict=True):
        freq = np.bincount(tokens[members].ravel(), minlength=len(E))
        ranked = np.argsort(freq, kind="stable")[::-1][:per_class]
        if not pad_unseen:
            ranked = ranked[freq[ranked] > 0]
        for rank, t in enumerate(ranked):
            prov = {"source": "v2c", "class": cls, "token": int(t), "frequency": int(freq[t]),
                    "rank": rank, "images": len(members)}
            concept = out.add(texts[t], [cls], [prov])
            rows.setdefault(concept_key(concept.text), int(t))
    return out, np.array([rows[concept_key(c.text)] for c in out], dtype=np.int64)


def v2c_concepts(classes: Sequence[str], class_embedding, pool_embedding, codebook_texts: Sequence[str],
                 codebook_embedding, n_images: int = 500, top_k: int = 5, per_class: int = 50,
                 pad_unseen: bool = False) -> ConceptSet:
    """The V2C tokenizer's concept set: per class, the `per_class` most frequent top-`top_k`
    tokens over its quantisation set (`n_images` pool images nearest its query), ranked by
    frequency. A token chosen for several classes is one concept linked to all of them;
    provenance {"source": "v2c", "class", "token" (codebook row), "frequency", "rank", "images"}.
    Labels are never used: only the class queries and the unlabelled pool."""
    return v2c_select(classes, class_embedding, pool_embedding, codebook_texts, codebook_embedding,
                      n_images, top_k, per_class, pad_unseen)[0]
