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

import numpy as np

from ..concepts.conceptset import ConceptSet
from ..concepts.v2c import v2c_select
from ..errors import ConfigError, DataError
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
    """V2C-CBM: V2C tokens as concepts, LaBo's head; see the module docstring."""

    name = "v2c"
    # a concept layer of its own concepts, found in context.discovery's pool and codebook
    tags = replace(LaBo.tags, requires=("discovery",), discovers_concepts=True,
                   discovery_needs=("pool", "codebook"))
    similarity = "cosine"  # not a parameter: the poster's cosine (read by LaBo's code)

    # LaBo's class_consistent option is not offered: V2C's concepts are its own tokens per class
    class_consistent, links, evidence_floor = False, "generated", 0.6

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

    def _validate(self) -> None:
        try:
            super()._validate()
        except ConfigError as e:  # LaBo's checks, named for this method
            raise ConfigError(str(e).replace("labo:", "v2c:", 1)) from None
        for name, default in (("n_images", 500), ("top_k", 5), ("per_class", 50)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"v2c: {name} must be an integer >= 1; got {v!r}. The default is "
                                  f"{default}.")
        if self.class_query not in CLASS_QUERIES:
            raise ConfigError(f"v2c: class_query must be one of {CLASS_QUERIES}; got {self.class_query!r}. "
                              "'text': the class prompts (zero-shot, the default); 'images': the mean "
                              "training embedding of each class (the reference's few-shot setting).")
        if not isinstance(self.pad_unseen, bool):
            raise ConfigError(f"v2c: pad_unseen must be True or False; got {self.pad_unseen!r}.")

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
