"""Accuracy at a fixed number of effective concepts (NEC), one protocol for every method.

NEC = mean number of non-zero concept weights per class (`Method.nec_`). Comparing methods at
NEC = 5 ("ANEC-5") needs one rule for making every method's final layer that sparse.
`accuracy_at_nec(model, train, test, nec, protocol=...)` offers three, stated exactly:

"vlg" (default; the reference's protocol)
    VLG-CBM's sparse evaluation, as github.com/Trustworthy-ML-Lab/VLG-CBM (commit 376a768)
    does it in `evaluations/sparse_utils.py` (`measure_acc`, `sparsity_acc_test`,
    `sparsity_acc_test_lf_cbm`), `model/utils.py` (`weight_truncation`),
    `data/concept_dataset.py` (`get_final_layer_dataset`) and `glm_saga/elasticnet.py`:
    1. The method's own final layer is DISCARDED. Its concept activations A = transform(x)
       on the training images are standardised with their training mean and (unbiased)
       standard deviation (`get_final_layer_dataset` for VLG-CBM; LF-CBM's activations are
       already `(x - proj_mean) / proj_std`, `model/cbm.py`).
    2. A NEW linear layer, initialised at zero, is fitted along the elastic-net path
       (multinomial, alpha = 0.99) of 150 lambdas log-spaced from `lam / alpha` down to
       `2**-15 * lam / alpha`, with `lam = 0.1` (`sparse_evaluation.py --lam` default;
       `measure_acc` passes it as metadata['max_reg'], so it replaces the data's lambda_max).
    3. Density of a path point = fraction of weights with |w| > 1e-5. The chosen point is the
       FIRST with density >= nec / k (k = number of concepts); if none reaches it, the last.
    4. Its weights are truncated GLOBALLY (over the whole m x k matrix, not per class) to the
       nec * m largest magnitudes; the bias is kept; nothing is retrained.
    The repository has this code for VLG-CBM and LF-CBM only (both retrain as above); its
    README reports LaBo and LM4CV at NEC = 5 too, so we apply the same rule to every method.
    A hybrid model's non-concept residual (PCBM-h) bypasses the bottleneck the protocol
    measures, so it is dropped (reported as `residual_dropped`).

"refit" (ours)
    A method with a refittable sparse final layer (`refit_at_nec`) is fitted again with
    `target_nec=nec` (its own path solver stops at the largest NEC <= nec, see
    solvers/glm.py) and all its other parameters, `positive` included, so a non-negative
    model is refitted non-negative; other methods are pruned per class as in "prune".
    Needs the Context.

"prune"
    Keep each class's `nec` largest-magnitude weights, intercept unchanged, no retraining
    (`metrics.prune_to_nec`); zeroing weights keeps their signs, so W >= 0 stays W >= 0.

Non-negative models ("vlg"). A model fitted with `positive=True` (class_weights_ >= 0) gets
its new "vlg" layer under the same constraint (`positive=None`, the default, follows the
model's `positive` parameter; pass positive=False/True to override). Otherwise the protocol
would discard the constraint, and a positive model and its unconstrained twin (same
`transform`) would get the same layer and the same ANEC. Folding the standardisation
(dividing by sd > 0) and the global truncation keep W >= 0.

The returned model is a deep copy whose `class_weights_` and `intercept_` realise the new
layer, so logits = head(transform(x)) still holds (the "vlg" standardisation is folded into
weights and intercept), explanations stay exact, and it saves and loads.

Deviations from the reference ("vlg")
-------------------------------------
what / why / effect where measured:
- Solver: each path point is solved by our FISTA (solvers/glm.py) to a relative tolerance,
  warm-started, instead of glm_saga's SAGA for a fixed number of epochs / same objective,
  one solver for the package, deterministic / the chosen point can differ where SAGA had
  not converged; not measured.
- Truncation keeps exactly round(nec * m) weights, ties broken toward the lower flat index
  / the reference's `int((1 - s) * numel)` can be one off by float rounding and its
  `w.abs() < threshold` keeps every weight tied at the threshold / at most a few weights,
  only with exact ties or rounding.
- A constant activation column gets standard deviation 1 instead of 0 / the reference
  divides by 0 (NaN features); here the column is 0 after centring and its weight stays 0
  / none on non-degenerate data.
- `val` is not used / glm_saga only logs validation metrics; `measure_acc` never selects
  by them / none.
- PCBM-h's residual is dropped / no hybrid model in the reference; the protocol measures
  the concept bottleneck / a hybrid's ANEC is that of its concept part.
- A `positive=True` model's new layer is fitted under W >= 0 (same objective, constrained)
  / the reference has no non-negative models; without this the option would be invisible
  to the protocol / only for such models; not measured yet.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..progress import progress
from ..solvers.glm import fit_elastic_net
from .metrics import evaluate, prune_to_nec

PROTOCOLS = ("vlg", "refit", "prune")

# VLG-CBM's constants (evaluations/sparse_utils.py, sparse_evaluation.py, glm_saga)
VLG_LAM = 0.1  # sparse_evaluation.py --lam default: the top of the path (divided by alpha)
VLG_ALPHA = 0.99  # measure_acc: ALPHA
VLG_N_LAMBDAS = 150  # MAX_GLM_STEP
VLG_EPSILON = 1 / (2 ** 0.1) ** 150  # 1 / GLM_STEP_SIZE ** MAX_GLM_STEP = 2**-15
VLG_NONZERO = 1e-5  # glm_saga / measure_acc count |w| > 1e-5 as non-zero


def density(W: np.ndarray, threshold: float = VLG_NONZERO) -> float:
    """Fraction of weights with |w| > threshold (the reference's "sparsity")."""
    return float((np.abs(np.asarray(W)) > threshold).mean())


def first_at_density(densities, target: float) -> int:
    """`measure_acc`'s rule: the index of the first path point whose density is >= target;
    the last point if none is (the loop in the reference runs out without a break)."""
    densities = list(densities)
    if not densities:
        raise ConfigError("first_at_density: the path is empty; expected at least one point.")
    for i, d in enumerate(densities):
        if d >= target:
            return i
    return len(densities) - 1


def global_truncation(W: np.ndarray, n_keep: int) -> np.ndarray:
    """A copy of W keeping its `n_keep` largest-magnitude entries over the WHOLE matrix
    (not per row), others 0; ties go to the lower flat index."""
    W = np.asarray(W)
    if n_keep < 0:
        raise ConfigError(f"global_truncation: n_keep must be >= 0; got {n_keep}.")
    out = np.zeros_like(W)
    if n_keep == 0:
        return out
    flat = W.ravel()
    keep = np.argsort(-np.abs(flat), kind="stable")[:n_keep]
    out.ravel()[keep] = flat[keep]
    return out


def vlg_lambdas(lam: float = VLG_LAM, alpha: float = VLG_ALPHA, n_lambdas: int = VLG_N_LAMBDAS,
                epsilon: float = VLG_EPSILON) -> np.ndarray:
    """glm_saga's grid: logspace(log10(lam / alpha), log10(epsilon * lam / alpha), n_lambdas)."""
    top = lam / max(0.001, alpha)
    return np.logspace(math.log10(top), math.log10(epsilon * top), n_lambdas)


@dataclass
class VLGPath:
    lambdas: list[float] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)
    densities: list[float] = field(default_factory=list)


def vlg_path(Z: np.ndarray, y: np.ndarray, n_classes: int, target_density: float,
             lambdas: np.ndarray | None = None, alpha: float = VLG_ALPHA, tol: float = 1e-6,
             max_iter: int = 2000, dtype=torch.float32, positive: bool = False,
             paths: VLGPaths | None = None) -> VLGPath:
    """The elastic-net path on Z from a zero layer, warm-started, stopped at the first point
    whose density reaches `target_density` (everything `first_at_density` can pick);
    `positive`: every point under W >= 0. `paths`: a `VLGPaths` that shares the solve with
    every other request on the same Z and options (the same points, solved once)."""
    lambdas = vlg_lambdas(alpha=alpha) if lambdas is None else np.asarray(lambdas, dtype=float)
    options = (alpha, tol, max_iter, dtype, positive)
    path = VLGPath() if paths is None else paths.get(Z, y, n_classes, lambdas, options)
    _extend(path, Z, y, n_classes, target_density, lambdas, options)
    if paths is None:
        return path
    # the prefix a fresh solve to this target would return (the path may run further)
    end = first_at_density(path.densities, target_density) + 1
    return VLGPath(path.lambdas[:end], path.weights[:end], path.biases[:end], path.densities[:end])


def _extend(path: VLGPath, Z, y, n_classes, target_density, lambdas, options) -> None:
    """Solve `path` on from its last point until a point reaches `target_density` or the grid ends;
    nothing when it already has one (warm starts make the continuation the same as one long solve)."""
    if any(d >= target_density for d in path.densities):
        return
    alpha, tol, max_iter, dtype, positive = options
    W = path.weights[-1] if path.weights else None
    b = path.biases[-1] if path.biases else None
    rest = lambdas[len(path.lambdas):]
    for lam in progress(rest, desc=f"NEC path (density {target_density:.3g})", unit="lam"):
        W, b, _ = fit_elastic_net(Z, y, float(lam), alpha, W0=W, b0=b, n_classes=n_classes,
                                  tol=tol, max_iter=max_iter, dtype=dtype, positive=positive)
        path.lambdas.append(float(lam))
        path.weights.append(np.asarray(W, dtype=np.float64))
        path.biases.append(np.asarray(b, dtype=np.float64))
        path.densities.append(density(W))
        if path.densities[-1] >= target_density:
            break


class VLGPaths:
    """The VLG paths of a run, keyed by their bottleneck's content (Z, y, grid, solver options):
    the NEC column and the accuracy-vs-NEC curve of one model, and any two models with the same
    standardised activations, share one solve (issue 23). `solves` counts the fresh paths."""

    def __init__(self):
        self._paths: dict = {}
        self.solves = 0

    def get(self, Z, y, n_classes, lambdas, options) -> VLGPath:
        Z, y = np.ascontiguousarray(Z), np.ascontiguousarray(y)
        digest = hashlib.sha1(Z.tobytes())
        for part in (np.asarray(y, dtype=np.int64), np.asarray(lambdas, dtype=np.float64)):
            digest.update(part.tobytes())
        key = (digest.hexdigest(), Z.shape, str(Z.dtype), n_classes, repr(options))
        if key not in self._paths:
            self._paths[key] = VLGPath()
            self.solves += 1
        return self._paths[key]


def _standardise(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean and unbiased std (torch's default, as the reference); 1 where constant."""
    mu = A.mean(0)
    sd = A.std(0, ddof=1) if len(A) > 1 else np.zeros(A.shape[1])
    return mu, np.where(sd > 0, sd, 1.0)


def _set_layer(model, W: np.ndarray, b: np.ndarray):
    """A deep copy with head(A) = head_scale * A W^T + b (b persisted even for methods whose
    saved arrays have no intercept, e.g. LaBo)."""
    out = copy.deepcopy(model)
    out.class_weights_ = np.asarray(W, dtype=np.float32)
    out.intercept_ = np.asarray(b, dtype=np.float32)
    if "intercept_" not in out._arrays:
        out._arrays = (*out._arrays, "intercept_")
    return out


def _drop_residual(model, bundle) -> bool:
    """Zero a hybrid's residual on `model` (a copy); False when there was none."""
    r = model.residual(bundle)
    if not np.any(np.asarray(r) != 0):
        return False
    names = [n for n in ("residual_weights_", "residual_intercept_") if hasattr(model, n)]
    for n in names:
        setattr(model, n, np.zeros_like(getattr(model, n)))
    if not names or np.any(np.asarray(model.residual(bundle)) != 0):
        raise ConfigError(f"accuracy_at_nec(protocol='vlg'): {model.name} has a non-concept residual "
                          "this protocol cannot remove; use protocol='refit' or 'prune'.")
    return True


def vlg_at_nec(model, train, nec: float, lam: float = VLG_LAM, alpha: float = VLG_ALPHA,
               n_lambdas: int = VLG_N_LAMBDAS, epsilon: float = VLG_EPSILON, positive: bool | None = None,
               **solver) -> tuple:
    """VLG-CBM's protocol (module docstring). `positive=None` follows the model's own `positive`
    parameter (False for methods without one). Returns (model copy, details dict)."""
    if positive is None:
        positive = bool(getattr(model, "positive", False))
    if not isinstance(positive, bool):
        raise ConfigError(f"accuracy_at_nec: positive must be None (follow the model), True or False; "
                          f"got {positive!r}.")
    A = np.asarray(model.transform(train), dtype=np.float64)
    y = np.asarray(train.labels)
    m, k = len(model.classes_), A.shape[1]
    mu, sd = _standardise(A)
    Z = ((A - mu) / sd).astype(np.float32)
    target = nec / k
    path = vlg_path(Z, y, m, target, vlg_lambdas(lam, alpha, n_lambdas, epsilon), alpha,
                    positive=positive, **solver)
    i = first_at_density(path.densities, target)
    W = global_truncation(path.weights[i], round(float(nec) * m))
    b = path.biases[i]
    # fold the standardisation in: ((A - mu) / sd) W^T + b = A (W / sd)^T + (b - (W / sd) mu)
    Ws = W / sd
    out = _set_layer(model, Ws / model.head_scale, b - Ws @ mu)
    dropped = _drop_residual(out, train)
    return out, {"lam": path.lambdas[i], "density": path.densities[i], "path_points": len(path.lambdas),
                 "residual_dropped": dropped, "positive": positive}


def _check(model, nec, protocol, context) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"accuracy_at_nec: unknown protocol {protocol!r}; expected one of {PROTOCOLS}.")
    from ..methods.tags import get_tags
    if not get_tags(model).needs_concepts or not hasattr(model, "class_weights_"):
        raise ConfigError(f"accuracy_at_nec: {getattr(model, 'name', model)!r} has no concept layer, "
                          "so NEC is not defined for it; leave it out of the NEC comparison.")
    k = np.asarray(model.class_weights_).shape[1]
    if isinstance(nec, bool) or not isinstance(nec, numbers.Real) or not 0 < nec <= k:
        raise ConfigError(f"accuracy_at_nec: nec must be a number in (0, {k}] (the model has {k} "
                          f"concepts); got {nec!r}.")
    if protocol == "prune" and int(nec) != nec:
        raise ConfigError(f"accuracy_at_nec(protocol='prune') keeps a whole number of weights per class; "
                          f"got nec={nec!r}.")
    if protocol == "refit" and get_tags(model).refit_at_nec and context is None:
        raise ConfigError(f"accuracy_at_nec(protocol='refit'): refitting {model.name} needs the Context "
                          "it was fitted with; pass context=.")


def accuracy_at_nec(model, train, test, nec: float = 5, protocol: str = "vlg", val=None,
                    context=None, **vlg_options) -> dict:
    """Top-1 accuracy on `test` of `model` made to NEC = `nec` by `protocol` (module docstring).

    Returns {"top1", "nec" (reached), "target_nec", "protocol", "how" ("vlg", "refit" or
    "prune": what was done to this model), "model" (the sparse copy), "metrics" (evaluate()
    on test)} plus, for "vlg", "lam", "density", "path_points", "residual_dropped" and
    "positive". `vlg_options`: lam, alpha, n_lambdas, epsilon, tol, max_iter (the reference's
    defaults), positive (None: the model's own), paths (a `VLGPaths` to share solves through).
    """
    from ..methods.tags import get_tags

    _check(model, nec, protocol, context)
    if vlg_options and protocol != "vlg":
        raise ConfigError(f"accuracy_at_nec: {sorted(vlg_options)} apply to protocol='vlg' only; "
                          f"got protocol={protocol!r}.")
    details: dict = {}
    if protocol == "vlg":
        at, details = vlg_at_nec(model, train, nec, **vlg_options)
        how = "vlg"
    elif protocol == "refit" and get_tags(model).refit_at_nec:
        from ..methods.aliases import make_method

        params = {**model.get_params(deep=False), "target_nec": nec}
        # the class's registered name: an instance may carry a run's display name (an alias)
        at = make_method(type(model).name, params).fit(train, context, val)
        how = "refit"
    else:
        at, how = prune_to_nec(model, int(nec)), "prune"
    metrics = evaluate(at, test)
    return {"top1": metrics["top1"], "nec": float(at.nec_), "target_nec": nec, "protocol": protocol,
            "how": how, "model": at, "metrics": metrics, **details}


# -- accuracy against NEC: the curve VLG-CBM's users compare -----------------------------------

CURVE_FULL = "full"  # the curve's last point: the model as fitted, its own final layer


def _vlg_curve(model, train, test, necs, lam: float = VLG_LAM, alpha: float = VLG_ALPHA,
               n_lambdas: int = VLG_N_LAMBDAS, epsilon: float = VLG_EPSILON, positive: bool | None = None,
               **solver) -> dict:
    """`vlg_at_nec` at every NEC of `necs` from ONE path: the path to a smaller target is a prefix of
    the path to the largest (the same lambdas, warm starts and stopping rule), so each point is
    picked from it exactly as `vlg_at_nec(nec)` would; {nec: (top1, nec reached)}."""
    if positive is None:
        positive = bool(getattr(model, "positive", False))
    A = np.asarray(model.transform(train), dtype=np.float64)
    y = np.asarray(train.labels)
    m, k = len(model.classes_), A.shape[1]
    mu, sd = _standardise(A)
    Z = ((A - mu) / sd).astype(np.float32)
    path = vlg_path(Z, y, m, max(necs) / k, vlg_lambdas(lam, alpha, n_lambdas, epsilon), alpha,
                    positive=positive, **solver)
    out = {}
    for nec in necs:
        i = first_at_density(path.densities, nec / k)
        Ws = global_truncation(path.weights[i], round(float(nec) * m)) / sd
        at = _set_layer(model, Ws / model.head_scale, path.biases[i] - Ws @ mu)
        _drop_residual(at, train)
        out[nec] = (evaluate(at, test)["top1"], float(at.nec_))
    return out


def accuracy_curve(model, train, test, necs=(1, 2, 3, 5, 10, 20), protocol: str = "vlg", val=None,
                   context=None, full_top1: float | None = None, **vlg_options) -> dict:
    """Top-1 on `test` against NEC: `accuracy_at_nec` at each NEC of `necs` up to the model's number
    of concepts (larger ones are left out: the layer cannot be denser), then the model as fitted.

    Returns {"<nec>": top1, ..., "full": top1 of the fitted model} in increasing NEC (JSON keys;
    `full_top1`, when given, is that last value, e.g. the run's own top-1 of the model), and the
    NEC each point reached under "reached" ({"<nec>": nec, "full": model.nec_}). "vlg" computes
    every point from one elastic-net path (`_vlg_curve`, the same points as `accuracy_at_nec`);
    "refit" and "prune" run `accuracy_at_nec` once per NEC.
    """
    k = np.asarray(model.class_weights_).shape[1] if hasattr(model, "class_weights_") else 0
    for nec in necs:
        if isinstance(nec, bool) or not isinstance(nec, numbers.Integral) or nec < 1:
            raise ConfigError(f"accuracy_curve: every NEC must be a whole number >= 1; got {nec!r}.")
    points = sorted({int(n) for n in necs if n <= k})
    if points:
        _check(model, points[-1], protocol, context)
    if protocol == "vlg" and points:
        measured = _vlg_curve(model, train, test, points, **vlg_options)
    else:
        measured = {}
        for nec in points:
            r = accuracy_at_nec(model, train, test, nec, protocol, val, context, **vlg_options)
            measured[nec] = (r["top1"], r["nec"])
    full = evaluate(model, test)["top1"] if full_top1 is None else float(full_top1)
    curve = {str(n): float(t) for n, (t, _) in measured.items()} | {CURVE_FULL: float(full)}
    reached = {str(n): r for n, (_, r) in measured.items()} | {CURVE_FULL: float(model.nec_)}
    return {"top1": curve, "reached": reached, "protocol": protocol}


def nec_curve_fields(model, train, test, necs, protocol: str = "vlg", val=None, context=None,
                     full_top1: float | None = None, **vlg_options) -> dict:
    """A results row's curve ([evaluation] nec_curve): {"nec_curve": {"<nec>": top1, ..., "full":
    top1}, "nec_curve_reached": {"<nec>": NEC reached, ..., "full": model.nec_}}; {} for a model
    without a concept layer (NEC is not defined) or when `necs` is empty. `vlg_options` as
    `accuracy_at_nec`'s ("vlg" only), e.g. paths=VLGPaths() shared with the NEC column."""
    from ..methods.tags import get_tags

    tags = get_tags(model)
    if not necs or not (tags.needs_concepts or tags.discovers_concepts) or not hasattr(model, "class_weights_"):
        return {}
    c = accuracy_curve(model, train, test, necs, protocol, val, context, full_top1, **vlg_options)
    return {"nec_curve": c["top1"], "nec_curve_reached": c["reached"]}
