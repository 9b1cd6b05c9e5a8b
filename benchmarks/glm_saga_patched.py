"""glm_saga's elastic-net SAGA, patched only where it multiplies: the peer of bench_solver_scale.

Copied from MadryLab/glm_saga, `glm_saga/elasticnet.py` (commit 4016cfe8f529bb67ebf1ff40135cf9e0181a77e8,
functions `train_saga`, `glm_saga`, `soft_threshold`, `soft_threshold_with_shrinkage`; MIT
licence), for the case Label-free CBM runs (`train_cbm.py` of Trustworthy-ML-Lab/Label-free-CBM:
`glm_saga(linear, loader, STEP_SIZE=0.1, n_iters=1000, ALPHA=0.99, epsilon=1, k=1, do_zero=False,
metadata={'max_reg': {'nongrouped': lam}}, n_ex, n_classes)`, a zero-initialised nn.Linear, a
DataLoader over IndexedTensorDataset with batch 256 and shuffle=True, tol left at 1e-4): the
multinomial family, no groups, no sample weights, no preprocess, lookbehind None.

The patch. Per step of batch B, glm_saga forms the weight gradient and its table correction as
two (B, m, p) broadcasts, `(a.unsqueeze(2) * X.unsqueeze(1)).mean(0)` for a and for a_prev;
here they are one product, (a - a_prev)^T X / B (the same numbers up to rounding). Also, as
plumbing and not algorithm: the logits X W^T + b are computed once per step (glm_saga computes
linear(X) twice, for a loss it only logs and for the softmax), the batches are slices of one
random permutation per epoch (what DataLoader(shuffle=True) yields, without its per-sample
collation), the logged training loss and the final loss/accuracy pass are left out. Everything
else (the step, the prox, SAGA's table and averages, the stopping rule on ||step|| <= tol that
returns before applying that step, the path's lam / lr grids and warm starts) is glm_saga's.
"""

from __future__ import annotations

import math

import torch


def soft_threshold(beta, lam):
    return (beta - lam) * (beta > lam) + (beta + lam) * (beta < -lam)


def soft_threshold_with_shrinkage(x, alpha, beta):
    return soft_threshold(x, alpha) / (1 + beta)


def train_saga(weight, bias, X, y, lr, nepochs, lam, alpha, state=None, tol=1e-4, batch_size=256,
               generator=None, batches=None):
    """glm_saga's `train_saga` (multinomial, non-grouped) on in-memory X (n, p), y (n,);
    updates `weight` (m, p) and `bias` (m,) in place. Returns (state, rows, converged): SAGA's
    table and averages, the rows its steps used (rows / n = data passes, each a forward and a
    gradient: one full gradient), whether ||step|| <= tol stopped it.
    `batches(epoch)`: tests only, the index batches of an epoch (default: a fresh permutation)."""
    n, m = len(X), weight.shape[0]
    if state is None:
        a_table = torch.zeros(n, m, dtype=X.dtype)
        w_grad_avg = torch.zeros_like(weight)
        b_grad_avg = torch.zeros_like(bias)
    else:
        a_table, w_grad_avg, b_grad_avg = state["a_table"], state["w_grad_avg"], state["b_grad_avg"]
    eye = torch.eye(m, dtype=X.dtype)
    rows = 0

    def result(converged):
        return {"a_table": a_table, "w_grad_avg": w_grad_avg, "b_grad_avg": b_grad_avg}, rows, converged

    for epoch in range(nepochs):
        order = batches(epoch) if batches is not None else \
            torch.randperm(n, generator=generator).split(batch_size)
        for idx in order:
            Xb = X[idx]
            out = torch.addmm(bias, Xb, weight.T)
            target = eye[y[idx]]
            a = torch.softmax(out, dim=1) - target
            a_prev = a_table[idx]
            rows += len(idx)
            # the patch: one product for w_grad - w_grad_prev
            w_delta = (a - a_prev).T @ Xb / len(idx)
            w_saga = w_delta + w_grad_avg
            weight_new = weight - lr * w_saga
            if alpha == 1:
                weight_new = soft_threshold(weight_new, lr * lam * alpha)
            else:
                weight_new = soft_threshold_with_shrinkage(weight_new, lr * lam * alpha,
                                                           lr * lam * (1 - alpha))
            b_grad = a.mean(0)
            b_grad_prev = a_prev.mean(0)
            b_saga = b_grad - b_grad_prev + b_grad_avg
            bias_new = bias - lr * b_saga
            a_table[idx] = a
            w_grad_avg.add_(w_delta * len(idx) / n)
            b_grad_avg.add_((b_grad - b_grad_prev) * len(idx) / n)
            dw = (weight_new - weight).norm(p=2)
            db = (bias_new - bias).norm(p=2)
            if math.sqrt(float(dw) ** 2 + float(db) ** 2) <= tol:
                return result(True)
            weight.copy_(weight_new)
            bias.copy_(bias_new)
    return result(False)


def glm_saga_lams(max_reg: float, alpha: float, epsilon: float, k: int) -> list[float]:
    """glm_saga's grid: logspace from max_reg / max(0.001, alpha) down to epsilon times that
    (in float64; glm_saga's torch.logspace is float32)."""
    max_lam = max_reg / max(0.001, alpha)
    return torch.logspace(math.log10(max_lam), math.log10(epsilon * max_lam), k, dtype=torch.float64).tolist()


def glm_saga_path(X, y, lams, n_classes, max_lr=0.1, nepochs=1000, alpha=0.99, tol=1e-4, batch_size=256,
                  seed=0):
    """glm_saga's path loop (lr_decay_factor 1, do_zero False): a zero-initialised linear layer
    warm-started from lam to lam, SAGA's state carried along. Returns one dict per lam: weight,
    bias, rows (its steps' rows), converged."""
    X = torch.as_tensor(X)
    y = torch.as_tensor(y).long()
    weight = torch.zeros(n_classes, X.shape[1], dtype=X.dtype)
    bias = torch.zeros(n_classes, dtype=X.dtype)
    generator = torch.Generator().manual_seed(seed)
    state, path = None, []
    for lam in lams:
        state, rows, converged = train_saga(weight, bias, X, y, max_lr, nepochs, lam, alpha, state, tol,
                                             batch_size, generator)
        path.append({"lam": lam, "weight": weight.clone(), "bias": bias.clone(), "rows": rows,
                     "converged": converged})
    return path
