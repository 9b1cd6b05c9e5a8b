"""`labo`: Language in a Bottleneck (Yang et al., CVPR 2023).

Followed: YueYANG1996/LaBo @83ed4b0, `models/asso_opt/asso_opt.py` (AssoConcept /
AssoConceptFast: association matrix, softmax, loss, L1 and diversity terms), `main.py`
(`asso_opt_main`: Adam, `check_interval = 10`, `ModelCheckpoint(monitor='val_acc',
mode='max', save_top_k=1)`; `labo_test.sh` tests that best-validation checkpoint),
`data.py` (`DotProductDataset`: activations = image_feat @ concept_feat^T;
`use_img_norm`/`use_txt_norm`) and `cfg/asso_opt/base.py` + `cfg/asso_opt/*/*.py` (defaults).

Model. Concept activations A = f(x) t(C)^T (fixed). The association matrix V (m x k) starts
at `prior_strength` where the concept was generated for the class and 0 elsewhere; the
class-concept weights are W = softmax(V) over concepts; logits = scale * A W^T (scale 100,
"scaling as standard CLIP does"). Loss = cross-entropy
  + l1 * max_c ||V_c||_1                (reference: `vector_norm(asso_mat, 1, dim=-1).max()`,
                                          on the raw V; lambda_l1 = 0.01 when switched on)
  + diversity * (-mean_y var_n(A W^T))  (reference: `-th.var(sim, dim=0).mean()`, the unbiased
                                          variance over the images of the unscaled class
                                          scores; lambda_div = 0.005 when switched on).
Both terms are OFF in the reference's base config and in every dataset config
(`use_l1_loss = False`, `use_div_loss = False`), so both default to 0 here; pass l1=0.01 /
diversity=0.005 for the reference's weights.

Checkpoint selection. The reference validates every 10 epochs and keeps the checkpoint with
the highest validation accuracy (ties keep the earlier one: Lightning replaces the best only
on a strict improvement); at few shots this early stopping is the main regulariser. We do
the same: every `val_every` optimiser iterations (L-BFGS) or epochs (Adam), and at the final
iterate, accuracy on `val` is recorded in `val_history_` ([step, accuracy] pairs) and the
first iterate with the highest accuracy is kept; its step is `best_step_`. When `val` is
None (the reference always has one) the final iterate is used, `best_step_ == final_step_`
and `used_validation_` is False. `objective_` is the training objective at the returned
weights, `final_objective_` at the optimiser's last iterate; all of these are saved.

Similarity. The reference works on UNNORMALISED CLIP image and text embeddings
(`use_img_norm = use_txt_norm = False`): A holds raw dot products, so each image's logits
carry its embedding norm (a per-image temperature) and each concept's column its text norm
(which changes predictions). `similarity='dot'` does this; it needs the raw norms, which the
encode stage keeps beside the L2-normalised embeddings: `bundle.embedding_norm` (n,) and
`context.concept_norm` (k,) (raw = unit * norm; for hf and open_clip the norms of the
projection outputs, as the reference's `encode_image`/`encode_text` return them).
`similarity='cosine'` uses the L2-normalised embeddings. The default `'auto'` is the
reference ('dot') when the training bundle and the context carry the norms and 'cosine'
otherwise: features from cache entries written before norms were kept (any one row suffices),
precomputed files without `embedding_norm`, or backbones that cannot say what "raw" is;
`similarity_` records which. Clear the feature cache to get the norms for old entries.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| optimiser [1] | mini-batch Adam | the same (default); full-batch L-BFGS as an option | L-BFGS overfits |
| `class_consistent` | absent (any class weighs any concept) | a class weighs only concepts linked to it with training-image evidence, association -inf elsewhere (methods/class_consistent.py) | only when set |
| Adam settings [2] | per dataset config | lr=1e-4, batch_size='auto', epochs=10000 | set per dataset |
| Adam step | torch.optim.Adam, autograd | the same update with the gradient written out | none (tested) |
| device / precision | GPU, float32, Lightning | CPU; float32 (Adam), float64 (L-BFGS) | none measured |
| checkpoints [3] | every 10 epochs | every `val_every`, plus the final iterate | none for its configs |
| embeddings [4] | unnormalised | unnormalised when the norms are known, else cosine | changes predictions |
| init [5] | one-to-one concept->class | `prior_strength * class_prior`, many-to-many | shared concepts |
| init, no prior | impossible | uniform V = 1 | new capability |
| unused options [6] | rand/cls-name/cls-sim init, relu/tanh | not implemented | none for its configs |
| L-BFGS regularisers | per mini-batch | on the full training set | only with `'lbfgs'` |
| diversity, 1 image | NaN | term skipped | only at batch_size=1 |
| `standardize` | absent | optional, off | only when set |

[1] `optimizer='adam'` (default) runs the reference's loop: shuffled mini-batches of
    `batch_size`, Adam at `lr` for `epochs`, validation every `val_every` epochs.
    `optimizer='lbfgs'` is full-batch L-BFGS (validation every `val_every` iterations): seconds
    where the reference takes minutes to hours, but a weaker regulariser. On a synthetic noisy
    4-shot problem (3 classes, 24 concepts, a quarter of the training labels flipped, clean
    val; 4 seeds) L-BFGS with validation every 10 iterations reached test accuracy 0.44-0.63,
    Adam (lr 1e-3, bs 4, 500 epochs) 0.60-0.71: L-BFGS overfits within a few iterations.
    Hence the reference is the default.
[2] The reference sets lr (5e-6 to 1e-3), bs (2 to 2048) and max_epochs (1k to 20k) per
    dataset and shot count (`cfg/asso_opt/<DATASET>/*`). Our defaults: lr 1e-4, what its
    10-class configs (CIFAR10) use at every shot count (1e-5 is commonest over all datasets,
    which mostly have 100-1000 classes); the median max_epochs; and `batch_size='auto'` =
    n // 5 in [2, 512], the pattern of the per-shot configs (CIFAR10: bs = 2 x shots, 512 on
    full data), so an epoch is about five steps at any shot count. Measured on the demo
    (Fashion-MNIST, 300 images per class, 200 concepts, cosine): lr 1e-5 reaches 33.1% top-1
    in 10,000 epochs (it barely leaves the prior), 1e-4 67.2%, 1e-3 69.4%; L-BFGS 69.3%.
    Set them from the config to reproduce a published row.
[3] The reference validates at epochs 10, 20, ... (not at the initialisation); we also
    validate the final iterate when `epochs` is not a multiple of `val_every` (every
    reference config is a multiple).
[4] Our embeddings are L2-normalised; the reference behaviour uses the raw norms carried in
    `bundle.embedding_norm` and `context.concept_norm` (see "Similarity"). CLIP-family
    backbones report them; the offline backbone does not (a ConSE vector's norm is not a raw
    CLIP embedding's; used as one it cost 11-16 points on the demo), so it runs on cosine.
[5] The reference `scatter_`s `init_val` (1.0) through a one-to-one concept->class map and so
    loses concepts generated for several classes; identical when no concept is shared.
[6] `use_rand_init`, `cls_name_init`, `cls_sim_prior` and `asso_act` other than softmax are
    off (softmax) in every published config.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..progress import progress
from ..validation import Boolean, Interval, Options
from .base import METHODS, Context, Method
from .class_consistent import CONSTRAINTS as CLASS_CONSISTENT
from .class_consistent import evidence_state, fit_support, load_evidence

OPTIMIZERS = ("lbfgs", "adam")
SIMILARITIES = ("auto", "dot", "cosine")
OFF_SUPPORT = -1e4  # class_consistent: an association whose softmax weight is exactly 0


def row_l1_max(V: torch.Tensor) -> torch.Tensor:
    """The reference's sparsity term: the largest row L1 norm of the raw association matrix."""
    return V.abs().sum(dim=1).max()


def diversity_penalty(sim: torch.Tensor) -> torch.Tensor:
    """The reference's diversity term: minus the mean over classes of the (unbiased) variance
    over images of the unscaled class scores `sim = A W^T`."""
    return -torch.var(sim, dim=0).mean()


def labo_objective(V: torch.Tensor, A: torch.Tensor, y: torch.Tensor, scale: float,
                   l1: float = 0.0, diversity: float = 0.0) -> torch.Tensor:
    """Cross-entropy of `scale * A softmax(V)^T` plus the reference's optional terms."""
    sim = A @ torch.softmax(V, dim=1).T
    loss = torch.nn.functional.cross_entropy(scale * sim, y)
    if l1:
        loss = loss + l1 * row_l1_max(V)
    if diversity and len(A) > 1:  # the variance of one row is undefined (NaN in the reference)
        loss = loss + diversity * diversity_penalty(sim)
    return loss


def auto_batch_size(n: int) -> int:
    """The reference's configs use about a fifth of the training set per batch at few shots
    (CIFAR10: 2, 4, 8, 16, 32 at 1-16 shots; CUB 32-512; ImageNet 128-1024) and 256-2048 on
    full data, so an epoch is a handful of steps: n // 5, at least 2, at most 512."""
    return int(min(512, max(2, n // 5)))


def _labo_gradient(V: np.ndarray, A: np.ndarray, y: np.ndarray, scale: float, l1: float,
                   diversity: float, YT: np.ndarray | None = None) -> np.ndarray:
    """d labo_objective / dV, written out (mean cross-entropy over the batch); `YT`: the batch's
    one-hot labels as classes x images, when the caller holds them.

    The logits are held classes x images: the softmax's reductions over the classes are then
    element-wise over contiguous rows (over rows of 10 entries, numpy's max took 23 us for a batch
    of 512, against 2 us across them); A W^T, one BLAS call, is copied into that layout."""
    b, m = len(y), len(V)
    z = V - V.max(1, keepdims=True)
    W = np.exp(z)
    W /= W.sum(1, keepdims=True)
    L = np.empty((m, b), dtype=np.result_type(A, W))
    np.copyto(L, (A @ W.T).T)  # the similarities, (m, b)
    sim = L.copy() if diversity and b > 1 else None
    L *= scale
    L -= L.max(0)
    np.exp(L, out=L)
    L /= L.sum(0)
    if YT is None:
        YT = np.zeros_like(L)
        YT[np.asarray(y), np.arange(b)] = 1
    L -= YT  # softmax - one-hot
    L *= scale / b
    if sim is not None:  # d/dsim of -diversity * mean_classes(var_images(sim))
        L -= diversity * 2 * (sim - sim.mean(1, keepdims=True)) / ((b - 1) * m)
    dW = L @ A
    grad = W * (dW - (dW * W).sum(1, keepdims=True))
    if l1:  # the largest row L1 norm: torch's subgradient, shared evenly by tied rows
        norms = np.abs(V).sum(1)
        top = norms == norms.max()
        grad[top] += (l1 / top.sum()) * np.sign(V[top])
    return grad


def _norms(obj, attr: str, n: int, what: str) -> np.ndarray | None:
    norms = getattr(obj, attr, None)
    if norms is None:
        return None
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if norms.shape != (n,) or not np.all(np.isfinite(norms)) or np.any(norms <= 0):
        raise DataError(f"{what}.{attr} must hold {n} finite positive raw embedding norms; got "
                        f"shape {norms.shape}. Re-encode the features, or use similarity='cosine'.")
    return norms


@METHODS.register("labo")
class LaBo(Method):
    """LaBo's class-concept association head (softmax over concepts, initialised from the
    language prior); see the module docstring for the reference.

    Concept activations A = image embedding x concept embedding^T (fixed); the association V
    (classes x concepts) starts from the language prior; W = softmax(V) over concepts; logits =
    scale * A W^T; trained with cross-entropy, the checkpoint with the best validation accuracy kept.

    Parameters
    ----------
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
        association V; >= 0 (the reference's weight when switched on: 0.01). Not with
        `class_consistent`, which fixes the association at -inf off each class's linked concepts.
    diversity : float, default 0.0
        Weight of the reference's diversity term, minus the mean variance over images of the class
        scores; >= 0 (the reference's weight when switched on: 0.005).
    similarity : {'auto', 'dot', 'cosine'}, default 'auto'
        'dot': raw (unnormalised) dot products, as the reference, from the norms the encode stage
        keeps (`bundle.embedding_norm`, `context.concept_norm`); 'cosine': the L2-normalised
        embeddings; 'auto': 'dot' when the training bundle and the context carry the norms, else
        'cosine' (the offline backbone). `similarity_` records the choice.
    standardize : bool, default False
        Ours: standardise the activations with the training mean and standard deviation.
    random_state : int, default 0
        Seed of the Adam batch order (any integer).
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
    Yang et al., "Language in a Bottleneck: Language Model Guided Concept Bottlenecks for
    Interpretable Image Classification", CVPR 2023.
    """

    name = "labo"
    # softmax weights are dense by design (no sparse final layer); checkpoint selection on validation
    # accuracy
    tags = replace(Method.tags, uses_validation=True)
    _arrays = ("class_weights_", "association_", "concept_embedding_", "activation_mean_",
               "activation_std_")
    _array_shapes: ClassVar[dict[str, tuple]] = {
        "association_": ("m", "k"), "concept_embedding_": ("k", None), "activation_mean_": ("k",),
        "activation_std_": ("k",)}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "scale": [Interval(float, 0, None, closed="neither")], "prior_strength": [Interval(float, 0, None)],
        "lr": [Interval(float, 0, None, closed="neither")], "l1": [Interval(float, 0, None)],
        "diversity": [Interval(float, 0, None)], "max_iter": [Interval(int, 1)], "epochs": [Interval(int, 1)],
        "batch_size": [Options("auto", description="'auto'"), Interval(int, 1)],
        "val_every": [Interval(int, 1)],
        "optimizer": [Options(OPTIMIZERS)], "similarity": [Options(SIMILARITIES)],
        "standardize": [Boolean("True or False")], "random_state": [Interval(int)], **CLASS_CONSISTENT,
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        "scale": "scale = 100.0", "prior_strength": "prior_strength = 1.0", "lr": "lr = 1e-4",
        "l1": "l1 = 0.0 (the reference's weight when on: 0.01)",
        "diversity": "diversity = 0.0 (the reference's weight when on: 0.005)", "max_iter": "max_iter = 300",
        "epochs": "epochs = 10000", "batch_size": "batch_size = 'auto'", "val_every": "val_every = 10"}

    def __init__(self, scale: float = 100.0, prior_strength: float = 1.0, optimizer: str = "adam",
                 max_iter: int = 300, lr: float = 1e-4, epochs: int = 10000,
                 batch_size: int | str = "auto",
                 val_every: int = 10, l1: float = 0.0, diversity: float = 0.0,
                 similarity: str = "auto", standardize: bool = False, random_state: int = 0,
                 class_consistent: bool = False, links: str = "generated", evidence_floor: float = 0.6):
        self.class_consistent, self.links, self.evidence_floor = class_consistent, links, evidence_floor
        self.scale, self.prior_strength, self.optimizer = scale, prior_strength, optimizer
        self.max_iter, self.lr, self.epochs, self.batch_size = max_iter, lr, epochs, batch_size
        self.val_every, self.l1, self.diversity = val_every, l1, diversity
        self.similarity, self.standardize, self.random_state = similarity, standardize, random_state

    # -- parameters -------------------------------------------------------------------
    def _validate(self) -> None:
        super()._validate()
        if self.class_consistent and self.l1:
            raise ConfigError("labo: class_consistent fixes the association at -inf off each class's linked "
                              "concepts, which the L1 term on the raw association cannot take; set l1 = 0 "
                              "or class_consistent = false.")

    # -- activations ------------------------------------------------------------------
    def _image(self, bundle, what: str) -> np.ndarray:
        X = self._x(bundle)
        if self.similarity_ == "cosine":
            return X
        norms = _norms(bundle, "embedding_norm", len(X), what)
        if norms is None:
            raise DataError(f"labo was fitted on raw dot products (similarity='dot'), so it needs "
                            f"{what}.embedding_norm, the raw image embedding norms, which these "
                            "features lack. Re-encode them keeping the norms.")
        return (X * norms[:, None]).astype(np.float32)

    def _activations(self, X: np.ndarray) -> np.ndarray:
        A = X @ self.concept_embedding_.T
        # optional (not in the reference): standardise activations over the training set
        return (A - self.activation_mean_) / self.activation_std_ if self.standardize else A

    @property
    def head_scale(self) -> float:
        # standardised activations are O(1); the scale is then per standard deviation / 100
        return self.scale / 100.0 if self.standardize else self.scale

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return self._activations(self._image(bundle, "bundle"))

    def torch_head(self):
        """The concept and final layers as a torch module (methods/torch_head.py; Exportable)."""
        from .torch_head import concept_similarity, make_torch_head

        self.check_fitted()
        dot = self.similarity_ != "cosine"
        return make_torch_head(self, concept_similarity, {
            "concept_embedding": self.concept_embedding_, "mean": self.activation_mean_,
            "std": self.activation_std_}, {"dot": dot, "standardize": bool(self.standardize)}, needs_norm=dot)

    # -- fitting ----------------------------------------------------------------------
    def _resolve_similarity(self, train, context: Context) -> None:
        k = len(context.concepts)
        img = _norms(train, "embedding_norm", len(train), "train")
        txt = _norms(context, "concept_norm", k, "context")
        have = img is not None and txt is not None
        if self.similarity == "dot" and not have:
            lacking = " and ".join(w for w, v in (("train.embedding_norm", img),
                                                   ("context.concept_norm", txt)) if v is None)
            raise DataError("labo: similarity='dot' (the reference's unnormalised dot products) "
                            f"needs the raw embedding norms, but {lacking} is missing. Re-encode "
                            "the features keeping the norms, or pass similarity='cosine'.")
        self.similarity_ = "dot" if self.similarity == "dot" or (self.similarity == "auto" and have) \
            else "cosine"
        emb = np.asarray(context.concept_embedding, dtype=np.float64)
        if emb.shape[0] != k:
            raise DataError(f"labo: context has {k} concepts but {emb.shape[0]} concept embeddings.")
        self.concept_embedding_ = (emb * txt[:, None] if self.similarity_ == "dot" else emb) \
            .astype(np.float32)

    def _prior(self, context: Context) -> np.ndarray:
        m, k = len(self.classes_), len(self.concepts_)
        prior = context.class_prior
        if prior is None:
            return np.ones((m, k))
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (m, k):
            raise DataError(f"labo: context.class_prior must be (classes, concepts) = ({m}, {k}); "
                            f"got {prior.shape}.")
        return self.prior_strength * prior

    def _fit(self, train, context: Context, val) -> None:
        self.concepts_ = list(context.concepts)
        self._resolve_similarity(train, context)
        X = self._image(train, "train")
        A_raw = X @ self.concept_embedding_.T
        self.activation_mean_ = A_raw.mean(0)
        self.activation_std_ = A_raw.std(0) + 1e-6
        scale = self.head_scale
        self.batch_size_ = auto_batch_size(len(train)) if self.batch_size == "auto" else self.batch_size
        dtype = torch.float64 if self.optimizer == "lbfgs" else torch.float32
        A = torch.from_numpy(self._activations(X)).to(dtype)
        y = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
        V0 = self._prior(context)
        # evidence on the training images, so the run's truth check on validation is independent
        support = fit_support(self, context, A.numpy(), np.asarray(train.labels))
        if support is not None:
            # softmax weight exactly 0 off the support (exp underflows), and so is its gradient:
            # Adam's and L-BFGS's steps leave those entries where they are
            if not support.any(1).all():
                raise DataError("labo: class_consistent leaves some class no concept to weigh (no linked "
                                "concept passes the evidence floor); LaBo's softmax needs at least one per "
                                "class. Lower evidence_floor or add concepts for those classes.")
            V0 = np.where(support > 0, V0, OFF_SUPPORT)
        V = torch.tensor(V0, dtype=dtype, requires_grad=True)

        if val is not None:
            A_val = torch.from_numpy(self._activations(self._image(val, "val"))).to(dtype)
            y_val = torch.as_tensor(np.asarray(val.labels), dtype=torch.long)
        history: list[list[float]] = []
        best = {"acc": -1.0, "V": V.detach().clone(), "step": 0}

        bar = progress(total=self.max_iter if self.optimizer == "lbfgs" else self.epochs, desc="LaBo",
                       unit="iter" if self.optimizer == "lbfgs" else "epoch")

        def checkpoint(step: int) -> None:
            bar.update(step - bar.n)  # every val_every epochs (or iterations)
            if val is None:
                return
            with torch.no_grad():
                acc = float((torch.argmax(A_val @ torch.softmax(V, 1).T, 1) == y_val).double().mean())
            history.append([step, acc])
            if acc > best["acc"]:  # strict: ties keep the earlier checkpoint, as Lightning does
                best.update(acc=acc, V=V.detach().clone(), step=step)

        with bar:
            final_step = self._run_lbfgs(V, A, y, scale, checkpoint) if self.optimizer == "lbfgs" \
                else self._run_adam(V, A, y, scale, checkpoint)
            if not history or history[-1][0] != final_step:
                checkpoint(final_step)
        with torch.no_grad():
            A64, V_final = A.double(), V.detach().double()
            self.final_objective_ = float(labo_objective(V_final, A64, y, scale, self.l1,
                                                         self.diversity))
            chosen = best["V"].double() if val is not None else V_final
            self.objective_ = float(labo_objective(chosen, A64, y, scale, self.l1, self.diversity))
        self.used_validation_ = val is not None
        self.val_history_ = history
        self.final_step_ = int(final_step)
        self.best_step_ = int(best["step"]) if val is not None else self.final_step_
        self.association_ = chosen.numpy().astype(np.float32)
        self.class_weights_ = torch.softmax(chosen, 1).numpy().astype(np.float32)

    def _run_lbfgs(self, V, A, y, scale, checkpoint) -> int:
        """Full-batch L-BFGS, paused every `val_every` iterations for a checkpoint; the
        optimiser's history survives the pauses, so the path is that of one long run."""
        opt = torch.optim.LBFGS([V], lr=1.0, max_iter=self.val_every, max_eval=25 * self.val_every,
                                tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = labo_objective(V, A, y, scale, self.l1, self.diversity)
            loss.backward()
            return loss

        done = 0
        while done < self.max_iter:
            want = min(self.val_every, self.max_iter - done)
            opt.param_groups[0]["max_iter"] = want
            opt.step(closure)
            n_iter = opt.state[V].get("n_iter", 0)
            moved, done = n_iter - done, n_iter
            if moved:
                checkpoint(done)
            if moved < want:  # converged (gradient or change below tolerance)
                break
        return done

    def _run_adam(self, V, A, y, scale, checkpoint) -> int:
        """The reference's loop: Adam on shuffled mini-batches, a checkpoint every
        `val_every` epochs. The gradient of `labo_objective` is written out (softmax
        association, cross-entropy, the two optional terms) and Adam is torch's update rule,
        so each step is a few small array operations instead of an autograd graph: the
        same iterates as torch.optim.Adam on `labo_objective` (tested), about 10x faster on
        a CPU, which is what makes the reference's tens of thousands of epochs affordable."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # small products: BLAS threads only add contention here
            return self._adam_loop(V, A, y, scale, checkpoint)

    def _adam_loop(self, V, A, y, scale, checkpoint) -> int:
        gen = torch.Generator().manual_seed(int(self.random_state))
        A_np, y_np = A.numpy(), y.numpy()
        n, bs = len(A_np), self.batch_size_
        W_var = V.detach().numpy().copy()
        YT = np.zeros((len(W_var), n), dtype=W_var.dtype)
        YT[y_np, np.arange(n)] = 1
        m1, m2 = np.zeros_like(W_var), np.zeros_like(W_var)
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, self.lr
        step = 0
        for epoch in range(1, self.epochs + 1):
            # the epoch's order gathered once (np.take: twice [perm]'s speed): its batches are then
            # contiguous slices, torch's randperm(n).split(bs) (the reference's DataLoader order)
            perm = torch.randperm(n, generator=gen).numpy()
            A_p, y_p, YT_p = np.take(A_np, perm, 0), y_np[perm], np.take(YT, perm, 1)
            for start in range(0, n, bs):
                end = start + bs
                grad = _labo_gradient(W_var, A_p[start:end], y_p[start:end], scale, self.l1,
                                      self.diversity, YT_p[:, start:end])
                step += 1
                m1 *= b1
                m1 += (1 - b1) * grad
                m2 *= b2
                grad *= grad
                grad *= 1 - b2
                m2 += grad
                denom = np.sqrt(m2)
                denom /= math.sqrt(1 - b2**step)
                denom += eps
                W_var -= (lr / (1 - b1**step)) * m1 / denom
            if epoch % self.val_every == 0:
                with torch.no_grad():
                    V.copy_(torch.from_numpy(W_var))
                checkpoint(epoch)
        with torch.no_grad():
            V.copy_(torch.from_numpy(W_var))
        return self.epochs

    # -- files ------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {"objective": self.objective_, "final_objective": self.final_objective_,
                "best_step": self.best_step_, "final_step": self.final_step_,
                "used_validation": self.used_validation_, "val_history": self.val_history_,
                "similarity": self.similarity_, **evidence_state(self)}

    def _load_extra(self, extra: dict) -> None:
        # models saved before checkpoint selection existed: final iterate, cosine similarity
        self.objective_ = extra["objective"]
        self.final_objective_ = extra.get("final_objective", self.objective_)
        self.final_step_ = extra.get("final_step", -1)
        self.best_step_ = extra.get("best_step", self.final_step_)
        self.used_validation_ = extra.get("used_validation", False)
        self.val_history_ = [list(r) for r in extra.get("val_history", [])]
        self.similarity_ = extra.get("similarity", "cosine")
        load_evidence(self, extra)
