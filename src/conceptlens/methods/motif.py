"""`motif`: MoTIF, a concept bottleneck over time (Knab et al., "Concepts in Motion", 2025).

A video is a sequence of windows (data/video.py); each window's embedding gives concept
activations X_raw[t, c] = max(0, cos(window_t, concept_c)), standardised per concept with the
mean and std over all windows of all training videos. A one-layer transformer with per-concept
(diagonal) attention over time turns them into non-negative per-window concepts C_t; a
non-negative linear layer gives per-window class scores l_t = W C_t + b, and the video's
logits are the log-sum-exp over its windows, (1/tau) logsumexp_t(tau l_t).

Input: `fit(train, context, val)` and every predicting method take either a
`features.video_encode.VideoFeatures` (ragged windows: `.windows[i]` is (T_i, d)) or an image
`FeatureBundle` (each image a video of one window, where log-sum-exp is the identity and MoTIF
is an ordinary concept bottleneck). So motif follows the image Method contract too.

The Method contract for videos: `transform` returns the reference's pooled concepts
c_bar = (1/tau) logsumexp_t(tau C_t) (n, k); `residual` is what log-sum-exp pooling adds beyond
the linear head on c_bar (logits - c_bar W^T - b; exactly 0 for one-window inputs), so
`head(transform(x), x)` is the logits and whole-video contributions sum to the logit. The exact
per-window account is `window_contributions`: C_t[c] * W[y, c], which sums with b_y to the
window's score l_t[y] (tested).

Explanations (`explain_video`): global concept importance g_c = sum_t alpha_t C_t[c] W[y, c]
with alpha = softmax_t(l_t[y] / tau) (the reference's `utils/explanations.py`), local relevance
per window (l_t[y] and its concept contributions), and the per-concept attention maps A_c (T x T).

Reference: github:patrick-knab/MoTIF, `utils/motif.py` (`concepts_over_time_cosine`,
`compute_concept_standardization`, `PositionalEncoding`, `DiagQKVd`, `PerChannelTemporalBlock`,
`PerChannelFFN`, `PerConceptAffine`, `CBMTransformer`, `MoTIF.train_model`, `mean_cbm`), the
hyperparameters of `train_MoTIF.py` (epochs 100, batch 32, lr 1e-3, weight decay 1e-2,
lse_tau 1, l1_lambda 1e-3, lambda_sparse 1e-3, one layer, d=1, class weights, non-negative W)
and `utils/explanations.py`; spec ../shared/METHODS_WAVE2.md section 4.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| model selection [1] | TEST accuracy, best test weights kept | validation accuracy | honest test numbers |
| positional encoding | a buffer of 2,000 positions | computed for any length | none below 2,000 windows |
| randomness [2] | global seeds (`init_repro`) | a `seed` parameter, no global state | reproducible |
| per-window scores | inside `forward`, not kept | kept (`window_logits`) | exact explanations |
| interventions [3] | in `forward` | not implemented | none on predictions |
| full attention, MoTIF-ST | ablation options | not implemented | ablations |
| image input | videos only | images are one-window videos | fits the image contract |
| per-concept 1x1 convs [4] | grouped `Conv1d` | same parameters, elementwise affine | none (tested equal) |

[1] Early stopping (patience 50) and the restored weights use validation accuracy when `val` is
given; without it (or with `select_on='train'`) the best training-accuracy epoch is restored and
all `epochs` run, as the reference does when it has no test set (it stops early only on one).
[2] A torch generator drives initialisation, dropout and batch order.
[3] Attention identity/uniform/reverse/shuffle and concept/window zeroing.
[4] With the training videos padded once (each batch trimmed to its longest video) this made a
fit about 10x faster on CPU: 100 epochs on 240 moving-fashion clips take ~10 s on one thread.

Fitted on `VideoFeatures`, the model keeps the window sampling (`sampling_`, saved in model.json;
`video_sampling()`), so `conceptlens explain` cuts a new video into the same windows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..validation import Boolean, Interval, Options
from .base import METHODS, Context, Method

SELECT_ON = ("val", "train")


# -- the network (the reference's CBMTransformer with diagonal attention) --------------------------

def positional_encoding(T: int, C: int) -> torch.Tensor:
    """(T, C) sinusoidal encoding across the concept axis, as the reference's PositionalEncoding
    (odd C: the cosine half uses one fewer frequency)."""
    position = torch.arange(T, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, C, 2, dtype=torch.float32) * (-math.log(10000.0) / C))
    pe = torch.zeros(T, C)
    pe[:, 0::2] = torch.sin(position * div)
    div_cos = div if C % 2 == 0 else torch.exp(
        torch.arange(0, C - 1, 2, dtype=torch.float32) * (-math.log(10000.0) / C))
    pe[:, 1::2] = torch.cos(position * div_cos)
    return pe


class _TemporalBlock(nn.Module):
    """Attention over time for each concept separately (the reference's PerChannelTemporalBlock)."""

    def __init__(self, C: int, d: int, dropout: float):
        super().__init__()
        self.C, self.d = C, d
        self.q = nn.Conv1d(C, C * d, 1, groups=C)
        self.k = nn.Conv1d(C, C * d, 1, groups=C)
        self.v = nn.Conv1d(C, C * d, 1, groups=C)
        self.logit_scale = nn.Parameter(torch.zeros(C))  # the learnable per-concept temperature
        self.norm1, self.norm2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.fc1 = nn.Conv1d(C, C, 1, groups=C)
        self.fc2 = nn.Conv1d(C, C, 1, groups=C)
        self.drop = nn.Dropout(dropout)
        self.attn: torch.Tensor | None = None

    @staticmethod
    def _affine(m: nn.Conv1d, y: torch.Tensor, C: int) -> torch.Tensor:
        """A per-concept 1x1 grouped convolution as an elementwise affine map (the same
        numbers, several times faster on small inputs): [B, T, C] -> [B, T, C, out/C]."""
        return y.unsqueeze(-1) * m.weight.view(C, -1) + m.bias.view(C, -1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        y = self.norm1(x)
        Q, K, V = (self._affine(m, y, C) for m in (self.q, self.k, self.v))  # [B, T, C, d]
        scores = torch.einsum("btcd,bucd->bctu", Q, K) * self.d ** -0.5
        scores = scores * self.logit_scale.clamp(-5, 5).exp().view(1, C, 1, 1)
        scores = scores.masked_fill(pad.view(B, 1, 1, T), float("-inf"))
        w = torch.softmax(scores, dim=-1)  # [B, C, T, T]
        self.attn = w.detach()
        x = x + self.drop(torch.einsum("bctu,bucd->btcd", w, V).mean(-1))
        z = self._affine(self.fc1, self.norm2(x), C)[..., 0]
        z = self._affine(self.fc2, self.drop(F.gelu(z)), C)[..., 0]
        return x + self.drop(z)


class _MotifNet(nn.Module):
    def __init__(self, C: int, m: int, layers: int, d: int, dropout: float, tau: float):
        super().__init__()
        self.tau = tau
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList([_TemporalBlock(C, d, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(C)
        self.scale = nn.Parameter(torch.ones(C))  # PerConceptAffine
        self.bias = nn.Parameter(torch.zeros(C))
        self.classifier = nn.Linear(C, m)

    def concepts(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Per-window non-negative concepts C_t [B, T, C]."""
        x = self.drop(x + positional_encoding(x.shape[1], x.shape[2]).to(x))
        for layer in self.layers:
            x = layer(x, pad)
        x = self.norm(x)
        return (F.softplus(x * self.scale + self.bias) - math.log(2.0)).clamp(min=0.0)

    def forward(self, x: torch.Tensor, pad: torch.Tensor):
        ct = self.concepts(x, pad)
        lt = self.classifier(ct)  # [B, T, m]
        mask = pad.unsqueeze(-1)
        logits = (lt.masked_fill(mask, float("-inf")) * self.tau).logsumexp(1) / self.tau
        pooled = (ct.masked_fill(mask, float("-inf")) * self.tau).logsumexp(1) / self.tau
        return logits, pooled, ct, lt


def _pad(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T_max, C] and the key padding mask [B, T_max] (True = padded)."""
    T = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), T, seqs[0].shape[1])
    pad = torch.ones(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.from_numpy(np.asarray(s, np.float32))
        pad[i, : len(s)] = False
    return x, pad


def window_sequences(data) -> list[np.ndarray]:
    """Per video (T_i, d) window embeddings: VideoFeatures' windows, or an image bundle's rows as
    one-window videos."""
    if hasattr(data, "windows"):
        return [np.asarray(w, np.float32) for w in data.windows]
    emb = getattr(data, "embedding", None)
    if emb is None:
        raise DataError("motif needs VideoFeatures (per-window embeddings) or a FeatureBundle with "
                        "'embedding'; got neither.")
    return [row[None] for row in np.asarray(emb, np.float32)]


def concept_activations(seqs: list[np.ndarray], concept_embedding: np.ndarray) -> list[np.ndarray]:
    """X_raw[t, c] = max(0, cos(window_t, concept_c)) per video (the reference's
    `concepts_over_time_cosine`)."""
    c = concept_embedding / np.maximum(np.linalg.norm(concept_embedding, axis=1, keepdims=True), 1e-12)
    out = []
    for s in seqs:
        if len(s) == 0:
            raise DataError("a video with no windows reached motif; the encode stage skips those.")
        x = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
        out.append(np.maximum(x @ c.T, 0.0).astype(np.float32))
    return out


# -- the estimator ------------------------------------------------------------------------------------

@METHODS.register("motif")
class Motif(Method):
    """MoTIF: concepts per video window, per-concept attention over time, log-sum-exp pooling
    (see the module docstring). Parameters are the reference's defaults.

    Parameters
    ----------
    epochs : int, default 100
        Training epochs; >= 1.
    batch_size : int, default 32
        Videos per mini-batch; >= 1.
    lr : float, default 1e-3
        AdamW learning rate; > 0.
    weight_decay : float, default 0.01
        AdamW weight decay; >= 0.
    lse_tau : float, default 1.0
        Temperature tau of the log-sum-exp pooling over windows; > 0.
    l1_lambda : float, default 1e-3
        Weight of the L1 term on the class weights; >= 0.
    lambda_sparse : float, default 1e-3
        Weight of the sparsity term on the per-window concepts (their mean absolute value); >= 0.
    label_smoothing : float, default 0.1
        Cross-entropy label smoothing, in [0, 1].
    layers : int, default 1
        Temporal blocks (per-concept attention over windows, then a per-concept feed-forward); >= 1.
    d : int, default 1
        Per-concept attention dimension; >= 1.
    dropout : float, default 0.1
        Dropout rate (on the positionally encoded input and in the temporal blocks), in [0, 1].
    class_weighting : bool, default True
        Weight the loss by class frequency (max count / count, the reference's).
    patience : int, default 50
        Early stopping: epochs without a better validation accuracy before stopping (only with a
        validation set); >= 1.
    grad_clip : float, default 1.0
        Gradient norm clipping; > 0.
    select_on : {'val', 'train'}, default 'val'
        Which accuracy picks the restored epoch: validation (when `val` is given) or training (then
        all `epochs` run).
    seed : int, default 0
        Seed of the initialisation, dropout and batch order; >= 0.

    References
    ----------
    Knab et al., "Concepts in Motion", 2025.
    """

    # early stopping and the restored weights use validation accuracy; videos (video_sampling)
    tags = replace(Method.tags, uses_validation=True, takes_video=True)
    # (without val: the best training-accuracy epoch, no early stop)
    _arrays = ("class_weights_", "intercept_", "concept_mean_", "concept_std_", "concept_embedding_",
               "net_state_")
    _array_shapes: ClassVar[dict[str, tuple]] = {
        "concept_mean_": ("k",), "concept_std_": ("k",), "concept_embedding_": ("k", None),
        "net_state_": (None,)}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        **{k: [Interval(int, 1)] for k in ("epochs", "batch_size", "layers", "d", "patience")},
        "seed": [Interval(int, 0)],
        **{k: [Interval(float, 0, None, closed="neither")] for k in ("lr", "lse_tau", "grad_clip")},
        **{k: [Interval(float, 0, None)] for k in ("weight_decay", "l1_lambda", "lambda_sparse")},
        "label_smoothing": [Interval(float, 0, 1)], "dropout": [Interval(float, 0, 1)],
        "class_weighting": [Boolean("true or false")],
        "select_on": [Options(SELECT_ON, description=f"one of {SELECT_ON} (never test)")],
    }

    def __init__(self, epochs: int = 100, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-2,
                 lse_tau: float = 1.0, l1_lambda: float = 1e-3, lambda_sparse: float = 1e-3,
                 label_smoothing: float = 0.1, layers: int = 1, d: int = 1, dropout: float = 0.1,
                 class_weighting: bool = True, patience: int = 50, grad_clip: float = 1.0,
                 select_on: str = "val", seed: int = 0):
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.lse_tau, self.l1_lambda, self.lambda_sparse = lse_tau, l1_lambda, lambda_sparse
        self.label_smoothing, self.layers, self.d, self.dropout = label_smoothing, layers, d, dropout
        self.class_weighting, self.patience, self.grad_clip = class_weighting, patience, grad_clip
        self.select_on, self.seed = select_on, seed

    # -- fitting --------------------------------------------------------------------------------
    def _standardised(self, data) -> list[np.ndarray]:
        acts = concept_activations(window_sequences(data), self.concept_embedding_)
        return [(a - self.concept_mean_) / self.concept_std_ for a in acts]

    def _fit(self, train, context: Context, val) -> None:
        sampling = getattr(train, "sampling", None)
        # kept so that `conceptlens explain` cuts a new video into the same windows
        self.sampling_ = None if sampling is None else dataclasses.asdict(sampling)
        E = np.asarray(context.concept_embedding, np.float32)
        self.concept_embedding_ = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        self.concepts_ = list(context.concepts)
        raw = concept_activations(window_sequences(train), self.concept_embedding_)
        cat = torch.from_numpy(np.concatenate(raw))
        # over all windows of all training videos; torch's unbiased std, as the reference
        self.concept_mean_ = cat.mean(0).numpy()
        self.concept_std_ = (cat.std(0) if len(cat) > 1 else torch.ones(cat.shape[1])).clamp_min(1e-6).numpy()
        X = [(a - self.concept_mean_) / self.concept_std_ for a in raw]
        y = np.asarray(train.labels, np.int64)
        Xv, yv = (self._standardised(val), np.asarray(val.labels)) if (
            val is not None and self.select_on == "val" and len(val)) else (None, None)

        k, m = len(self.concepts_), len(self.classes_)
        with torch.random.fork_rng(devices=[]):  # initialisation draws from the global generator
            torch.manual_seed(self.seed)
            net = _MotifNet(k, m, self.layers, self.d, float(self.dropout), float(self.lse_tau))
        gen = torch.Generator().manual_seed(self.seed)
        counts = np.bincount(y, minlength=m).astype(np.float32)
        weight = None
        if self.class_weighting:  # max_count / count_k for classes present in train (the reference's)
            present = counts > 0
            weight = torch.ones(m)
            weight[present] = torch.from_numpy(counts[present].max() / counts[present])
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=float(self.label_smoothing))
        opt = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))

        # padded once: a batch is an index into these tensors, trimmed to its longest video
        Xp, padp = _pad(X)
        lengths = (~padp).sum(1)
        yt = torch.from_numpy(y)
        Xvp = _pad(Xv) if Xv is not None else None
        best, best_state, since = -1.0, None, 0
        epoch = 0
        with torch.random.fork_rng(devices=[]):  # dropout draws from a stream seeded here
            torch.manual_seed(self.seed)
            for epoch in range(self.epochs):  # noqa: B007 - epochs_run_ reads it
                net.train()
                perm = torch.randperm(len(X), generator=gen)
                correct = 0
                for s in range(0, len(X), self.batch_size):
                    idx = perm[s : s + self.batch_size]
                    T = int(lengths[idx].max())
                    xb, pad, yb = Xp[idx, :T], padp[idx, :T], yt[idx]
                    logits, _, ct, _ = net(xb, pad)
                    valid = (~pad).unsqueeze(-1).float()
                    sparse = (ct.abs() * valid).sum() / (valid.sum() * ct.shape[-1]).clamp(min=1.0)
                    loss = (criterion(logits, yb) + self.l1_lambda * net.classifier.weight.abs().sum()
                            + self.lambda_sparse * sparse)
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), float(self.grad_clip))
                    opt.step()
                    with torch.no_grad():
                        net.classifier.weight.clamp_(min=0.0)  # non-negative class weights
                    correct += int((logits.argmax(1) == yb).sum())
                if Xvp is not None:
                    net.eval()
                    with torch.no_grad():
                        metric = float((net(*Xvp)[0].argmax(1).numpy() == yv).mean())
                else:
                    metric = correct / len(X)
                if metric > best + 1e-8:
                    best, since = metric, 0
                    best_state = {n: p.detach().clone() for n, p in net.state_dict().items()}
                else:
                    since += 1
                    if Xvp is not None and since >= self.patience:  # only on held-out accuracy, as
                        break  # the reference (no early stopping without its held-out set)
        net.load_state_dict(best_state)
        net.eval()
        self.selection_accuracy_ = best
        self.epochs_run_ = epoch + 1
        self._set_net(net)

    def _set_net(self, net: _MotifNet) -> None:
        self._net = net
        self.class_weights_ = net.classifier.weight.detach().numpy().copy()
        self.intercept_ = net.classifier.bias.detach().numpy().copy()
        self.net_state_ = torch.cat([p.detach().reshape(-1) for n, p in self._body(net)]).numpy()

    @staticmethod
    def _body(net: _MotifNet):
        """The network's parameters other than the classifier, in a fixed order."""
        return [(n, p) for n, p in sorted(net.state_dict().items()) if not n.startswith("classifier.")]

    def _network(self) -> _MotifNet:
        net = getattr(self, "_net", None)
        if net is None:  # a loaded model: rebuild from the saved arrays
            k, m = self.class_weights_.shape[1], self.class_weights_.shape[0]
            net = _MotifNet(k, m, self.layers, self.d, float(self.dropout), float(self.lse_tau))
            flat = torch.from_numpy(np.asarray(self.net_state_, np.float32))
            state, at = {}, 0
            for n, p in self._body(net):
                state[n] = flat[at : at + p.numel()].reshape(p.shape)
                at += p.numel()
            if at != len(flat):
                raise DataError(f"motif: the saved network has {len(flat)} numbers; a {self.layers}-layer "
                                f"network of {k} concepts with d={self.d} has {at}. The model file is "
                                "damaged.")
            state["classifier.weight"] = torch.from_numpy(np.asarray(self.class_weights_, np.float32))
            state["classifier.bias"] = torch.from_numpy(np.asarray(self.intercept_, np.float32))
            net.load_state_dict(state)
            net.eval()
            self._net = net
        return net

    def _extra_state(self) -> dict:
        return {"selection_accuracy": self.selection_accuracy_, "epochs_run": self.epochs_run_,
                "sampling": getattr(self, "sampling_", None)}

    def _load_extra(self, extra: dict) -> None:
        self.selection_accuracy_ = float(extra["selection_accuracy"])
        self.epochs_run_ = int(extra["epochs_run"])
        sampling = extra.get("sampling")  # absent in models fitted on images
        if sampling is not None:
            from ..data.video import VideoSampling

            VideoSampling(**sampling).validate()  # a bad entry raises here, at load
        self.sampling_ = sampling

    def video_sampling(self):
        """The `data.video.VideoSampling` of the videos this model was fitted on, or None when it
        was fitted on images (or on VideoFeatures that did not record it)."""
        from ..data.video import VideoSampling

        self.check_fitted()
        sampling = getattr(self, "sampling_", None)
        return None if sampling is None else VideoSampling(**sampling)

    # -- predicting -----------------------------------------------------------------------------
    def _run(self, data, batch: int = 256) -> dict:
        """Everything the network computes, per video (eval mode)."""
        self.check_fitted()
        net = self._network()
        X = self._standardised(data)
        out = {"logits": [], "pooled": [], "concepts_t": [], "logits_t": [], "attention": []}
        with torch.no_grad():
            for s in range(0, len(X), batch):
                chunk = X[s : s + batch]
                xb, pad = _pad(chunk)
                logits, pooled, ct, lt = net(xb, pad)
                out["logits"].append(logits.numpy())
                out["pooled"].append(pooled.numpy())
                attn = torch.stack([layer.attn for layer in net.layers], 1)  # [B, L, C, T, T]
                for i, x in enumerate(chunk):
                    T = len(x)
                    out["concepts_t"].append(ct[i, :T].numpy())
                    out["logits_t"].append(lt[i, :T].numpy())
                    out["attention"].append(attn[i, :, :, :T, :T].numpy())
        k, m = len(self.concepts_), len(self.classes_)
        out["logits"] = np.concatenate(out["logits"]) if X else np.zeros((0, m), np.float32)
        out["pooled"] = np.concatenate(out["pooled"]) if X else np.zeros((0, k), np.float32)
        return out

    def transform(self, data) -> np.ndarray:
        """Pooled concepts (n, k): (1/tau) logsumexp over windows of C_t (the reference's)."""
        return self._run(data)["pooled"]

    def decision_function(self, data) -> np.ndarray:
        return self._run(data)["logits"]

    def residual(self, data) -> np.ndarray | float:
        """What log-sum-exp pooling adds beyond the linear head on the pooled concepts; exactly 0
        when every input is one window (then pooling is the identity)."""
        seqs = window_sequences(data)
        if all(len(s) == 1 for s in seqs):
            return 0.0
        run = self._run(data)
        return run["logits"] - (run["pooled"] @ self.class_weights_.T + self.intercept_)

    def window_concepts(self, data) -> list[np.ndarray]:
        """Per video (T_i, k): the non-negative concepts C_t of each window."""
        return self._run(data)["concepts_t"]

    def window_logits(self, data) -> list[np.ndarray]:
        """Per video (T_i, m): each window's class scores l_t = W C_t + b."""
        return self._run(data)["logits_t"]

    def attention_maps(self, data) -> list[np.ndarray]:
        """Per video (layers, k, T_i, T_i): each concept's attention over windows (rows: query)."""
        return self._run(data)["attention"]

    def window_contributions(self, data, index: int, target: int | None = None) -> np.ndarray:
        """(T, k) contributions C_t[c] * W[target, c] of video `index`; each row plus the intercept
        is the window's score l_t[target] (default target: the predicted class)."""
        run = self._run(_one(data, index))
        target = int(run["logits"][0].argmax()) if target is None else int(target)
        return run["concepts_t"][0] * self.class_weights_[target]


def _one(data, index: int):
    return data.rows([index])


def explain_video(model: Motif, data, index: int, target: int | None = None, top: int = 3) -> dict:
    """The three views of one video's prediction (as the reference's utils/explanations.py):

    * `global`: per concept g_c = sum_t alpha_t C_t[c] W[y, c], alpha = softmax_t(l_t[y] / tau),
      and the pooled concepts c_bar (the paper's view);
    * `windows`: per window its score l_t[y], its time importance alpha_t, its concept
      contributions (T, k) (each row + intercept = l_t[y]) and its `top` concepts;
    * `attention`: (layers, k, T, T) per-concept attention over windows.
    """
    row = _one(data, index)
    run = model._run(row)
    logits, ct, lt = run["logits"][0], run["concepts_t"][0], run["logits_t"][0]
    y = int(logits.argmax()) if target is None else int(target)
    contrib = ct * model.class_weights_[y]  # (T, k)
    z = lt[:, y] / model.lse_tau
    alpha = np.exp(z - z.max())
    alpha /= alpha.sum()
    g = (alpha[:, None] * contrib).sum(0)
    spans = getattr(row, "spans", None)
    windows = []
    for t in range(len(ct)):
        order = np.argsort(-contrib[t], kind="stable")[:top]
        windows.append({
            "window": t, "frames": [int(v) for v in spans[0][t]] if spans else None,
            "score": float(lt[t, y]), "importance": float(alpha[t]),
            "top": [(model.concepts_[c], float(ct[t, c]), float(contrib[t, c])) for c in order],
        })
    order = np.argsort(-g, kind="stable")
    return {
        "id": row.ids[0], "predicted": model.classes_[int(logits.argmax())], "target": model.classes_[y],
        "logit": float(logits[y]), "intercept": float(model.intercept_[y]),
        "global": [(model.concepts_[c], float(g[c])) for c in order],
        "pooled_concepts": run["pooled"][0], "window_contributions": contrib, "window_scores": lt[:, y],
        "time_importance": alpha, "windows": windows, "attention": run["attention"][0],
    }


def video_as_text(explanation: dict, top: int = 5) -> str:
    """`conceptlens explain` for a video: the prediction, global importance, top concepts per window."""
    lines = [f"{explanation['id']}: predicted {explanation['predicted']!r}; score for "
             f"{explanation['target']!r} = {explanation['logit']:.3f} (log-sum-exp over "
             f"{len(explanation['windows'])} windows)", "global concept importance:"]
    lines += [f"  {v:+8.3f}  {name}" for name, v in explanation["global"][:top]]
    for w in explanation["windows"]:
        frames = f" frames {w['frames'][0]}-{w['frames'][1] - 1}" if w["frames"] else ""
        concepts = ", ".join(f"{name} {c:+.2f}" for name, _, c in w["top"])
        lines.append(f"  window {w['window']}{frames}: score {w['score']:+.3f}, importance "
                     f"{w['importance']:.2f}: {concepts}")
    return "\n".join(lines)


# -- baselines ----------------------------------------------------------------------------------------

def fit_mean_cbm(train, context: Context, epochs: int = 200, lr: float = 1e-3, seed: int = 0):
    """The reference's "mean CBM" (`utils/motif.py: mean_cbm`): a linear layer on the time-averaged
    standardised concept activations, Adam lr 1e-3, 200 full-batch epochs, plain cross-entropy.
    Returns `predict(data) -> labels`."""
    E = np.asarray(context.concept_embedding, np.float32)
    raw = concept_activations(window_sequences(train), E)
    cat = torch.from_numpy(np.concatenate(raw))
    mean, std = cat.mean(0), cat.std(0).clamp_min(1e-6)

    def averaged(data) -> torch.Tensor:
        acts = concept_activations(window_sequences(data), E)
        return torch.stack([((torch.from_numpy(a) - mean) / std).mean(0) for a in acts])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = nn.Linear(E.shape[0], len(context.classes))
    opt = torch.optim.Adam(linear.parameters(), lr=lr)
    x, y = averaged(train), torch.from_numpy(np.asarray(train.labels, np.int64))
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(linear(x), y).backward()
        opt.step()

    def predict(data) -> np.ndarray:
        with torch.no_grad():
            return linear(averaged(data)).argmax(1).numpy()

    return predict


def fit_frame_averaged(method: str | Method, train, context: Context, val=None, **params) -> Method:
    """Any image method fitted on each video's mean window embedding (mean features for probes);
    predict with `model.predict(videos.mean_bundle())`."""
    from .base import get_method

    model = get_method(method, **params) if isinstance(method, str) else method
    return model.fit(train.mean_bundle(), context, None if val is None else val.mean_bundle())
