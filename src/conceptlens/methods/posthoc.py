"""`posthoc` and `posthoc_hybrid`: Post-hoc CBM (Yuksekgonul, Wang & Zou, ICLR 2023).

Followed (github.com/mertyg/post-hoc-cbm, HEAD of the stored snapshot):
- `models/pcbm_utils.py` `PosthocLinearCBM.compute_dist`: a concept activation is the
  geometric margin (w . x + b) / ||w|| of the image embedding to the concept's hyperplane.
  Text concepts (`learn_concepts_multimodal.py`) are unit text embeddings with b = 0, so
  their margin is the plain projection x . w.
- `train_pcbm.py` `run_linear_probe`: the raw margins (no standardisation) go to
  `sklearn.linear_model.SGDClassifier(random_state=seed, loss="log_loss", alpha=lam,
  l1_ratio=alpha, penalty="elasticnet", max_iter=10000)` (one-vs-rest for several classes;
  seed 42, alpha 0.99; README trains with lam 2e-4), whose coef_/intercept_ become the layer.
- `train_pcbm_h.py` + `PosthocHybridCBM`: PCBM-h freezes that layer and adds a residual
  `nn.Linear(d, m)` on the embedding (PyTorch's default init), trained with Adam (lr 0.01,
  20 epochs, batch 64, shuffled) on cross-entropy(bottleneck + residual) +
  l2 * mean(W_residual ** 2) with l2 = 1e-3 (bias not penalised).
- `concepts/concept_utils.py` `get_cavs`/`learn_concept_bank` and `data/concept_loaders.py`
  `broden_concept_loaders`: a CAV is `sklearn.svm.SVC(C=C, kernel="linear")` on 2 x
  n_samples positives and 2 x n_samples negatives drawn per concept (without replacement,
  or with replacement when there are fewer), the first n_samples of each to train and the
  rest to validate; train/val accuracy are kept. `learn_concepts_dataset.py`: n_samples 50,
  C in {0.01, 0.1} by default (one bank per C); the README trains on the C = 0.1 bank.

NEC targeting (`target_nec`, used by the run's accuracy-at-NEC refit):
- solver "sgd" (default): lam is searched, not set. SGDClassifier's objective is
  mean log-loss + lam (l1_ratio |W|_1 + (1 - l1_ratio)/2 |W|^2), so the lam at which all
  weights vanish is the GLM's lambda_max; a geometric grid of 30 lams from there down to
  1e-4 x lambda_max is fitted (each fit a plain SGDClassifier with the same seed, so the
  returned model equals a direct sklearn fit at the `lam_` it reports) until NEC reaches the
  target, then 6 log-bisection steps keep the largest NEC not above it. NEC is not exactly
  monotone in lam for SGD; the search keeps the best point it saw.
- solver "glm": our warm-started elastic-net multinomial GLM path (`fit_sparse_layer`),
  stopped at the target NEC with bisection (as for `label_free`). Softmax, not OvR.

Non-negative concept weights (`positive=True`, ours; default False, the reference): the class
weights are constrained to W >= 0 (intercepts free), so each class is explained by concepts
whose margin raises its logit (concepts present) rather than by concepts absent.
SGDClassifier has no positivity constraint, so with solver "sgd" the layer is fitted by our
solver (`solvers.glm`, loss "ovr") on the SAME objective SGDClassifier minimises: for each
class c against the rest, mean log-loss + lam (alpha |w_c|_1 + (1 - alpha)/2 |w_c|^2), solved
exactly (FISTA with the prox of elastic net + indicator of w >= 0) for the classes present in
the training labels; `target_nec` runs our path (from the constrained lambda_max) with
bisection instead of the SGD grid. A two-class problem gets two rows, each class against the
other (one hyperplane w with rows (-w/2, w/2) would need a negative row). With solver "glm"
it is the softmax GLM under W >= 0. PCBM-h's residual stays unconstrained: only the concept
layer is what an explanation reads.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| image embedding [1] | CLIP `encode_image`, unnormalised | L2-normalised | margins ~1/norm x |
| binary problems [2] | one OvR row w | rows (-w/2, w/2) | none |
| absent classes [3] | not representable | weight 0, intercept -1e3 | never predicted |
| PCBM-h seed | unseeded | `seed` (torch Generator) | reproducible |
| CAV sampling | unseeded global RNG (Broden) | RandomState(seed) | reproducible |
| CAV negatives [6] | labelled absent (CUB), a folder (Broden) | folder, else other concepts' | see [6] |
| options [4] | absent | solver "glm", standardize, "lbfgs" residual | only when set |
| `positive` [7] | absent (SGDClassifier has no W >= 0) | same OvR objective, our FISTA, W >= 0 | if set |
| `class_consistent` | absent (any class weighs any concept) | a class weighs only concepts linked to it with training-image evidence, W >= 0 (methods/class_consistent.py) | if set |
| predict_proba [5] | sklearn's normalised sigmoids | softmax of the logits | same argmax |

[1] Every conceptlens backbone returns unit embeddings, so a lam regularises relatively more
    than with the reference's raw CLIP features; lower lam to compare with published numbers.
[2] Every method keeps one weight row per class: the logit difference is w.x + b, so
    predictions and sigmoid probabilities equal sklearn's; NEC = non-zeros of w.
[3] SGDClassifier fits only the classes present in the training labels.
[4] Kept from before for comparisons: solver "glm" (softmax elastic-net path),
    `standardize=True` (z-scored margins), PCBM-h `residual_solver="lbfgs"` (full batch).
[5] One probability rule for every method; accuracy and argmax are unchanged.
[6] `concepts cav --negatives DIR` (DIR/<concept>/...) is Broden's layout. Without it, a
    concept's negatives are the other concept folders' images (files with the same bytes as
    one of its own images left out), the folder analogue of CUB's "attribute label 0"; an
    image filed under another concept may still show this one, which the reference's
    per-image labels would exclude.
[7] Our FISTA solves the objective to a tolerance, where SGD's iterates stop early, so even
    without the constraint the two layers would differ slightly; binary problems get one row
    per class (see above). Effect on accuracy and explanation precision not measured yet.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..validation import Boolean, InstanceOf, Interval, Options
from .base import METHODS, Context, Method
from .class_consistent import CONSTRAINTS as CLASS_CONSISTENT
from .class_consistent import evidence_state, fit_support, load_evidence
from .sparse_layer import ALPHA, POSITIVE, TARGET_NEC, fit_sparse_layer, standardize

CAV_FORMAT = "conceptlens.cavs"
ABSENT_CLASS_INTERCEPT = -1e3


# -- concept activation vectors -------------------------------------------------------------

@dataclass
class CAVBank:
    """Concept activation vectors: SVM hyperplanes w . x + b = 0 in the embedding space."""

    concepts: list[str]
    vectors: np.ndarray  # (k, d) the SVMs' coef_, not normalised
    intercepts: np.ndarray  # (k,)
    train_accuracy: np.ndarray  # (k,)
    val_accuracy: np.ndarray  # (k,)
    meta: dict = field(default_factory=dict)  # backbone, on, C, n_samples, seed, ...

    def margins(self, X: np.ndarray) -> np.ndarray:
        """Geometric margins (w . x + b) / ||w|| (n, k), as `PosthocLinearCBM.compute_dist`."""
        norms = np.linalg.norm(self.vectors, axis=1)
        return (np.asarray(X) @ self.vectors.T + self.intercepts) / norms

    def save(self, path: str | Path) -> Path:
        from .._io import save_tensors

        arrays = {"vectors": np.ascontiguousarray(self.vectors, np.float32),
                  "intercepts": np.asarray(self.intercepts, np.float32),
                  "train_accuracy": np.asarray(self.train_accuracy, np.float32),
                  "val_accuracy": np.asarray(self.val_accuracy, np.float32)}
        meta = {"format": CAV_FORMAT, "concepts": json.dumps(list(self.concepts)),
                **{k: json.dumps(v) for k, v in self.meta.items()}}
        return save_tensors(path, arrays, meta)

    @staticmethod
    def load(path: str | Path) -> CAVBank:
        from .._io import load_tensors

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"CAV file {path} does not exist. Learn one with `conceptlens concepts "
                              f"cav --images DIR --backbone SPEC --out {path.name}`.")
        arrays, meta = load_tensors(path)
        if meta.get("format") != CAV_FORMAT or "vectors" not in arrays:
            raise DataError(f"{path} is not a conceptlens CAV file (format {meta.get('format')!r}, "
                            f"expected {CAV_FORMAT!r}); write it with `conceptlens concepts cav`.")
        concepts = json.loads(meta["concepts"])
        if len(concepts) != len(arrays["vectors"]):
            raise DataError(f"{path}: {len(concepts)} concept names for {len(arrays['vectors'])} vectors.")
        extra = {k: json.loads(v) for k, v in meta.items()
                 if k not in ("format", "concepts") and not k.startswith("conceptlens.")}
        return CAVBank(concepts, arrays["vectors"], arrays["intercepts"], arrays["train_accuracy"],
                       arrays["val_accuracy"], extra)


def _draw(n: int, size: int, rng: np.random.RandomState) -> tuple[np.ndarray, bool]:
    """`size` indices from range(n): without replacement when there are enough, else with
    (as the reference's concept loaders do). Returns (indices, drawn with replacement)."""
    if n >= size:
        return rng.choice(n, size, replace=False), False
    return rng.choice(n, size, replace=True), True


def learn_cav(pos: np.ndarray, neg: np.ndarray, C: float = 0.1, n_samples: int = 50,
              rng: np.random.RandomState | None = None) -> dict:
    """One CAV as the reference's `learn_concept_bank` + `get_cavs`: draw 2 x n_samples of each
    side, train `SVC(C, kernel="linear")` on the first n_samples of each, validate on the rest."""
    from sklearn.svm import SVC

    rng = rng if rng is not None else np.random.RandomState(0)
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    ip, rp = _draw(len(pos), 2 * n_samples, rng)
    ineg, rn = _draw(len(neg), 2 * n_samples, rng)
    pos, neg = pos[ip], neg[ineg]
    X_train = np.concatenate([pos[:n_samples], neg[:n_samples]])
    X_val = np.concatenate([pos[n_samples:], neg[n_samples:]])
    y_train = np.r_[np.ones(n_samples), np.zeros(n_samples)]
    y_val = np.r_[np.ones(len(pos) - n_samples), np.zeros(len(neg) - n_samples)]
    svm = SVC(C=C, kernel="linear").fit(X_train, y_train)
    return {"vector": svm.coef_[0], "intercept": float(svm.intercept_[0]),
            "train_accuracy": float(svm.score(X_train, y_train)),
            "val_accuracy": float(svm.score(X_val, y_val)), "with_replacement": rp or rn}


def learn_cav_bank(examples: Mapping[str, tuple[np.ndarray, np.ndarray]], C: float = 0.1,
                   n_samples: int = 50, seed: int = 1, meta: dict | None = None) -> CAVBank:
    """CAVs for {concept: (positive embeddings, negative embeddings)}, in that order, from one
    RandomState(seed) (the reference's `learn_concepts_dataset.py` seeds with 1)."""
    if not C > 0 or n_samples < 1:
        raise ConfigError(f"CAVs need C > 0 and n_samples >= 1; got C={C}, n_samples={n_samples}.")
    rng = np.random.RandomState(seed)
    names, rows = [], []
    for name, (pos, neg) in examples.items():
        if len(pos) < 2 or len(neg) < 2:
            raise DataError(f"Concept {name!r} needs at least 2 positive and 2 negative examples; "
                            f"got {len(pos)} and {len(neg)}. Add example images for it.")
        names.append(name)
        rows.append(learn_cav(pos, neg, C, n_samples, rng))
    if not rows:
        raise DataError("No concepts to learn CAVs for.")
    replaced = [n for n, r in zip(names, rows, strict=True) if r["with_replacement"]]
    return CAVBank(names, np.asarray([r["vector"] for r in rows], np.float32),
                   np.asarray([r["intercept"] for r in rows], np.float32),
                   np.asarray([r["train_accuracy"] for r in rows], np.float32),
                   np.asarray([r["val_accuracy"] for r in rows], np.float32),
                   {**(meta or {}), "C": C, "n_samples": n_samples, "seed": seed,
                    "sampled_with_replacement": replaced})


def learn_cavs(examples: Mapping[str, tuple[np.ndarray, np.ndarray]], C: float = 0.1,
               seed: int = 1, n_samples: int = 50) -> tuple[list[str], np.ndarray]:
    """(concept names, unit CAVs (k, d)); see `learn_cav_bank` for the full bank."""
    bank = learn_cav_bank(examples, C, n_samples, seed)
    v = bank.vectors / np.linalg.norm(bank.vectors, axis=1, keepdims=True)
    return bank.concepts, v.astype(np.float32)


# -- the sparse layer -----------------------------------------------------------------------

def sgd_classifier(lam: float, alpha: float = 0.99, max_iter: int = 10000, seed: int = 42):
    """The reference's classifier (`train_pcbm.py` `run_linear_probe`), unfitted."""
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(random_state=seed, loss="log_loss", alpha=lam, l1_ratio=alpha, verbose=0,
                         penalty="elasticnet", max_iter=max_iter)


def fit_sgd_layer(Z: np.ndarray, y: np.ndarray, n_classes: int, lam: float, alpha: float = 0.99,
                  max_iter: int = 10000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The reference's SGDClassifier on activations Z; returns W (m, k), b (m,) for all classes."""
    from sklearn.exceptions import ConvergenceWarning

    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"The sparse layer needs images of at least 2 classes; got only class {present}.")
    with warnings.catch_warnings():
        # max_iter=10000 as the reference; SGD's tol-based stop usually ends far earlier
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = sgd_classifier(lam, alpha, max_iter, seed).fit(Z, y)
    coef, icpt = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # one hyperplane: symmetric rows keep its decision and sigmoid
        coef, icpt = np.vstack([-coef[0] / 2, coef[0] / 2]), np.r_[-icpt[0] / 2, icpt[0] / 2]
    W = np.zeros((n_classes, Z.shape[1]), np.float32)
    b = np.full(n_classes, ABSENT_CLASS_INTERCEPT, np.float32)
    W[clf.classes_] = coef
    b[clf.classes_] = icpt
    return W, b


def fit_positive_ovr_layer(Z: np.ndarray, y: np.ndarray, n_classes: int, lam: float | None,
                           alpha: float = 0.99, target_nec: float | None = None
                           ) -> tuple[np.ndarray, np.ndarray, float]:
    """SGDClassifier's one-vs-rest elastic-net objective under W >= 0, solved by our FISTA path
    (`solvers.glm`, loss "ovr") for the classes present in y, one row per present class (also
    with two classes); absent classes get weight 0 and intercept -1e3 as in `fit_sgd_layer`.
    `target_nec` is met over the present classes. Returns W (m, k), b (m,), the lam used."""
    y = np.asarray(y)
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"The sparse layer needs images of at least 2 classes; got only class {present}.")
    Wp, bp, lam_used = fit_sparse_layer(Z, np.searchsorted(present, y), len(present), lam, target_nec,
                                        alpha, positive=True, loss="ovr")
    W = np.zeros((n_classes, Z.shape[1]), np.float32)
    b = np.full(n_classes, ABSENT_CLASS_INTERCEPT, np.float32)
    W[present], b[present] = Wp, bp
    return W, b, lam_used


def _nec(W: np.ndarray) -> float:
    return float((W != 0).sum(1).mean())


def fit_sgd_at_nec(Z: np.ndarray, y: np.ndarray, n_classes: int, target_nec: float,
                   alpha: float = 0.99, max_iter: int = 10000, seed: int = 42, n_lambdas: int = 30,
                   epsilon: float = 1e-4, refine: int = 6) -> tuple[np.ndarray, np.ndarray, float]:
    """SGD sparse layer whose NEC is the largest found not above `target_nec` (see the module
    docstring). Returns W, b and the lam of that fit."""
    from ..solvers.glm import lambda_max

    present = np.unique(y)
    yy = np.searchsorted(present, y)  # lambda_max over the classes SGD will see
    lmax = lambda_max(Z, yy, alpha, len(present))
    fits: list[tuple[float, np.ndarray, np.ndarray, float]] = []

    def fit(lam):
        W, b = fit_sgd_layer(Z, y, n_classes, lam, alpha, max_iter, seed)
        fits.append((lam, W, b, _nec(W)))
        return fits[-1]

    prev = None
    for lam in np.geomspace(lmax, lmax * epsilon, n_lambdas):
        cur = fit(float(lam))
        if cur[3] >= target_nec:
            if cur[3] > target_nec and prev is not None:
                hi, lo = prev[0], cur[0]  # NEC(hi) < target < NEC(lo)
                for _ in range(refine):
                    mid = math.sqrt(hi * lo)
                    m = fit(mid)
                    if m[3] > target_nec:
                        lo = mid
                    elif m[3] == target_nec:
                        break
                    else:
                        hi = mid
            break
        prev = cur
    ok = [f for f in fits if f[3] <= target_nec]
    # the largest NEC not above the target (ties: the larger lam); else the sparsest fit
    lam, W, b, _ = max(ok, key=lambda f: (f[3], f[0])) if ok else min(fits, key=lambda f: f[3])
    return W, b, lam


# -- the methods ----------------------------------------------------------------------------

@METHODS.register("posthoc")
class PostHoc(Method):
    """PCBM: concept margins -> the reference's sparse SGDClassifier (or our GLM path).

    `cavs`: the path of a CAV file from `conceptlens concepts cav`; its vectors (and their
    image key, `embedding` or `features`) replace the context's text concept embeddings, and
    its concept names become `concepts_`. In a run config: `[methods.posthoc]` then
    `cavs = "cavs.safetensors"` (likewise `[methods.posthoc_hybrid]`).

    Parameters
    ----------
    lam : float, default 2e-4
        The elastic-net strength (SGDClassifier's `alpha`; the reference's README trains with
        2e-4); >= 0. Searched rather than set when `target_nec` is given.
    target_nec : float or None, default None
        Stop at this NEC (effective concepts per class); > 0: solver 'sgd' searches lam on a grid
        with bisection, 'glm' stops our path there. None: the single `lam`.
    alpha : float, default 0.99
        The elastic net's L1 share (SGDClassifier's `l1_ratio`), in [0, 1].
    solver : {'sgd', 'glm'}, default 'sgd'
        'sgd': the reference's one-vs-rest `SGDClassifier(log_loss, elasticnet)`; 'glm' (ours): our
        softmax elastic-net GLM path.
    max_iter : int, default 10000
        SGDClassifier's `max_iter` (solver 'sgd'); >= 1.
    seed : int, default 42
        SGDClassifier's `random_state` (and, for PCBM-h, the residual's initialisation and batch
        order); >= 0.
    standardize : bool, default False
        Ours: z-score the concept margins with the training mean and standard deviation (the
        reference uses raw margins).
    cavs : str or None, default None
        Path of a CAV file from `conceptlens concepts cav`: its vectors (and their image key,
        `embedding` or `features`) replace the context's text concept embeddings, and its concept
        names become `concepts_`. None: text concept vectors.
    positive : bool, default False
        Ours: concept weights constrained to >= 0 (with solver 'sgd', SGDClassifier's objective
        solved by our constrained solver), so each class is explained by concepts present.
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

    References
    ----------
    Yuksekgonul, Wang & Zou, "Post-hoc Concept Bottleneck Models", ICLR 2023.
    """

    tags = replace(Method.tags, refit_at_nec=True)
    _arrays = ("class_weights_", "intercept_", "concept_vectors_", "concept_intercepts_", "mean_",
               "std_")
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "solver": [Options("sgd", "glm", description="'sgd' (the reference's SGDClassifier) or 'glm' "
                                                     "(our elastic-net path)")],
        "positive": POSITIVE, **CLASS_CONSISTENT,
        # SGDClassifier's 'optimal' learning rate divides by alpha, so lam must be > 0 there (_validate)
        "lam": [Interval(float, 0, None)], "alpha": ALPHA, "target_nec": TARGET_NEC,
        "max_iter": [Interval(int, 1)], "seed": [Interval(int, 0)],
        "standardize": [Boolean("true or false")],
        # a string, so the model's saved params stay JSON
        "cavs": [InstanceOf(str, "the path (a string) of a CAV file from `conceptlens concepts cav`"), None],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        "lam": "lam = 2e-4", "alpha": "alpha = 0.99", "target_nec": "target_nec = 5"}

    def __init__(self, lam: float = 2e-4, target_nec: float | None = None, alpha: float = 0.99,
                 solver: str = "sgd", max_iter: int = 10000, seed: int = 42,
                 standardize: bool = False, cavs: str | None = None, positive: bool = False,
                 class_consistent: bool = False, links: str = "generated", evidence_floor: float = 0.6):
        self.class_consistent, self.links, self.evidence_floor = class_consistent, links, evidence_floor
        self.lam, self.target_nec, self.alpha = lam, target_nec, alpha
        self.solver, self.max_iter, self.seed = solver, max_iter, seed
        self.standardize, self.cavs, self.positive = standardize, cavs, positive

    def _validate(self) -> None:
        super()._validate()
        n = self.name
        if self.lam == 0 and self.solver == "sgd" and not self.positive:  # SGDClassifier divides by it
            raise ConfigError(f"{n}: lam must be a finite number > 0 with solver 'sgd' (the reference's "
                              "SGDClassifier; 0 is allowed with solver 'glm' or positive); got "
                              f"{self.lam!r}. Example: lam = 2e-4.")
        if self.cavs is not None and not Path(self.cavs).is_file():
            raise ConfigError(f"{n}: CAV file {self.cavs} does not exist. Learn one with "
                              f"`conceptlens concepts cav --images DIR --backbone SPEC --out "
                              f"{Path(self.cavs).name}`.")

    def fit(self, train, context: Context, val=None) -> Method:
        self._validate()
        self.input = "embedding"
        if self.cavs is not None:
            bank = CAVBank.load(self.cavs)
            on = bank.meta.get("on", "embedding")
            made_with = bank.meta.get("backbone", "")
            if made_with and context.backbone_id and made_with != context.backbone_id:
                raise ConfigError(f"{self.name}: the CAVs in {self.cavs} were learnt with backbone "
                                  f"{made_with!r}, but this run uses {context.backbone_id!r}. Learn "
                                  f"them again with `conceptlens concepts cav --backbone ...` for it.")
            self.input = on
            x = getattr(train, on, None)
            if x is not None and np.shape(x)[1] != bank.vectors.shape[1]:
                raise ConfigError(f"{self.name}: the CAVs in {self.cavs} have dimension "
                                  f"{bank.vectors.shape[1]} but the image '{on}' has {np.shape(x)[1]}.")
            self._bank = bank
            context = replace(context, concepts=list(bank.concepts),
                              concept_embedding=np.asarray(bank.vectors, np.float32), class_prior=None,
                              concept_norm=None)  # the text norms do not describe CAVs
        return super().fit(train, context, val)

    def _fit(self, train, context: Context, val) -> None:
        self.feature_key_ = self.input
        bank = getattr(self, "_bank", None)
        if bank is not None:
            norms = np.linalg.norm(bank.vectors, axis=1)
            self.concept_vectors_ = (bank.vectors / norms[:, None]).astype(np.float32)
            self.concept_intercepts_ = (bank.intercepts / norms).astype(np.float32)
            del self._bank
        else:
            C = np.asarray(context.concept_embedding, dtype=np.float32)
            self.concept_vectors_ = C / np.linalg.norm(C, axis=1, keepdims=True)
            self.concept_intercepts_ = np.zeros(len(C), np.float32)
        self.concepts_ = list(context.concepts)
        A = self.margins(train)
        if self.standardize:
            self.mean_, self.std_ = standardize(A)
        else:
            self.mean_, self.std_ = np.zeros(A.shape[1], np.float32), np.ones(A.shape[1], np.float32)
        Z = (A - self.mean_) / self.std_
        y, m = np.asarray(train.labels), len(self.classes_)
        # the margins are fixed text directions, not fitted, so the training images are fair
        # evidence (and the head keeps uses_validation = False)
        support = None if bank is not None else fit_support(self, context, Z, y)
        if bank is not None and self.class_consistent:
            raise ConfigError(f"{self.name}: class_consistent needs concepts a source links to classes; "
                              "learned CAVs carry no class links. Turn class_consistent off with cavs.")
        if support is not None:  # our path solver under the support mask, the head's own loss
            self.class_weights_, self.intercept_, self.lam_ = fit_sparse_layer(
                Z, y, m, self.lam, self.target_nec, self.alpha, positive=True,
                loss="multinomial" if self.solver == "glm" else "ovr", support=support)
        elif self.solver == "glm":
            self.class_weights_, self.intercept_, self.lam_ = fit_sparse_layer(
                Z, y, m, self.lam, self.target_nec, self.alpha, positive=self.positive)
        elif self.positive:  # SGDClassifier's objective, our constrained solver (docstring)
            self.class_weights_, self.intercept_, self.lam_ = fit_positive_ovr_layer(
                Z, y, m, self.lam, self.alpha, self.target_nec)
        elif self.target_nec is not None:
            self.class_weights_, self.intercept_, self.lam_ = fit_sgd_at_nec(
                Z, y, m, self.target_nec, self.alpha, self.max_iter, self.seed)
        else:
            self.class_weights_, self.intercept_ = fit_sgd_layer(Z, y, m, self.lam, self.alpha,
                                                                 self.max_iter, self.seed)
            self.lam_ = float(self.lam)

    def _extra_state(self) -> dict:
        return {"lam": self.lam_, "input": self.input, **evidence_state(self)}

    def _load_extra(self, extra: dict) -> None:
        self.lam_ = extra["lam"]
        load_evidence(self, extra)
        self.input = extra.get("input", "embedding")

    def margins(self, bundle) -> np.ndarray:
        """Raw concept margins (w . x + b) / ||w|| (the vectors are stored unit-norm)."""
        return self._x(bundle) @ self.concept_vectors_.T + self.concept_intercepts_

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return (self.margins(bundle) - self.mean_) / self.std_

    def torch_head(self):
        """The concept and final layers as a torch module (methods/torch_head.py; Exportable)."""
        from .torch_head import make_torch_head, standardised_margins

        return make_torch_head(self, standardised_margins, {
            "vectors": self.concept_vectors_, "intercepts": self.concept_intercepts_, "mean": self.mean_,
            "std": self.std_}, residual=self._torch_residual())

    def _torch_residual(self):
        return None

    def concept_logits(self, bundle) -> np.ndarray:
        return self.head(self.transform(bundle))


def residual_loss(logits: torch.Tensor, y: torch.Tensor, residual_weight: torch.Tensor,
                  l2: float) -> torch.Tensor:
    """PCBM-h's training loss (`train_pcbm_h.py`): CE + l2 * mean(W_residual^2)."""
    return torch.nn.functional.cross_entropy(logits, y) + l2 * (residual_weight ** 2).mean()


def init_residual(d: int, m: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear(d, m)'s default initialisation, U(-1/sqrt(d), 1/sqrt(d)) for weight and bias,
    drawn from `generator`."""
    bound = 1.0 / math.sqrt(d)
    W = (torch.rand(m, d, generator=generator) * 2 - 1) * bound
    b = (torch.rand(m, generator=generator) * 2 - 1) * bound
    return W, b


@METHODS.register("posthoc_hybrid")
class PostHocHybrid(PostHoc):
    """PCBM-h: the PCBM layer, frozen, plus a residual linear layer on the embedding.
    `positive` constrains the concept layer only; the residual stays free.

    Parameters
    ----------
    lam : float, default 2e-4
        The elastic-net strength (SGDClassifier's `alpha`; the reference's README trains with
        2e-4); >= 0. Searched rather than set when `target_nec` is given.
    target_nec : float or None, default None
        Stop at this NEC (effective concepts per class); > 0: solver 'sgd' searches lam on a grid
        with bisection, 'glm' stops our path there. None: the single `lam`.
    alpha : float, default 0.99
        The elastic net's L1 share (SGDClassifier's `l1_ratio`), in [0, 1].
    solver : {'sgd', 'glm'}, default 'sgd'
        'sgd': the reference's one-vs-rest `SGDClassifier(log_loss, elasticnet)`; 'glm' (ours): our
        softmax elastic-net GLM path.
    max_iter : int, default 10000
        SGDClassifier's `max_iter` (solver 'sgd'); >= 1.
    seed : int, default 42
        SGDClassifier's `random_state` (and, for PCBM-h, the residual's initialisation and batch
        order); >= 0.
    standardize : bool, default False
        Ours: z-score the concept margins with the training mean and standard deviation (the
        reference uses raw margins).
    cavs : str or None, default None
        Path of a CAV file from `conceptlens concepts cav`: its vectors (and their image key,
        `embedding` or `features`) replace the context's text concept embeddings, and its concept
        names become `concepts_`. None: text concept vectors.
    residual_l2 : float, default 1e-3
        Weight of the residual's L2 term, residual_l2 * mean(W_residual ** 2) (bias not
        penalised); >= 0.
    epochs : int, default 20
        Adam epochs of the residual (`residual_solver='adam'`); >= 1.
    lr : float, default 0.01
        Adam's learning rate for the residual; > 0.
    batch_size : int, default 64
        The residual's Adam mini-batch size; >= 1.
    residual_solver : {'adam', 'lbfgs'}, default 'adam'
        'adam': the reference's shuffled mini-batch Adam; 'lbfgs' (ours): full-batch L-BFGS.
    residual_max_iter : int, default 200
        L-BFGS iterations for the residual (`residual_solver='lbfgs'`); >= 1.
    positive : bool, default False
        Ours: concept weights constrained to >= 0 (with solver 'sgd', SGDClassifier's objective
        solved by our constrained solver), so each class is explained by concepts present.

    References
    ----------
    Yuksekgonul, Wang & Zou, "Post-hoc Concept Bottleneck Models", ICLR 2023.
    """

    _arrays = (*PostHoc._arrays, "residual_weights_", "residual_intercept_")
    # PostHoc's parameters (its class_consistent option is not offered here) and the residual's
    _parameter_constraints: ClassVar[dict[str, list]] = {
        **{k: v for k, v in PostHoc._parameter_constraints.items() if k not in CLASS_CONSISTENT},
        "residual_l2": [Interval(float, 0, None)], "lr": [Interval(float, 0, None, closed="neither")],
        "epochs": [Interval(int, 1)], "batch_size": [Interval(int, 1)],
        "residual_max_iter": [Interval(int, 1)],
        "residual_solver": [Options("adam", "lbfgs", description="'adam' (the reference) or 'lbfgs' (full "
                                                                 "batch)")],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        **PostHoc._parameter_examples, "residual_l2": "residual_l2 = 1e-3", "lr": "lr = 0.01"}

    def __init__(self, lam: float = 2e-4, target_nec: float | None = None, alpha: float = 0.99,
                 solver: str = "sgd", max_iter: int = 10000, seed: int = 42,
                 standardize: bool = False, cavs: str | None = None, residual_l2: float = 1e-3,
                 epochs: int = 20, lr: float = 0.01, batch_size: int = 64,
                 residual_solver: str = "adam", residual_max_iter: int = 200, positive: bool = False):
        super().__init__(lam=lam, target_nec=target_nec, alpha=alpha, solver=solver, max_iter=max_iter,
                         seed=seed, standardize=standardize, cavs=cavs, positive=positive)
        self.residual_l2, self.epochs, self.lr, self.batch_size = residual_l2, epochs, lr, batch_size
        self.residual_solver, self.residual_max_iter = residual_solver, residual_max_iter

    def _fit(self, train, context: Context, val) -> None:
        super()._fit(train, context, val)  # the interpretable part, then frozen
        X = torch.from_numpy(self._x(train))
        base = torch.from_numpy(self.concept_logits(train).astype(np.float32))
        y = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
        g = torch.Generator().manual_seed(self.seed)
        W0, b0 = init_residual(X.shape[1], len(self.classes_), g)
        Wr, br = W0.requires_grad_(), b0.requires_grad_()
        if self.residual_solver == "adam":
            opt = torch.optim.Adam([Wr, br], lr=self.lr)
            for _ in range(self.epochs):
                order = torch.randperm(len(X), generator=g)
                for start in range(0, len(X), self.batch_size):
                    i = order[start : start + self.batch_size]
                    opt.zero_grad()
                    residual_loss(base[i] + X[i] @ Wr.T + br, y[i], Wr, self.residual_l2).backward()
                    opt.step()
        else:
            opt = torch.optim.LBFGS([Wr, br], max_iter=self.residual_max_iter,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = residual_loss(base + X @ Wr.T + br, y, Wr, self.residual_l2)
                loss.backward()
                return loss

            opt.step(closure)
        self.residual_weights_ = Wr.detach().numpy().astype(np.float32)
        self.residual_intercept_ = br.detach().numpy().astype(np.float32)

    def residual(self, bundle) -> np.ndarray:
        return self._x(bundle) @ self.residual_weights_.T + self.residual_intercept_

    def _torch_residual(self):
        from .torch_head import ArrayFunction, affine

        return ArrayFunction(affine, {"weight": self.residual_weights_, "bias": self.residual_intercept_})
