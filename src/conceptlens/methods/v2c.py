"""`v2c`: V2C-CBM, a concept bottleneck on vision-to-concept tokens (He et al., AAAI 2025).

Followed: riverback/V2C-CBM @a078ff6 (`code_appendix/step1..3`, concept discovery, implemented
in `concepts/v2c.py`; its `code_appendix/README.md`: the CBM is LaBo's code without concept
selection and with "initialization with concept priors"; the poster: logits = A softmax(W)^T with
A the cosine similarity of image and concept) and YueYANG1996/LaBo @83ed4b0 for the classifier
(`models/asso_opt/asso_opt.py`, `main.py`, `data.py`), reused here through `methods/labo.py`.

fit: concepts from `concepts.v2c.v2c_select` on `context.discovery.pool_embedding` (unlabelled:
no label is read; a run's pool defaults to its training images, where the reference draws
1,000 ImageNet images, see [4]) with the class queries `context.class_embedding` (or, `class_query="images"`,
the mean training embedding of each class: the reference's few-shot setting) and the codebook
(`codebook_texts`, `codebook_embedding`); then LaBo's head on them: activations = cosine of the
image and each chosen codebook row, V initialised at `prior_strength` where the concept was
found for the class (the class-concept prior), W = softmax(V), logits = scale * A W^T, Adam with
the best validation checkpoint (LaBo's defaults and options, passed through). Explanations are
exact as for LaBo: `class_weights_` = softmax(association_). `concept_set_` (the ConceptSet with
each concept's class, codebook row, frequency and rank) is saved with the model.

Deviations from the reference (numbers refer to the notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| discovery | see concepts/v2c.py | see concepts/v2c.py | see there |
| concept embeddings [1] | LaBo: each concept's raw text | its normalised codebook row | cosine (poster) |
| shared concepts [2] | LaBo `np.unique`: first class only | one concept, linked to every class | init only |
| prior init [3] | "concept priors" (code not released) | LaBo's scatter: 1 where found | unknown |
| similarity | cosine (poster) | cosine only | none |
| LaBo head | LaBo | `methods/labo.py` (its own deviations) | see labo |
| unlabelled pool [4] | 1,000 random ImageNet images | the run's training images | not measured offline |

[1] The authors' modified LaBo is not public; the poster says A is a cosine similarity, and the
    tokens are codebook rows, so A uses the chosen rows (mean over templates) re-normalised.
[2] LaBo flattens class -> concepts lists and keeps the first occurrence of a duplicate text
    (one class); V2C's lists often share tokens. Here a shared token is one column whose prior
    is 1 for every class that found it (as `labo` does with many-to-many concept sets).
[3] V2C's README says it modified LaBo's initialisation ("concept priors") without the code;
    we use LaBo's: `prior_strength` (1.0, LaBo's `init_val`) where the class found the concept.
[4] `step2_get_quantification_list_for_each_class.py` ranks 1,000 randomly drawn ImageNet images
    per class (the same pool for every dataset); a run's `[discovery] pool` defaults to "train",
    its own training images (labels never read), so the quantisation sets come from the task's
    domain. Not measured: ImageNet (images or embeddings) is not available offline, so the two
    pools cannot be compared here. The reference's setting is `pool = "<an ImageNet folder or
    manifest>"` with `pool_size = 1000` (drawn by `[discovery] seed`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np

from ..concepts.conceptset import ConceptSet
from ..concepts.v2c import v2c_select
from ..errors import ConfigError, DataError
from ..validation import Boolean, Interval, Options
from .base import METHODS, Context
from .labo import LaBo
from .protocols import DiscoveryRecord

CLASS_QUERIES = ("text", "images")


def class_tokens(model, top: int = 10) -> dict[str, list[str]]:
    """Concepts per class: the tokens each class drew, from a V2C model's `concept_set_` (each
    concept with the classes that found it, in rank order) or `class_tokens_`; else each class's
    `top` concepts by weight (what any concept model can say)."""
    kept = getattr(model, "class_tokens_", None)
    if isinstance(kept, dict):
        return {str(c): list(v) for c, v in kept.items()}
    concept_set = getattr(model, "concept_set_", None)
    if concept_set is not None:
        return {c: [x.text for x in concept_set if c in x.classes] for c in model.classes_}
    W = np.asarray(model.class_weights_)
    return {c: [model.concepts_[j] for j in np.argsort(-W[i], kind="stable")[:top] if W[i, j] > 0]
            for i, c in enumerate(model.classes_)}


@METHODS.register("v2c")
class V2C(LaBo):
    """V2C-CBM: V2C tokens as concepts, LaBo's head; see the module docstring.

    Concepts come from an unlabelled image pool and a codebook (`context.discovery`): per class
    the pool images nearest its query, each image's top codebook tokens, the class's most frequent
    tokens; then LaBo's head on them (cosine activations; LaBo's `class_consistent` is not offered).

    Parameters
    ----------
    n_images : int, default 500
        Pool images nearest each class's query (its quantisation set); >= 1 and below the pool
        size (the reference takes 500 of 1,000).
    top_k : int, default 5
        Codebook tokens taken per pool image; >= 1, at most the codebook size.
    per_class : int, default 50
        Concepts per class: its most frequent tokens; >= 1.
    class_query : {'text', 'images'}, default 'text'
        What ranks the pool images for a class: 'text', its prompt embedding
        (`context.class_embedding`, zero-shot); 'images', the mean training embedding of the class
        (the reference's few-shot setting).
    pad_unseen : bool, default False
        Pad a class with fewer than `per_class` seen tokens with never-chosen ones, as the
        reference does; off: the class keeps only the tokens it saw.
    scale : float, default 100.0
        Logit scale: logits = scale * A W^T ("scaling as standard CLIP does"); > 0. With
        `standardize` the scale applies per standard deviation (scale / 100).
    prior_strength : float, default 1.0
        Initial association V where the concept was generated for the class (0 elsewhere; LaBo's
        `init_val`); >= 0. A concept set with no class prior starts from a uniform V = 1.
    optimizer : {'adam', 'lbfgs'}, default 'adam'
        'adam': the reference's loop (shuffled mini-batches of `batch_size`, Adam at `lr` for
        `epochs`, validation every `val_every` epochs). 'lbfgs' (ours): full-batch L-BFGS for
        `max_iter` iterations, seconds instead of minutes, but a weaker regulariser.
    max_iter : int, default 300
        L-BFGS iterations (`optimizer='lbfgs'` only); >= 1.
    lr : float, default 1e-4
        Adam's learning rate; > 0 (the reference sets 5e-6 to 1e-3 per dataset; 1e-4 is its
        10-class configs').
    epochs : int, default 10000
        Adam epochs (the reference's median max_epochs); >= 1. The checkpoint with the best
        validation accuracy is kept, not the last.
    batch_size : int or 'auto', default 'auto'
        Adam's mini-batch size; 'auto' is n // 5 clipped to [2, 512] (the pattern of the
        reference's per-shot configs), else an integer >= 1.
    val_every : int, default 10
        Validate (and maybe checkpoint) every `val_every` epochs (Adam) or iterations (L-BFGS), and
        at the final iterate; >= 1 (the reference's `check_interval = 10`).
    l1 : float, default 0.0
        Weight of the reference's L1 term, max over classes of the row L1 norm of the raw
        association V; >= 0 (the reference's weight when switched on: 0.01).
    diversity : float, default 0.0
        Weight of the reference's diversity term, minus the mean variance over images of the class
        scores; >= 0 (the reference's weight when switched on: 0.005).
    standardize : bool, default False
        Ours: standardise the activations with the training mean and standard deviation.
    random_state : int, default 0
        Seed of the Adam batch order (any integer).

    References
    ----------
    He et al., "V2C-CBM: Building Concept Bottlenecks with Vision-to-Concept Tokenizer", AAAI 2025.
    """

    name = "v2c"
    # a concept layer of its own concepts, found in context.discovery's pool and codebook
    tags = replace(LaBo.tags, requires=("discovery",), discovers_concepts=True,
                   discovery_needs=("pool", "codebook"))
    similarity = "cosine"  # not a parameter: the poster's cosine (read by LaBo's code)

    # LaBo's class_consistent option is not offered: V2C's concepts are its own tokens per class
    class_consistent, links, evidence_floor = False, "generated", 0.6
    # LaBo's parameters (less similarity and class_consistent's three) and V2C's selection
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_images": [Interval(int, 1)], "top_k": [Interval(int, 1)], "per_class": [Interval(int, 1)],
        "class_query": [Options(CLASS_QUERIES, description=f"one of {CLASS_QUERIES} ('text': the class "
                                "prompts (zero-shot, the default); 'images': the mean training embedding of "
                                "each class (the reference's few-shot setting))")],
        "pad_unseen": [Boolean("True or False")],
        **{k: v for k, v in LaBo._parameter_constraints.items()
           if k not in ("similarity", "class_consistent", "links", "evidence_floor")},
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        **LaBo._parameter_examples, "n_images": "n_images = 500", "top_k": "top_k = 5",
        "per_class": "per_class = 50"}

    def __init__(self, n_images: int = 500, top_k: int = 5, per_class: int = 50,
                 class_query: str = "text", pad_unseen: bool = False,
                 scale: float = 100.0, prior_strength: float = 1.0,
                 optimizer: str = "adam", max_iter: int = 300, lr: float = 1e-4, epochs: int = 10000,
                 batch_size: int | str = "auto", val_every: int = 10, l1: float = 0.0,
                 diversity: float = 0.0, standardize: bool = False, random_state: int = 0):
        self.n_images, self.top_k, self.per_class = n_images, top_k, per_class
        self.class_query, self.pad_unseen = class_query, pad_unseen
        self.scale, self.prior_strength, self.optimizer = scale, prior_strength, optimizer
        self.max_iter, self.lr, self.epochs, self.batch_size = max_iter, lr, epochs, batch_size
        self.val_every, self.l1, self.diversity = val_every, l1, diversity
        self.standardize, self.random_state = standardize, random_state

    # -- fitting ----------------------------------------------------------------------
    def _queries(self, train, context: Context) -> np.ndarray:
        if self.class_query == "images":
            X, y = self._x(train), np.asarray(train.labels)
            missing = [c for i, c in enumerate(self.classes_) if not np.any(y == i)]
            if missing:
                raise DataError(f"v2c: class_query='images' needs training images of every class; none "
                                f"for {missing[:5]}. Use class_query='text'.")
            return np.stack([X[y == i].mean(0) for i in range(len(self.classes_))])
        if context.class_embedding is None:
            raise ConfigError("v2c: context.class_embedding (the class prompt embeddings) is missing; V2C "
                              "ranks pool images by them. Build the context with class prompts, or pass "
                              "class_query='images'.")
        return np.asarray(context.class_embedding, dtype=np.float32)

    def _fit(self, train, context: Context, val) -> None:
        d = context.discovery
        lacking = [what for what, v in (("pool_embedding (the unlabelled pool)", d.pool_embedding),
                                        ("codebook_embedding", d.codebook_embedding)) if v is None]
        if lacking:
            raise ConfigError(f"v2c: context.discovery lacks {' and '.join(lacking)}; the run fills them "
                              f"for methods that declare discovery_needs={self.discovery_needs}.")
        concept_set, rows = v2c_select(
            self.classes_, self._queries(train, context), d.pool_embedding, d.codebook_texts,
            d.codebook_embedding, self.n_images, self.top_k, self.per_class, self.pad_unseen)
        emb = np.asarray(d.codebook_embedding, dtype=np.float64)[rows]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if np.any(norms <= 1e-12):
            raise DataError("v2c: a chosen codebook row has zero norm; rebuild the codebook.")
        inner = Context(self.classes_, concept_set.texts, (emb / norms).astype(np.float32),
                        concept_set.class_matrix(self.classes_), context.class_embedding,
                        context.backbone_id)
        super()._fit(train, inner, val)
        self.concept_set_ = concept_set
        self.codebook_rows_ = rows

    # -- files ------------------------------------------------------------------------
    def discovery_record(self) -> DiscoveryRecord:
        """The tokens each class drew from the codebook (methods/protocols.py: Discovering)."""
        self.check_fitted()
        return DiscoveryRecord("tokens", class_tokens=class_tokens(self),
                               concept_set=getattr(self, "concept_set_", None))

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "concept_set": self.concept_set_.to_dict(),
                "codebook_rows": [int(r) for r in self.codebook_rows_]}

    def _load_extra(self, extra: dict) -> None:
        super()._load_extra(extra)
        self.concept_set_ = ConceptSet.from_dict(extra["concept_set"], "model.json extra.concept_set")
        self.codebook_rows_ = np.asarray(extra["codebook_rows"], dtype=np.int64)
        if self.concept_set_.texts != list(self.concepts_) or len(self.codebook_rows_) != len(self.concepts_):
            raise DataError("model.json: the saved V2C concept set does not match the model's concepts; "
                            "the file is damaged.")
