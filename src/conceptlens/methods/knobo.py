"""`knobo`: Knowledge-enhanced Bottlenecks (Yang, Gandhi, Wang, Wu, Yao, Callison-Burch, Gee &
Yatskar, "A Textbook Remedy for Domain Shifts: Knowledge Priors for Medical Image Analysis",
NeurIPS 2024).

Followed: YueYANG1996/KnoBo @53b3728, `modules/train_grounding.py` (`get_mapping`: shuffle,
balanced selection up to `max_examples`, validation size, skip rule; `train_binary_model`:
down-sampling, `LogisticRegression(max_iter=1000, class_weight='balanced')`, train/val
accuracy), `modules/utils.py` (`load_classifier_list`: sort by validation accuracy, keep the
top `number_of_features`; `binary_features`: `predict_proba(x)[:, 1]`; `load_features`: L2
normalisation; `get_prior_matrix`: yes/no/unknown -> +1/-1/0; `compute_prior_loss`),
`modules/models.py` (`MultiClassLogisticRegression`: one `nn.Linear` with bias) and
`modules/cbm.py` (`train_model`: Adam 1e-3, batch 64, 200 epochs, CE + 1.0 * prior loss, the
epoch with the best validation accuracy kept; README's KnoBo command: `--number_of_features
150 --add_prior True`). Concept generation (binary questions per class, GPT-4) is
YueYANG1996/MedRAG `concept_generation.py`; our offline counterparts are the `knobo` prompt
family and `LLMSource.answer_prior` in `concepts/sources/llm.py` and `concepts/questions.py`.

1. Prior P (classes x concepts): +1 yes, -1 no, 0 unknown. From `context.class_truth`
   (1 -> +1, 0 -> -1, NaN -> 0), else from `context.class_prior` (1 -> +1, 0 -> -1; see [2]);
   a concept whose class_truth column is all unknown (no annotation covers it) takes its
   class_prior column, so measuring grounding never changes which concepts can be grounded.
2. Grounding function per concept j (the reference's `train_grounding.py`, on our pseudo-labels,
   see [1]): the training images of classes with P[c, j] = +1 are positives, of classes with
   P[c, j] = -1 negatives, the rest are left out. Features are L2-normalised image embeddings.
   Both lists are shuffled (`random.Random(seed)`), balanced up to `max_examples`; the
   validation split has min(int(val_fraction * minority), max_val) images per side (sklearn
   `train_test_split(..., random_state=seed)`), and the concept is skipped (reason recorded in
   `skipped_`) when that is below `min_val`; at most `train_samples` training images (half per
   side), then the larger side down-sampled to the smaller; LogisticRegression(max_iter=1000,
   class_weight='balanced'). Its validation accuracy is `concept_val_accuracy_` (-1 for a
   skipped concept).
3. Bottleneck: the `n_concepts` grounded concepts with the highest validation accuracy (ties keep
   the earlier concept, as Python's stable sort does), `kept_`, in that order.
   transform(x)[:, j] = sigmoid(x_norm . coef_j + b_j) = predict_proba(x_norm)[:, 1] for a kept
   concept, 0 for any other (they are not in the bottleneck and have zero class weights).
4. Head: logits = W c + b; loss = CE + prior_weight * mean_kj |tanh(W_kj) - P_kj| (bias not
   regularised; the mean over classes x kept concepts) when `add_prior`; Adam(lr), shuffled
   batches of `batch_size`, `epochs` epochs; after each epoch the accuracy on `val` is measured
   and the first epoch with the highest accuracy is kept (`best_epoch_`, `val_history_`).
   class_weights_ is W placed in the kept concepts' columns (zeros elsewhere), intercept_ = b,
   head_scale 1, so explanations are exact.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| grounding data [1] | a report corpus, LLM labels | training images, prior labels | see [1] |
| prior, no class_truth [2] | LLM yes/no/unknown | class_prior: 1 yes, 0 no | closed world |
| no prior at all | impossible (json file) | DataError saying how to get one | none |
| `min_val` [3] | 10 (fixed) | 10 (default), settable | few-shot needs lower |
| without `val` | impossible (always a val split) | final epoch, `used_validation_` False | only then |
| seeds [4] | 0 grounding, 42 head, DataLoader | `seed` (0) for all, torch.randperm | another draw |
| device | CUDA when present | CPU, float32; the head's Adam steps in numpy, 1 thread | none measured |
| `positive` [5] | absent (dense, either sign) | W >= 0, projected after each step | only when set |
| `class_consistent` | absent (any class weighs any concept) | a class weighs only concepts linked to it with training-image evidence, W >= 0 (methods/class_consistent.py) | only when set |
| `on` | the image encoder's embedding | the same (default); "auto"/"features": the backbone's layer features | only when set |
| `add_prior` [6] | `type=bool`, default False | True by default | none for KnoBo runs |
| unconverged grounding | sklearn warns | logged, named in `not_converged_` | none |
| zero-norm image | NaN (0/0) | divided by 1 (stays 0) | only then |

[1] The reference trains each grounding function once, on a separate corpus (MIMIC-CXR /
    ISIC images whose reports an LLM answered each question for, yes or no); we have no such
    corpus, so the pseudo-labels come from the class-level prior on the run's own training
    images. A grounding function then separates the classes the prior says "yes" for from those
    it says "no" for, its validation accuracy is measured on held-out training images, and the
    head is trained on concept probabilities of images some of which the grounding functions
    saw. The prior term and everything after the grounding step are the reference's.
[2] `class_prior` says only which concepts were generated for which class. Reading 0 as
    "unknown" would leave every concept without negatives (no grounding function could be
    trained) and the prior term without any "no"; we read it closed-world: a concept not
    generated for a class is taken to be absent from it. Effect: attributes shared by classes
    the LLM did not list them for become negatives and are pushed to negative weights there.
    Annotations (`class_truth`, e.g. `concepts/questions.py`) or an LLM's yes/no/unknown answers
    (`LLMSource.answer_prior`) avoid this.
[3] With the reference's rule a concept needs >= 100 images on each side (10% >= 10): fine for
    its 10,000-image grounding corpus, not for a few-shot training set; lower `min_val`.
[4] The reference's order of random draws is kept (one Random for the two shuffles, a fresh
    one for the down-sampling), with `seed` in place of 0, so `seed=0` draws the reference's
    images from the same lists; the head's initialisation and batch order differ.
[5] Requested for every head here (explanations then only name concepts present); KnoBo's
    head is dense and its prior asks for negative weights where P = -1, which this forbids,
    so with `positive=True` those weights stay at 0.
[6] `--add_prior` with `type=bool` makes any non-empty string True; KnoBo is the model with the
    prior, the reference's default (False) is its "linear layer on grounded concepts" ablation.
"""

from __future__ import annotations

import logging
import random
import warnings
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from ..errors import DataError
from ..threads import limit_threads
from ..validation import Boolean, Interval, Options
from .base import INPUTS, METHODS, Context, Method
from .class_consistent import CONSTRAINTS as CLASS_CONSISTENT
from .class_consistent import evidence_state, fit_support, load_evidence
from .knobo_head import train_head
from .sparse_layer import POSITIVE

log = logging.getLogger("conceptlens")


def prior_loss(W: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """The reference's `compute_prior_loss`: sum |tanh(W) - P| / (classes * concepts)."""
    return torch.abs(torch.tanh(W) - P).sum() / W.numel()


def prior_matrix(context: Context, m: int, k: int) -> tuple[np.ndarray, str]:
    """P (m, k) of +1 / -1 / 0 and where it came from ('class_truth' or 'class_prior')."""
    if context.class_truth is not None:
        t = np.asarray(context.class_truth, dtype=np.float64)
        if t.shape != (m, k):
            raise DataError(f"knobo: context.class_truth must be (classes, concepts) = ({m}, {k}); "
                            f"got {t.shape}. Build it for the run's classes and concepts.")
        known = t[~np.isnan(t)]
        if np.any((known != 0) & (known != 1)):
            raise DataError("knobo: context.class_truth must hold 1 (yes), 0 (no) or NaN (unknown); "
                            f"found {np.unique(known[(known != 0) & (known != 1)])[:5].tolist()}.")
        P = np.where(np.isnan(t), 0.0, np.where(t == 1, 1.0, -1.0))
        # a concept no annotation covers (an all-unknown column, e.g. an unmatched free-text
        # concept) takes its generated-for prior, as it would in a run without annotations:
        # measuring grounding must not change which concepts KnoBo can ground
        uncovered = np.isnan(t).all(axis=0)
        if uncovered.any() and context.class_prior is not None:
            p = np.asarray(context.class_prior, dtype=np.float64)
            if p.shape == (m, k):
                P[:, uncovered] = np.where(p[:, uncovered] > 0, 1.0, -1.0)
                return P, "class_truth+class_prior" if (~uncovered).any() else "class_prior"
        return P, "class_truth"
    if context.class_prior is not None:
        p = np.asarray(context.class_prior, dtype=np.float64)
        if p.shape != (m, k):
            raise DataError(f"knobo: context.class_prior must be (classes, concepts) = ({m}, {k}); "
                            f"got {p.shape}.")
        # closed world (module docstring, note [2]): not generated for the class = "no"
        return np.where(p > 0, 1.0, -1.0), "class_prior"
    raise DataError(
        "knobo needs a class x concept prior (yes / no / unknown) and the context has neither "
        "class_truth nor class_prior. Give the run class-level concept annotations (they fill "
        "class_truth), a concept set that records which class each concept was generated for, or "
        "an LLM's answers (conceptlens.concepts.sources.llm.LLMSource.answer_prior).")


def grounding_split(positives, negatives, seed: int = 0, max_examples: int = 10000,
                    train_samples: int = 2000, val_fraction: float = 0.1, max_val: int = 50,
                    min_val: int = 10) -> tuple[list, list, list, list] | str:
    """The reference's `get_mapping` + `train_binary_model` sampling for one concept: returns
    (train positives, train negatives, val positives, val negatives), or the reason to skip."""
    from sklearn.model_selection import train_test_split

    pos, neg = list(positives), list(negatives)
    rng = random.Random(seed)
    rng.shuffle(pos)
    rng.shuffle(neg)
    # equally add positive and negative examples up to max_examples
    if len(pos) > len(neg):
        neg_sel = neg[:min(len(neg), max_examples // 2)]
        pos_sel = pos[:max_examples - len(neg_sel)]
    else:
        pos_sel = pos[:min(len(pos), max_examples // 2)]
        neg_sel = neg[:max_examples - len(pos_sel)]
    val_len = min(int(val_fraction * min(len(pos_sel), len(neg_sel))), max_val)
    if val_len < min_val:
        return (f"{len(pos)} positive and {len(neg)} negative images give {val_len} validation "
                f"image(s) per side (int({val_fraction} x minority), at most {max_val}), fewer than "
                f"min_val={min_val}")
    pos_train, pos_val = train_test_split(pos_sel, test_size=val_len, random_state=seed)
    neg_train, neg_val = train_test_split(neg_sel, test_size=val_len, random_state=seed)
    pos_train = pos_train[:int(train_samples * 0.5)]
    neg_train = neg_train[:train_samples - len(pos_train)]
    # down-sample to keep the training data balanced (a fresh seed, as the reference)
    rng = random.Random(seed)
    if len(pos_train) > len(neg_train):
        pos_train = rng.sample(pos_train, len(neg_train))
    else:
        neg_train = rng.sample(neg_train, len(pos_train))
    return pos_train, neg_train, pos_val, neg_val


def unit_rows(X: np.ndarray) -> np.ndarray:
    """L2-normalised rows in float32 (the reference normalises float32 torch tensors)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1).astype(np.float32)


@METHODS.register("knobo")
class KnoBo(Method):
    """Knowledge-enhanced bottleneck: one logistic-regression grounding function per concept,
    the top `n_concepts` by validation accuracy, a linear head with KnoBo's prior loss (see the
    module docstring).

    Reference values are in brackets.

    Parameters
    ----------
    n_concepts : int or None, default 150
        Bottleneck size: the grounded concepts with the highest validation accuracy; an integer
        >= 1, or None for every grounded concept [150, `--number_of_features`].
    add_prior : bool, default True
        Add the prior term prior_weight * mean |tanh(W) - P| to the head's loss [True in the
        README's KnoBo run].
    prior_weight : float, default 1.0
        Weight of the prior term [1.0]; >= 0.
    epochs : int, default 200
        The head's Adam epochs [200]; the epoch with the best validation accuracy is kept; >= 1.
    lr : float, default 1e-3
        The head's Adam learning rate [1e-3]; > 0.
    batch_size : int, default 64
        The head's mini-batch size [64]; >= 1.
    positive : bool, default False
        Ours (off): head weights W >= 0.
    max_examples : int, default 10000
        Grounding sampling: positives and negatives per concept, balanced, up to this many
        [10000]; >= 2.
    train_samples : int, default 2000
        Grounding sampling: at most this many training images per concept, half per side [2000];
        >= 2.
    val_fraction : float, default 0.1
        Grounding sampling: the validation split takes int(val_fraction x minority side) images
        per side [0.1]; in (0, 1).
    max_val : int, default 50
        Grounding sampling: at most this many validation images per side [50]; >= 1.
    min_val : int, default 10
        Grounding sampling: a concept with fewer validation images per side is skipped (reason in
        `skipped_`) [10; few-shot sets need lower]; >= 1.
    seed : int, default 0
        Seed of the sampling, the initialisation and the batch order [0 / 42]; >= 0.
    class_consistent : bool, default False
        Ours (absent from the reference): a class may weigh only concepts that a source links to it
        (`links`) and whose activation is evidence of their classes on the training images (AUROC
        >= `evidence_floor`), with weights >= 0 (methods/class_consistent.py). Off: any class weighs
        any concept, as the reference.
    links : {'generated', 'truth'}, default 'generated'
        With `class_consistent`, which links count: 'generated' (the classes each concept was
        generated for, `Context.class_prior`) or 'truth' (annotations or an LLM's yes/no answers,
        `Context.class_truth`; 1 links, 0 or unknown do not).
    evidence_floor : float, default 0.6
        With `class_consistent`, the least training-image AUROC of "the image's class is linked to
        the concept" for a concept to carry weight; in [0, 1] (0.5 is chance).
    on : {'embedding', 'features', 'auto'}, default 'embedding'
        What the grounding functions read: the L2-normalised image embedding (the reference), the
        backbone's layer features, or 'auto' (features when the bundle has them).

    References
    ----------
    Yang et al., "A Textbook Remedy for Domain Shifts: Knowledge Priors for Medical Image
    Analysis", NeurIPS 2024.
    """

    name = "knobo"
    # each concept's detector is trained on its class links (the truth check says so); a dense head by
    # design (NEC protocols refit on transform() instead); the epoch with the best validation accuracy
    # is kept
    tags = replace(Method.tags, uses_validation=True, grounds_from_links=True)
    _arrays = ("class_weights_", "intercept_", "grounding_coef_", "grounding_intercept_",
               "concept_val_accuracy_", "concept_train_accuracy_", "kept_", "prior_")
    _array_shapes: ClassVar[dict[str, tuple]] = {
        "grounding_coef_": ("k", None), "grounding_intercept_": ("k",),
        "concept_val_accuracy_": ("k",), "concept_train_accuracy_": ("k",), "kept_": (None,),
        "prior_": ("m", "k")}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_concepts": [Interval(int, 1), None], "epochs": [Interval(int, 1)],
        "batch_size": [Interval(int, 1)], "max_examples": [Interval(int, 2)],
        "train_samples": [Interval(int, 2)], "max_val": [Interval(int, 1)], "min_val": [Interval(int, 1)],
        "seed": [Interval(int, 0)],
        "lr": [Interval(float, 0, None, closed="neither")], "prior_weight": [Interval(float, 0, None)],
        "val_fraction": [Interval(float, 0, 1, closed="neither")],
        "add_prior": [Boolean("true or false")], "positive": POSITIVE, **CLASS_CONSISTENT,
        "on": [Options(INPUTS, description="'embedding' (the reference: the image encoder's embedding), "
                                           "'features' (the backbone's layer features) or 'auto' (features "
                                           "when the backbone has them)")],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        "n_concepts": "n_concepts = 150, the reference's (None keeps every grounded concept)",
        "epochs": "epochs = 200", "batch_size": "batch_size = 64", "max_examples": "max_examples = 10000",
        "train_samples": "train_samples = 2000", "max_val": "max_val = 50", "min_val": "min_val = 10",
        "seed": "seed = 0", "lr": "lr = 1e-3", "prior_weight": "prior_weight = 1.0",
        "val_fraction": "val_fraction = 0.1",
        "add_prior": "add_prior = true (KnoBo is the model with the prior)"}

    def __init__(self, n_concepts: int | None = 150, add_prior: bool = True,
                 prior_weight: float = 1.0, epochs: int = 200, lr: float = 1e-3,
                 batch_size: int = 64, positive: bool = False, max_examples: int = 10000,
                 train_samples: int = 2000, val_fraction: float = 0.1, max_val: int = 50,
                 min_val: int = 10, seed: int = 0, class_consistent: bool = False,
                 links: str = "generated", evidence_floor: float = 0.6, on: str = "embedding"):
        self.on = on
        self.class_consistent, self.links, self.evidence_floor = class_consistent, links, evidence_floor
        self.n_concepts, self.add_prior, self.prior_weight = n_concepts, add_prior, prior_weight
        self.epochs, self.lr, self.batch_size, self.positive = epochs, lr, batch_size, positive
        self.max_examples, self.train_samples = max_examples, train_samples
        self.val_fraction, self.max_val, self.min_val, self.seed = val_fraction, max_val, min_val, seed

    # -- parameters -------------------------------------------------------------------
    # -- grounding functions ----------------------------------------------------------
    def _ground(self, X: np.ndarray, y: np.ndarray, P: np.ndarray) -> None:
        """One logistic regression per concept on pseudo-labels from the class-level prior."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        k, d = P.shape[1], X.shape[1]
        self.grounding_coef_ = np.zeros((k, d), np.float32)
        self.grounding_intercept_ = np.zeros(k, np.float32)
        self.concept_val_accuracy_ = np.full(k, -1.0)
        self.concept_train_accuracy_ = np.full(k, -1.0)
        self.skipped_, self.not_converged_ = {}, []
        for j, concept in enumerate(self.concepts_):
            pos = np.flatnonzero(P[y, j] == 1).tolist()
            neg = np.flatnonzero(P[y, j] == -1).tolist()
            split = grounding_split(pos, neg, self.seed, self.max_examples, self.train_samples,
                                    self.val_fraction, self.max_val, self.min_val)
            if isinstance(split, str):
                self.skipped_[concept] = split
                log.info("knobo: skipping concept %r: %s.", concept, split)
                continue
            pos_train, neg_train, pos_val, neg_val = split
            Xt, yt = X[pos_train + neg_train], np.array([1] * len(pos_train) + [0] * len(neg_train))
            Xv, yv = X[pos_val + neg_val], np.array([1] * len(pos_val) + [0] * len(neg_val))
            model = LogisticRegression(max_iter=1000, class_weight="balanced")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(Xt, yt)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                self.not_converged_.append(concept)
            self.grounding_coef_[j] = model.coef_[0]
            self.grounding_intercept_[j] = model.intercept_[0]
            self.concept_train_accuracy_[j] = model.score(Xt, yt)
            self.concept_val_accuracy_[j] = model.score(Xv, yv)
        if self.not_converged_:
            log.warning("knobo: the grounding functions of %d concept(s) did not converge in 1000 "
                        "iterations (as the reference allows): %s", len(self.not_converged_),
                        ", ".join(repr(c) for c in self.not_converged_[:5]))
        if self.skipped_:
            log.warning("knobo: %d of %d concepts have no grounding function (too few images on a "
                        "side; reasons in model.skipped_), e.g. %r: %s.", len(self.skipped_), k,
                        next(iter(self.skipped_)), next(iter(self.skipped_.values())))

    def _select(self) -> np.ndarray:
        """Grounded concepts by validation accuracy, highest first, ties in concept order."""
        grounded = [j for j in range(len(self.concepts_)) if self.concept_val_accuracy_[j] >= 0]
        if not grounded:
            reasons = "; ".join(f"{c!r}: {why}" for c, why in list(self.skipped_.items())[:3])
            raise DataError(
                f"knobo: no concept could be grounded: each of the {len(self.concepts_)} concepts "
                f"lacks images on one side ({reasons}). A grounding function needs training images "
                "of classes the prior says 'yes' for and of classes it says 'no' for, with "
                f"int({self.val_fraction} x the smaller side) >= min_val={self.min_val} (the "
                "reference's rule: >= 100 per side). Use more training images per class, lower "
                "min_val (e.g. min_val=2 for a few-shot run), or give a prior with both yes and no "
                "for each concept (class_truth from annotations).")
        order = sorted(grounded, key=lambda j: -self.concept_val_accuracy_[j])  # stable
        n = len(order) if self.n_concepts is None else min(self.n_concepts, len(order))
        return np.array(order[:n], dtype=np.int64)

    def _grounded(self, Xn: np.ndarray) -> np.ndarray:
        """(n, kept) probabilities, as sklearn's predict_proba(x)[:, 1] computes them."""
        z = Xn @ self.grounding_coef_[self.kept_].T + self.grounding_intercept_[self.kept_]
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)

    @property
    def bottleneck_(self) -> np.ndarray:
        """The concepts in the bottleneck (columns of transform() that are not constant 0): what
        grounding measures score."""
        self.check_fitted()
        return self.kept_

    def transform(self, bundle) -> np.ndarray:
        """(n, k): each kept concept's grounding probability; 0 for concepts not in the bottleneck."""
        self.check_fitted()
        Xn = unit_rows(self._x(bundle))
        A = np.zeros((len(Xn), len(self.concepts_)), np.float32)
        A[:, self.kept_] = self._grounded(Xn)
        return A

    def torch_head(self):
        """The grounding and final layers as a torch module (methods/torch_head.py; Exportable)."""
        from .torch_head import grounded_probabilities, make_torch_head

        self.check_fitted()
        k, kept = len(self.concepts_), np.asarray(self.kept_, dtype=np.int64)
        coef = np.zeros((k, self.grounding_coef_.shape[1]), np.float32)
        intercept, mask = np.zeros(k, np.float32), np.zeros(k, np.float32)
        coef[kept], intercept[kept], mask[kept] = self.grounding_coef_[kept], self.grounding_intercept_[kept], 1
        return make_torch_head(self, grounded_probabilities, {"coef": coef, "intercept": intercept, "mask": mask})

    # -- fitting ----------------------------------------------------------------------
    def _fit(self, train, context: Context, val) -> None:
        self.input = self.on if self.on != "auto" else (
            "features" if train.features is not None else "embedding")
        self.feature_key_ = self.input
        self.concepts_ = list(context.concepts)
        m, k = len(self.classes_), len(self.concepts_)
        y = np.asarray(train.labels)
        if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= m):
            raise DataError(f"knobo: labels must be class indices in [0, {m}); got {y.dtype} values "
                            f"from {y.min()} to {y.max()}.")
        P, self.prior_source_ = prior_matrix(context, m, k)
        self.prior_ = P.astype(np.float32)
        X = unit_rows(self._x(train))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # one small fit per concept: BLAS threads only add contention
            self._ground(X, y, P)
        self.kept_ = self._select()
        C = self._grounded(X)
        C_val = y_val = None
        if val is not None:
            C_val, y_val = self._grounded(unit_rows(self._x(val))), np.asarray(val.labels)
        # on the training images (the run's truth check measures validation ones, unseen here)
        support = fit_support(self, context, C, y, self.kept_)
        if support is not None:  # evidence over all concepts (NaN for those not in the bottleneck)
            evidence = np.full(k, np.nan)
            evidence[self.kept_] = self.concept_evidence_
            self.concept_evidence_ = evidence
        with limit_threads(1):  # (64 x 150) batches: waking BLAS threads costs more than it saves
            W, b = self._train_head(C, y, P[:, self.kept_], C_val, y_val, support)
        self.class_weights_ = np.zeros((m, k), np.float32)
        self.class_weights_[:, self.kept_] = W
        self.intercept_ = b

    def _train_head(self, C, y, P_kept, C_val, y_val, support=None) -> tuple[np.ndarray, np.ndarray]:
        """`cbm.py`'s `train_model`: CE (+ prior loss), Adam, best validation epoch; with a
        class-consistent `support` (m, kept), W is projected onto W >= 0 and W = 0 off the
        support after each step (the projection onto that set: clamp, then mask). The steps
        are torch's arithmetic in numpy (methods/knobo_head.py)."""
        out = train_head(C, y, len(self.classes_), P_kept if self.add_prior else None,
                         self.prior_weight, self.epochs, self.lr, self.batch_size, self.seed,
                         positive=self.positive, support=support, C_val=C_val, y_val=y_val)
        self.final_loss_ = out["final_loss"]
        self.used_validation_ = C_val is not None
        self.val_history_ = out["history"]
        self.best_epoch_ = out["best_epoch"]
        return out["W"], out["b"]

    # -- files ------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {"skipped": dict(self.skipped_), "not_converged": list(self.not_converged_),
                "prior_source": self.prior_source_, "best_epoch": self.best_epoch_,
                "used_validation": self.used_validation_, "val_history": list(self.val_history_),
                "final_loss": self.final_loss_, "input": self.input, **evidence_state(self)}

    def _load_extra(self, extra: dict) -> None:
        self.skipped_ = {str(c): str(why) for c, why in extra["skipped"].items()}
        self.not_converged_ = [str(c) for c in extra["not_converged"]]
        self.prior_source_ = str(extra["prior_source"])
        self.best_epoch_ = int(extra["best_epoch"])
        self.used_validation_ = bool(extra["used_validation"])
        self.val_history_ = [float(a) for a in extra["val_history"]]
        self.final_loss_ = extra["final_loss"]
        load_evidence(self, extra)
        self.input = extra.get("input", "embedding")
        k = len(self.concepts_)
        if np.any((self.kept_ < 0) | (self.kept_ >= k)) or len(set(self.kept_.tolist())) != len(self.kept_):
            raise ValueError(f"kept_ must hold distinct concept indices in [0, {k})")
