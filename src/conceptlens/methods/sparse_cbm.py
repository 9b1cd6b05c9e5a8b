"""`sparse_cbm` and `cms`: Sparse-CBM and Concept Matrix Search (Semenov et al., 2024,
"Sparse Concept Bottleneck Models: Gumbel Tricks in Contrastive Learning", arXiv 2404.03323).

The spec is the authors' code, github.com/Andron00e/SparseCBM (commit e2e4da7):
- `bottlenecks/cbm.py`: `BaseCBModel` (backbone -> `cbl = nn.Linear(k, k, bias=False)` ->
  `head = nn.Linear(k, m, bias=False)`, fed CLIP's `logits_per_image`), and the losses
  `criterion_gumbel` / `gumbel_contrastive_loss`, `criterion_contrastive` /
  `contrastive_loss`, `criterion_l1`;
- `bottlenecks/trainer_utils.py`: `BottleneckTrainer.train` (per batch: `cbl_loss.backward()`
  then `CrossEntropyLoss(head output).backward()`, so the objective is their sum; the L1
  term is divided by the number of concepts; defaults `gumbel_tau=1.0`, `gumbel_hard=False`,
  `l1_lambda=1e-3`, `lr_decay=1.0`), `CBMConfig` (one optimiser for the CBL, one for the head);
- `additional_evaluations/training_examples.ipynb`: the training runs (two Adam optimisers,
  lr 1e-3 or 3e-4, 10 epochs); `bottlenecks/configs.py`: `Constants` (lr 1e-3, batch 32);
- `additional_evaluations/cms_scores.ipynb`: Concept Matrix Search (`get_dot_prods_matrix`,
  `calculate_similarity_score_accuracy_for_class`, `calculate_max_score_accuracy_for_class`).

`sparse_cbm`. Input: A = logit_scale * cos(image, concept) (n x k; CLIP's `logits_per_image`,
logit_scale = exp(CLIP's learned temperature) = 100). The concept bottleneck layer (CBL) is
LINEAR, c = A M^T (+ b_M), and the head is linear, logits = c W^T (+ b). Training minimises
    CE(logits, y) + cbl_loss,
with cbl_loss one of
- 'gumbel' (the paper's Sparse-CBM): mean(-log gumbel_softmax(c, tau, dim=0)) and the same over
  dim=1, averaged: the Gumbel-softmax is a LOSS on the CBL output, not an activation;
- 'contrastive': CLIP's symmetric cross-entropy on the diagonal of c (log_softmax over dim 0
  and over dim 1, `torch.diag` of each, i.e. image i is paired with concept i for i < min(n, k));
- 'l1': l1 * ||M||_1 / k, on the CBL WEIGHTS.
Both layers are linear, so the fitted model is collapsed for the estimator head:
class_weights_ = W M (m x k over the ORIGINAL concept activations A), intercept_ = W b_M + b,
and `transform` returns A. Explanations, interventions and pruning therefore act on the
original concepts, and NEC counts the original concepts that reach a class through the k x k
layer (non-zeros of W M per class). M, b_M, W, b are kept (`cbl_weight_`, `cbl_bias_`,
`head_weight_`, `head_bias_`) and `cbl_activations` gives the CBL output c the reference plots.

`cms` (Concept Matrix Search, training-free). V = image x concept cosine, each row divided by its
sum (`get_dot_prods_matrix`); T = class x concept cosine with the class-name text embeddings
(context.class_embedding), rows likewise divided by their sums.
- variant 'similarity' (the paper's CMS): predict argmax_c cos(V_i, T_c). Here transform(x) =
  V_i / ||V_i|| and class_weights_ = T_c / ||T_c||, so the logits ARE the cosines (real-valued).
- variant 'max_score': j* = argmax_j V_ij (the image's top concept), predict argmax_c T[c, j*].
  Here transform(x) = one-hot(j*) (the first maximum, as `torch.argmax`) and
  class_weights_ = T, so the logits are the real values T[c, j*], not votes. Two classes tie
  only if their T entries for j* are exactly equal; then `predict` takes the first class (as the
  reference's `torch.argmax`) and `evaluation.metrics.evaluate` the last, and top-1 and
  per-class accuracy always come from one prediction per image.

Note on the Gumbel term (a property of the reference's loss, kept as is): E_g[-mean log
softmax(c + g)] is convex in c, with gradient proportional to E_g[softmax(c + g)] - 1/width,
zero when c is constant along the softmax's dim; on its own the term therefore pulls the CBL
output towards uniform rows and columns rather than towards sparse ones. Nothing makes W M
sparse, so NEC = k after training (tests/methods/test_sparse_cbm.py checks NEC on a layer with zeros).

Non-negative weights (`positive=True`, ours; default False, the reference). Here the head is
collapsed, class_weights_ = W M, so "non-negative" means W M >= 0: every original concept
reaches every class with a weight >= 0 (a larger cosine to a concept never lowers a class's
logit). Constraining W alone cannot guarantee it (a negative entry of M turns into a negative
product), so BOTH factors are kept >= 0 by projected gradient: the initial weights are
projected onto >= 0 and, after every optimiser step, both layers' weights are set to
max(0, w) (the Euclidean projection; with Adam it is projected Adam, not a proximal method).
W M is then a product of non-negative matrices, hence >= 0 exactly. The biases stay free.
Each CBL unit is then a non-negative mix of original concepts and each class a non-negative
mix of units.

Cost: each full-batch step is O(n k^2); k in the low thousands wants a GPU or `batch_size`.

Deviations from the reference
| what | reference | here | why / effect |
|---|---|---|---|
| batches | mini-batches of 32, shuffled, 10 epochs | full batch by default (`batch_size=None`); `batch_size=32, epochs=10` gives the reference schedule | fast and deterministic on cached CPU features (the project's requirement). With full batch the Gumbel loss's dim=0 softmax runs over all n training images instead of 32, so its value and gradient differ from the reference's; `epochs` then counts Adam steps, hence the default 1000 instead of 10 |
| backbone | frozen CLIP (optionally LoRA / trainable) recomputing `logits_per_image` per batch | cached L2-normalised embeddings, A = logit_scale * cosine | conceptlens trains on cached features; equal to the frozen-backbone case |
| head optimiser | `CBMConfig` net_type 'base' passes the head's parameters under an ignored key (`{"head": ..., "params": backbone}`), so the head is never stepped | the head is trained, as in `training_examples.ipynb` and the paper | a training head is what the paper describes; the trainer's is a bug |
| two optimisers | `Adam(cbl, cbl_lr)` and `Adam(head, lr)` | one optimiser with two parameter groups (`cbl_lr`, `lr`) | identical updates (Adam/AdamW/SGD are per-parameter) |
| Gumbel log | `-torch.log(F.gumbel_softmax(...))` | `-log_softmax((c + g) / tau)` with the same Gumbel noise g | same value wherever the reference is finite; the reference gives inf/NaN once a softmax entry underflows to 0 (large logits: logit_scale 100) |
| `gumbel_hard` | option (default False) | not offered | with hard=True the reference's loss is -log(0) = inf for every non-argmax entry |
| 'similarity' training method | in `BottleneckTrainer` (cos-cubed to `logits_per_image`), not in the paper | not ported | not one of the paper's Sparse-/l1-/Contrastive-CBM |
| lr decay | `lr_decay` (default 1.0: none) | none | the default |
| biases | `bias=False` in both layers | `bias=False` by default; `bias=True` adds b_M and b | collapsed into intercept_ = W b_M + b |
| `positive` | absent | both layers' weights projected onto >= 0 after every step, so W M >= 0 | only when set; effect not measured yet |
| CMS class texts | raw class names from `labels.txt` through CLIP | context.class_embedding (the run's class prompt embeddings, averaged over its templates) | conceptlens's one class-text embedding; prompts such as "a photo of a {c}" change T slightly |
| CMS norm | `similarity()` divides by the norms (no guard) | norms floored at 1e-12 | no effect unless a row is exactly zero (then the reference gives NaN) |
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..validation import Boolean, InstanceOf, Interval, Options
from .base import METHODS, Context, Method

SPARSITY = ("gumbel", "contrastive", "l1")
OPTIMIZERS = ("adam", "adamw", "sgd")  # the reference's CBMConfig.optimizers_dict
CMS_VARIANTS = ("similarity", "max_score")


# -- the reference's losses (bottlenecks/cbm.py) -----------------------------------------------

def gumbel_noise(shape, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gumbel(0, 1) noise drawn exactly as `torch.nn.functional.gumbel_softmax` draws it, so a
    generator in the same state gives the same noise."""
    return -torch.empty(shape, dtype=dtype).exponential_(generator=generator).log()


def gumbel_loss(c: torch.Tensor, tau: float = 1.0, generator: torch.Generator | None = None,
                noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """`criterion_gumbel`: the mean of -log gumbel_softmax(c, tau) over dim=0 and over dim=1
    (fresh noise for each, dim=0 first), averaged. Computed as -log_softmax((c + g) / tau),
    which equals the reference wherever the reference is finite. `noise` fixes (g0, g1)."""
    g0, g1 = noise if noise is not None else (
        gumbel_noise(c.shape, generator, c.dtype), gumbel_noise(c.shape, generator, c.dtype))
    first = -torch.log_softmax((c + g0) / tau, dim=0).mean()
    second = -torch.log_softmax((c + g1) / tau, dim=1).mean()
    return (first + second) / 2.0


def contrastive_loss(c: torch.Tensor) -> torch.Tensor:
    """`criterion_contrastive`: CLIP's symmetric cross-entropy on the diagonal of c
    (log_softmax over dim 0 and over dim 1; the diagonal has min(n, k) entries)."""
    caption = -torch.diag(torch.log_softmax(c, dim=0)).mean()
    image = -torch.diag(torch.log_softmax(c, dim=1)).mean()
    return (caption + image) / 2.0


def l1_penalty(cbl_weight: torch.Tensor, l1: float, cbl_bias: torch.Tensor | None = None) -> torch.Tensor:
    """`criterion_l1` as the trainer applies it: l1 * (the L1 norm of every CBL parameter)
    divided by the number of concepts k (the CBL output width)."""
    total = cbl_weight.abs().sum() + (cbl_bias.abs().sum() if cbl_bias is not None else 0.0)
    return l1 * total / cbl_weight.shape[0]


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _check_dims(name: str, X: np.ndarray, E: np.ndarray, what: str) -> None:
    if X.shape[1] != E.shape[1]:
        raise DataError(f"{name}: image embeddings have dimension {X.shape[1]} but the {what} "
                        f"embeddings have {E.shape[1]}; encode both with the same backbone.")


@METHODS.register("sparse_cbm")
class SparseCBM(Method):
    """Sparse-CBM: linear k x k concept bottleneck layer + linear head on CLIP logits, trained
    with cross-entropy plus a Gumbel / contrastive / L1 term (see the module docstring).

    Parameters
    ----------
    sparsity : {'gumbel', 'contrastive', 'l1'}, default 'gumbel'
        The sparsity term added to cross-entropy [`training_methods`].
    logit_scale : float, default 100.0
        CLIP's exp(logit_scale): `logits_per_image` = 100 * cosine [100]; > 0.
    temperature : float, default 1.0
        Gumbel-softmax tau [`gumbel_tau=1.0`]; > 0.
    l1 : float, default 1e-3
        Weight of the L1 term, times ||M||_1 / k [`l1_lambda=1e-3`]; >= 0.
    epochs : int, default 1000
        Full-batch steps [10 epochs of batches of 32; see the deviations]; >= 1.
    batch_size : int or None, default None
        None: full batch [32]; else an integer >= 1.
    lr : float, default 1e-3
        Learning rate of the head [`Constants.lr`, `training_examples.ipynb`]; > 0.
    cbl_lr : float, default 1e-3
        Learning rate of the concept bottleneck layer (CBL) [1e-3]; > 0.
    optimizer : {'adam', 'adamw', 'sgd'}, default 'adam'
        The optimiser ['Adam'; the reference also offers 'AdamW' and 'SGD'].
    bias : bool, default False
        Biases in the CBL and the head [`bias=False`].
    seed : int, default 0
        Seed of the initialisation, the Gumbel noise and the batch order (any integer).
    positive : bool, default False
        [absent] True keeps the CBL and head weights >= 0 (projected gradient), so
        class_weights_ = W M >= 0 (module docstring).

    References
    ----------
    Semenov et al., "Sparse Concept Bottleneck Models: Gumbel Tricks in Contrastive Learning",
    arXiv 2404.03323, 2024.
    """

    _arrays = ("class_weights_", "intercept_", "cbl_weight_", "cbl_bias_", "head_weight_",
               "head_bias_", "concept_embedding_")
    _array_shapes: ClassVar[dict[str, tuple]] = {
        "cbl_weight_": ("k", "k"), "cbl_bias_": ("k",), "head_weight_": ("m", "k"),
        "head_bias_": ("m",), "concept_embedding_": ("k", None)}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "sparsity": [Options(SPARSITY)],
        **{k: [Interval(float, 0, None, closed="neither", description="a positive finite number")]
           for k in ("logit_scale", "temperature", "lr", "cbl_lr")},
        "l1": [Interval(float, 0, None)], "epochs": [Interval(int, 1)],
        "batch_size": [None, Interval(int, 1, description="an integer >= 1 (None: full batch)")],
        "optimizer": [Options(OPTIMIZERS)],
        "bias": [InstanceOf((bool, np.bool_), "True or False")], "seed": [Interval(int)],
        "positive": [Boolean("true or false")],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        "sparsity": "sparsity = 'gumbel' (the paper's Sparse-CBM)", "logit_scale": "logit_scale = 100 (CLIP's)",
        "temperature": "temperature = 1.0 (the reference's)", "lr": "lr = 1e-3 (the reference's)",
        "cbl_lr": "cbl_lr = 1e-3 (the reference's)", "l1": "l1 = 1e-3 (the reference's)",
        "epochs": "epochs = 1000 (with full batch, the number of Adam steps)",
        "batch_size": "batch_size = 32 (the reference's)", "optimizer": "optimizer = 'adam' (the reference's)",
        "bias": "bias = false (the reference has no biases)", "seed": "seed = 0",
        "positive": "positive = true (keeps class_weights_ = W M >= 0)"}

    def __init__(self, sparsity: str = "gumbel", logit_scale: float = 100.0,
                 temperature: float = 1.0, l1: float = 1e-3, epochs: int = 1000,
                 batch_size: int | None = None, lr: float = 1e-3, cbl_lr: float = 1e-3,
                 optimizer: str = "adam", bias: bool = False, seed: int = 0, positive: bool = False):
        self.sparsity, self.logit_scale, self.temperature, self.l1 = sparsity, logit_scale, temperature, l1
        self.epochs, self.batch_size, self.lr, self.cbl_lr = epochs, batch_size, lr, cbl_lr
        self.optimizer, self.bias, self.seed, self.positive = optimizer, bias, seed, positive

    # -- the two-layer model -------------------------------------------------------------
    def _activations(self, X: np.ndarray) -> np.ndarray:
        """A = logit_scale * cos(image, concept): CLIP's logits_per_image."""
        return (self.logit_scale * _unit_rows(X) @ self.concept_embedding_.T).astype(np.float32)

    def _cbl_loss(self, c: torch.Tensor, cbl: torch.nn.Linear, gen: torch.Generator) -> torch.Tensor:
        if self.sparsity == "gumbel":
            return gumbel_loss(c, self.temperature, generator=gen)
        if self.sparsity == "contrastive":
            return contrastive_loss(c)
        return l1_penalty(cbl.weight, self.l1, cbl.bias)

    def _fit(self, train, context: Context, val) -> None:
        X = self._x(train)
        C = np.asarray(context.concept_embedding, dtype=np.float32)
        _check_dims(self.name, X, C, "concept")
        self.concepts_ = list(context.concepts)
        self.concept_embedding_ = _unit_rows(C).astype(np.float32)
        y = np.asarray(train.labels)
        k, m = len(self.concepts_), len(self.classes_)
        if y.min() < 0 or y.max() >= m:
            raise DataError(f"sparse_cbm: labels must be class indices in [0, {m}); "
                            f"got values from {y.min()} to {y.max()}.")
        A = torch.from_numpy(self._activations(X))
        y = torch.as_tensor(y, dtype=torch.long)
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG as it was
            torch.manual_seed(self.seed)  # nn.Linear's default initialisation, as in the reference
            cbl, head = torch.nn.Linear(k, k, bias=self.bias), torch.nn.Linear(k, m, bias=self.bias)
        self._project(cbl, head)
        gen = torch.Generator().manual_seed(self.seed)  # Gumbel noise and batch order
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[
            self.optimizer]([{"params": cbl.parameters(), "lr": self.cbl_lr},
                             {"params": head.parameters(), "lr": self.lr}])
        n = len(A)
        for _ in range(self.epochs):
            order = [None] if self.batch_size is None else \
                torch.randperm(n, generator=gen).split(self.batch_size)
            for idx in order:
                a, t = (A, y) if idx is None else (A[idx], y[idx])
                opt.zero_grad()
                c = cbl(a)
                loss = self._cbl_loss(c, cbl, gen) + torch.nn.functional.cross_entropy(head(c), t)
                loss.backward()
                opt.step()
                self._project(cbl, head)
        self.final_loss_ = loss.detach().item()  # the objective at the last step
        self.cbl_weight_ = cbl.weight.detach().numpy().copy()
        self.head_weight_ = head.weight.detach().numpy().copy()
        self.cbl_bias_ = (cbl.bias.detach().numpy().copy() if self.bias else np.zeros(k, np.float32))
        self.head_bias_ = (head.bias.detach().numpy().copy() if self.bias else np.zeros(m, np.float32))
        self._collapse()

    def _project(self, cbl: torch.nn.Linear, head: torch.nn.Linear) -> None:
        """With `positive`, the Euclidean projection of both layers' weights onto >= 0 (biases free)."""
        if self.positive:
            with torch.no_grad():
                cbl.weight.clamp_(min=0)
                head.weight.clamp_(min=0)

    def _collapse(self) -> None:
        """logits = (A M^T + b_M) W^T + b = A (W M)^T + (W b_M + b); float64 products."""
        W, M = self.head_weight_.astype(np.float64), self.cbl_weight_.astype(np.float64)
        self.class_weights_ = (W @ M).astype(np.float32)
        self.intercept_ = (W @ self.cbl_bias_.astype(np.float64) + self.head_bias_).astype(np.float32)

    def _extra_state(self) -> dict:
        return {"final_loss": self.final_loss_}

    def _load_extra(self, extra: dict) -> None:
        self.final_loss_ = extra.get("final_loss")

    def transform(self, bundle) -> np.ndarray:
        """The ORIGINAL concept activations A = logit_scale * cos(image, concept) (n, k)."""
        self.check_fitted()
        return self._activations(self._x(bundle))

    def torch_head(self):
        """The concept and final layers as a torch module (methods/torch_head.py; Exportable)."""
        from .torch_head import make_torch_head, scaled_cosine

        return make_torch_head(self, scaled_cosine, {"concept_embedding": self.concept_embedding_},
                               {"scale": float(self.logit_scale)})

    def cbl_activations(self, bundle) -> np.ndarray:
        """The concept bottleneck layer's output c = A M^T + b_M (what the reference plots)."""
        return self.transform(bundle) @ self.cbl_weight_.T + self.cbl_bias_


@METHODS.register("cms")
class ConceptMatrixSearch(Method):
    """Concept Matrix Search: training-free, compares an image's row-normalised concept
    similarities with each class name's (see the module docstring).

    Parameters
    ----------
    variant : {'similarity', 'max_score'}, default 'similarity'
        'similarity' (the paper's CMS): predict the class whose concept-similarity row is nearest
        (cosine) the image's; 'max_score': take the image's top concept and predict the class that
        scores it highest.

    References
    ----------
    Semenov et al., "Sparse Concept Bottleneck Models: Gumbel Tricks in Contrastive Learning",
    arXiv 2404.03323, 2024.
    """

    # training-free: it compares concept similarities with the class names' (class_embedding)
    tags = replace(Method.tags, requires=("concepts", "concept_embedding", "class_embedding"))
    _arrays = ("class_weights_", "concept_embedding_", "class_matrix_")
    _array_shapes: ClassVar[dict[str, tuple]] = {"concept_embedding_": ("k", None),
                                                  "class_matrix_": ("m", "k")}

    _parameter_constraints: ClassVar[dict[str, list]] = {"variant": [Options(CMS_VARIANTS)]}
    _parameter_examples: ClassVar[dict[str, str]] = {
        "variant": "variant = 'similarity' (the paper's CMS; 'max_score': the reference's top-concept variant)"}

    def __init__(self, variant: str = "similarity"):
        self.variant = variant

    @staticmethod
    def row_normalised_cosine(X: np.ndarray, E: np.ndarray, eps: float = 1e-8) -> np.ndarray:
        """`get_dot_prods_matrix`: cosine between rows of X and E, each row divided by its sum
        (+ eps)."""
        cos = _unit_rows(np.asarray(X, np.float64)) @ _unit_rows(np.asarray(E, np.float64)).T
        return cos / (cos.sum(1, keepdims=True) + eps)

    def _fit(self, train, context: Context, val) -> None:
        if context.class_embedding is None:
            raise ConfigError("cms needs the class-name text embeddings (context.class_embedding); "
                              "build the context with the backbone's class prompts.")
        E = np.asarray(context.class_embedding, dtype=np.float32)
        C = np.asarray(context.concept_embedding, dtype=np.float32)
        if E.shape[0] != len(self.classes_) or E.shape[1] != C.shape[1]:
            raise DataError(f"cms: class_embedding has shape {E.shape}; expected "
                            f"({len(self.classes_)}, {C.shape[1]}) (one row per class, the "
                            "concept embeddings' dimension).")
        _check_dims(self.name, self._x(train), C, "concept")
        self.concepts_ = list(context.concepts)
        self.concept_embedding_ = C
        T = self.row_normalised_cosine(E, C)
        self.class_matrix_ = T.astype(np.float32)
        self.class_weights_ = (_unit_rows(T) if self.variant == "similarity" else T).astype(np.float32)

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        V = self.row_normalised_cosine(self._x(bundle), self.concept_embedding_)
        if self.variant == "similarity":
            return _unit_rows(V).astype(np.float32)
        onehot = np.zeros(V.shape, np.float32)
        onehot[np.arange(len(V)), V.argmax(1)] = 1.0  # first maximum, as torch.argmax
        return onehot

    def torch_head(self):
        """The concept and final layers as a torch module (methods/torch_head.py; Exportable)."""
        from .torch_head import make_torch_head, row_normalised_cosine

        return make_torch_head(self, row_normalised_cosine, {"concept_embedding": self.concept_embedding_},
                               {"onehot": self.variant != "similarity"})
