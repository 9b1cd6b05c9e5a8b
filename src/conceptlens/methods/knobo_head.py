"""KnoBo's head training (`cbm.py`'s `train_model`) in numpy: the same Adam steps as torch's.

The head is (batch 64) x (about 150 concepts) x (classes): each of its ~10,000 steps is a few
microseconds of arithmetic, and torch's per-call overhead (autograd graph, optimiser dispatch)
made it 0.6 ms a step (issue 23). The arithmetic here is torch's written out: nn.Linear's
initialisation and the batch order still come from torch (the same seed gives the same draws),
the gradients are those autograd computes and the update is torch.optim.Adam's default
(single-tensor, no weight decay, no amsgrad), all in float32.
"""

from __future__ import annotations

import numpy as np
import torch

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


def initial_linear(n_in: int, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """nn.Linear(n_in, n_out)'s default initialisation under `seed` (caller's RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(n_in, n_out)
    return linear.weight.detach().numpy().copy(), linear.bias.detach().numpy().copy()


def batch_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Each epoch's shuffled order: torch.randperm from one seeded Generator, as before."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen).numpy() for _ in range(epochs)]


class Adam:
    """torch.optim.Adam's default update for one float32 array."""

    def __init__(self, shape, lr: float):
        self.lr, self.t = lr, 0
        self.m, self.v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def step(self, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = BETAS
        self.t += 1
        self.m += (1 - b1) * (g - self.m)  # lerp, as torch
        self.v *= b2
        self.v += (1 - b2) * g * g
        denom = np.sqrt(self.v) / np.float32(np.sqrt(1 - b2 ** self.t)) + np.float32(EPS)
        p -= np.float32(self.lr / (1 - b1 ** self.t)) * self.m / denom


def train_head(C: np.ndarray, y: np.ndarray, m: int, P: np.ndarray | None, prior_weight: float,
               epochs: int, lr: float, batch_size: int, seed: int, positive: bool = False,
               support: np.ndarray | None = None, C_val=None, y_val=None) -> dict:
    """CE (+ prior_weight * mean |tanh(W) - P| when P is given), Adam, shuffled batches; after
    each epoch the validation accuracy, the first best epoch kept. With `support` (m, k) or
    `positive`, W is projected onto W >= 0 (and 0 off the support) after each step."""
    C = np.ascontiguousarray(C, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n, k = C.shape
    W, b = initial_linear(k, m, seed)
    mask = None if support is None else np.asarray(support, dtype=np.float32)
    project = positive or mask is not None
    if mask is not None:
        np.maximum(W, 0, out=W)
        W *= mask
    P = None if P is None else np.asarray(P, dtype=np.float32)
    prior_scale = np.float32(prior_weight / W.size) if P is not None else None
    onehot = np.eye(m, dtype=np.float32)[y]
    opt_W, opt_b = Adam(W.shape, lr), Adam(b.shape, lr)
    best_acc, best, best_epoch, history, loss = -1.0, None, epochs, [], float("nan")
    for order in batch_orders(n, epochs, seed):
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            A = C[idx]
            z = A @ W.T + b
            z -= z.max(1, keepdims=True)
            e = np.exp(z)
            s = e.sum(1, keepdims=True)
            G = (e / s - onehot[idx]) / np.float32(len(idx))  # d mean-CE / d logits
            gW, gb = G.T @ A, G.sum(0)
            if P is not None:
                th = np.tanh(W)
                diff = th - P
                gW += prior_scale * np.sign(diff) * (1 - th * th)
            opt_W.step(W, gW)
            opt_b.step(b, gb)
            if project:
                np.maximum(W, 0, out=W)
                if mask is not None:
                    W *= mask
        if C_val is not None:
            acc = float(np.mean(np.argmax(C_val @ W.T + b, 1) == y_val))
            history.append(acc)
            if acc > best_acc:  # strict, as the reference: ties keep the earlier epoch
                best_acc, best, best_epoch = acc, (W.copy(), b.copy()), len(history)
    if n:  # the last step's loss, as torch's loop reported it
        ce = float(np.mean(np.log(s[:, 0]) - z[np.arange(len(idx)), y[idx]]))
        loss = ce + (float(prior_scale * np.abs(diff).sum()) if P is not None else 0.0)
    W, b = best if best is not None else (W, b)
    return {"W": W.astype(np.float32), "b": b.astype(np.float32), "final_loss": loss,
            "history": history, "best_epoch": best_epoch}
