"""`dn_cbm`: Discover-then-Name CBM (Rao, Mahajan, Böhle & Schiele, ECCV 2024).

Followed (github.com/neuroexplicit-saar/Discover-then-Name @03484ba):
`scripts/save_concept_strengths.py` (concept strengths = the frozen SAE's latent activations
on the probe images' raw CLIP embeddings), `dncbm/method_utils.py` (`MethodOurs`: naming
by `argmax` cosine of decoder columns against the vocabulary's text embeddings; the fixed
probe configurations `probe_config_dict`) and `scripts/train_linear_probe.py` (the probe).

1. The SAE (`context.discovery.sae`, trained once per backbone on an unlabelled pool by
   `conceptlens.discovery.sae`) encodes the images: s = ReLU(W_enc (a - b_pre) + b_enc), with
   a the embedding in the kind the SAE was trained on: "raw" (embedding * embedding_norm,
   the reference's unnormalised CLIP features) or "normalised" (the L2-normalised embedding,
   for backbones that do not report norms). A bundle without norms for a raw-input SAE, or
   an SAE trained for another backbone or dimension, is refused with the fix.
2. Naming (`conceptlens.discovery.naming.name_latents`): each latent's decoder direction
   against `context.discovery.words` / `word_embedding`; the concepts are the named latents
   (dead latents, i.e. that never fired on the pool, and, with `min_similarity`, weakly
   matched ones are left out). Latents sharing a word become "shoe", "shoe (2)", ... (the best
   match keeps the word). `latent_index_` and `name_similarity_` keep which latent each
   concept is and how well its name fits.
3. The probe, `solver="adam"` (the reference): nn.Linear(k, K, bias=False) (PyTorch's default
   init from `seed`), loss = CE + lam * mean|W| (torch L1Loss over all weights, i.e. the sum
   divided by K*k), Adam(lr), mini-batches of `batch_size` reshuffled every epoch, `epochs`
   epochs, final weights (no model selection). Defaults = the released ImageNet / CIFAR10 /
   Places365 configuration "lr0.001_bs512_epo200_nobias_clCE_spL1_spl1.0".
   `solver="glm"` (ours): our elastic-net path (`solvers.glm`, as label_free) on the
   standardised strengths at `glm_lam`, with an intercept; the standardisation is folded
   into `class_weights_` and `intercept_`, so `transform` stays the concept strengths s.
   `target_nec` (the NEC=5 protocols) always uses the GLM path, stopped at that NEC: the
   reference's L1-penalised Adam probe has no exact zeros and no way to stop at a NEC.
   `positive=True`: class_weights_ >= 0 (Adam: projected after every step; GLM: exact).

logits = s_kept @ class_weights_.T + intercept_ (zeros for the Adam probe): explanations are
exact (contribution of concept c to class y = W[y, c] * s_c, the reference's).

The model folder holds what `transform` needs from the SAE (the encoder rows and biases of
the kept latents, and b_pre), so a saved model reloads without the SAE file.

Deviations from the reference (notes below the table)
| what | reference | here | effect |
|---|---|---|---|
| concepts in the probe [1] | all h latents | named latents only | not measured |
| shuffling [2] | DataLoader(shuffle=True), unseeded | `randperm` each epoch from `seed` | deterministic |
| train split [3] | 90% of train | all of `train` | more data for the probe |
| `solver="glm"` | absent | elastic-net path on standardised strengths | only when set |
| `target_nec` | absent | GLM path stopped at the NEC | only when set |
| `positive` | absent | W >= 0 | only when set |
| `min_similarity` | absent (every latent named) | latents below it left out | only when set |

[1] Dead latents (0 on the whole pool) and, with `min_similarity`, weakly named ones are left
    out. A latent dead on the pool is mostly 0 on the probe images too, so in the reference its
    weights feel only the L1 term and stay near 0; where it does fire there, it is unnamed.
[2] The same distribution of batch orders, made reproducible.
[3] The reference's 10% "train_val" only monitors training (final epoch kept, no model
    selection), so `val` is unused here too.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from ..discovery.naming import name_latents, unique_names
from ..discovery.sae import INPUTS as SAE_INPUTS
from ..errors import ConfigError, DataError
from ..validation import Interval, Options
from .base import METHODS, Context, Method
from .protocols import DiscoveryRecord
from .sparse_layer import ALPHA, POSITIVE, TARGET_NEC, fit_sparse_layer

log = logging.getLogger("conceptlens")

SOLVERS = ("adam", "glm")


def probe_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, lam: float) -> torch.Tensor:
    """The reference's objective: CE + lam * mean|W| (torch.nn.L1Loss against zeros)."""
    return torch.nn.functional.cross_entropy(logits, y) + lam * weight.abs().mean()


def train_probe(A: np.ndarray, y: np.ndarray, n_classes: int, lam: float = 1.0, lr: float = 1e-3,
                epochs: int = 200, batch_size: int = 512, seed: int = 0,
                positive: bool = False) -> np.ndarray:
    """`scripts/train_linear_probe.py`'s probe on concept strengths A (n, k): returns W (K, k)."""
    with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's RNG as it was
        torch.manual_seed(seed)  # nn.Linear's default init draws from the global generator
        linear = torch.nn.Linear(A.shape[1], n_classes, bias=False)
    opt = torch.optim.Adam(linear.parameters(), lr=lr)
    X = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float32))
    Y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=g)
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            linear.zero_grad()
            probe_loss(linear(X[idx]), Y[idx], linear.weight, lam).backward()
            opt.step()
            if positive:  # projection onto W >= 0
                with torch.no_grad():
                    linear.weight.clamp_(min=0)
    return linear.weight.detach().numpy().astype(np.float32)


def _array(v, name: str) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float32)


# attribute names under which an SAE may keep its encoder (ours first)
_ENCODER_NAMES = {"W_enc": ("W_enc_", "W_enc", "encoder_weight_", "encoder_weight"),
                  "b_enc": ("b_enc_", "b_enc", "encoder_bias_", "encoder_bias"),
                  "b_pre": ("b_pre_", "b_pre", "pre_bias_", "pre_bias")}


def sae_encoder(sae) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W_enc (h, d), b_enc (h,), b_pre (d,)) of an SAE whose encoder is
    ReLU(W_enc (a - b_pre) + b_enc); `sae.encoder_arrays()` if it has one, else attributes."""
    if hasattr(sae, "encoder_arrays"):
        W, b_enc, b_pre = (_array(v, k) for v, k in zip(sae.encoder_arrays(), _ENCODER_NAMES, strict=True))
    else:
        found = {}
        for key, names in _ENCODER_NAMES.items():
            name = next((n for n in names if getattr(sae, n, None) is not None), None)
            if name is None:
                raise ConfigError(f"dn_cbm: the SAE ({type(sae).__name__}) has no {key} (looked for "
                                  f"{', '.join(names)}); expected a "
                                  "conceptlens.discovery.sae.SparseAutoencoder.")
            found[key] = _array(getattr(sae, name), key)
        W, b_enc, b_pre = found["W_enc"], found["b_enc"], found["b_pre"]
    b_enc, b_pre = b_enc.reshape(-1), b_pre.reshape(-1)
    if W.ndim == 2 and W.shape == (len(b_pre), len(b_enc)) and len(b_enc) != len(b_pre):
        W = W.T  # stored (d, h)
    if W.shape != (len(b_enc), len(b_pre)):
        raise DataError(f"dn_cbm: the SAE's encoder has shape {W.shape}, b_enc {b_enc.shape}, b_pre "
                        f"{b_pre.shape}; expected (h, d), (h,), (d,).")
    return W, b_enc, b_pre


def encode(x: np.ndarray, W: np.ndarray, b_enc: np.ndarray, b_pre: np.ndarray) -> np.ndarray:
    """s = ReLU(W (x - b_pre) + b_enc), rows of x."""
    return np.maximum((x - b_pre) @ W.T + b_enc, 0).astype(np.float32)


def latent_naming(model) -> list[dict] | None:
    """Per concept of a Discover-then-Name model, its naming record (discovery/naming.py's
    name_latents: "latent", "name", "nearest", "similarity", "second", "second_similarity",
    "dead"), aligned with `concepts_`: from the fitted model's `naming_` (every latent) picked
    by `latent_index_` (the SAE latent each concept is), or, for a reloaded model, from what it
    saves (`latent_index_`, `name_similarity_`, `second_names_`); None when it has neither."""
    k = len(model.concepts_)
    index = getattr(model, "latent_index_", None)
    records = getattr(model, "naming_", None)
    if records is not None:
        records = list(records)
        if index is not None and len(index) == k:
            by_latent = {r.get("latent"): r for r in records}
            return [by_latent.get(int(j), {"latent": int(j)}) for j in index]
        return records if len(records) == k else None
    sims, seconds = getattr(model, "name_similarity_", None), getattr(model, "second_names_", None)
    if index is None or sims is None or len(index) != k or len(sims) != k:
        return None
    seconds = list(seconds) if seconds is not None and len(seconds) == k else [None] * k
    return [{"latent": int(j), "similarity": float(s), "second": s2}
            for j, s, s2 in zip(index, sims, seconds, strict=True)]


def sae_input(bundle, kind: str, name: str = "dn_cbm") -> np.ndarray:
    """The embedding in the kind the SAE was trained on: "raw" = embedding * embedding_norm,
    "normalised" = the L2-normalised embedding."""
    x = np.asarray(bundle.embedding, dtype=np.float32)
    if kind == "normalised":
        return x
    norm = getattr(bundle, "embedding_norm", None)
    if norm is None:
        raise DataError(f"{name}: the SAE was trained on raw (unnormalised) embeddings, but these features "
                        "have no embedding norms (the backbone does not report them, or the cache predates "
                        "them); re-encode with a backbone that reports norms, or train the SAE on "
                        "normalised embeddings (input 'normalised').")
    return x * np.asarray(norm, dtype=np.float32).reshape(-1, 1)


@METHODS.register("dn_cbm")
class DNCBM(Method):
    """Discover-then-Name CBM: a sparse autoencoder's named latents as concepts, then a probe.

    Concept strengths are the frozen SAE's latent activations (`context.discovery.sae`); each live
    latent is named by the nearest word of the vocabulary (`context.discovery.words`); a linear
    probe maps strengths to classes (see the module docstring).

    Parameters
    ----------
    solver : {'adam', 'glm'}, default 'adam'
        'adam': the reference's bias-free probe, CE + lam * mean|W| by Adam; 'glm' (ours): our
        elastic-net path on the standardised strengths, with an intercept.
    lam : float, default 1.0
        The Adam probe's L1 weight (torch L1Loss over all weights); >= 0.
    lr : float, default 1e-3
        The Adam probe's learning rate; > 0.
    epochs : int, default 200
        The Adam probe's epochs (final weights, no model selection); >= 1.
    batch_size : int, default 512
        The Adam probe's mini-batch size; >= 1.
    seed : int, default 0
        Seed of the probe's initialisation and batch order; >= 0.
    target_nec : float or None, default None
        Stop the GLM path at this NEC (always the GLM, whatever `solver`: the Adam probe has no
        exact zeros); > 0. None: no NEC target.
    glm_lam : float, default 7e-4
        The GLM's regularisation strength (solver 'glm' without `target_nec`); >= 0.
    alpha : float, default 0.99
        The GLM's elastic-net L1 share, in [0, 1].
    positive : bool, default False
        Class weights >= 0 (Adam: projected after every step; GLM: exact).
    min_similarity : float or None, default None
        Leave out latents whose name's cosine similarity is below it, in [-1, 1]; None: every live
        latent is named (the reference).

    References
    ----------
    Rao, Mahajan, Boehle & Schiele, "Discover-then-Name: Task-Agnostic Concept Bottlenecks via
    Automated Concept Discovery", ECCV 2024.
    """

    # a concept layer whose concepts come from context.discovery (an SAE and words to name it)
    tags = replace(Method.tags, requires=("discovery",), refit_at_nec=True, discovers_concepts=True,
                   discovery_needs=("sae", "words"))
    _arrays = ("class_weights_", "intercept_", "encoder_", "b_enc_", "b_pre_", "latent_index_",
               "name_similarity_")
    _array_shapes: ClassVar[dict[str, tuple]] = {
        "encoder_": ("k", None), "b_enc_": ("k",), "b_pre_": (None,), "latent_index_": ("k",),
        "name_similarity_": ("k",)}
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "solver": [Options(SOLVERS, description="'adam' (the reference's L1-penalised probe) or 'glm' (our "
                                                "elastic-net path)")],
        "lam": [Interval(float, 0, None)], "lr": [Interval(float, 0, None, closed="neither")],
        "epochs": [Interval(int, 1)], "batch_size": [Interval(int, 1)], "seed": [Interval(int, 0)],
        "target_nec": TARGET_NEC, "glm_lam": [Interval(float, 0, None)], "alpha": ALPHA, "positive": POSITIVE,
        "min_similarity": [None, Interval(float, -1, 1, description="a finite number in [-1, 1] (a cosine: "
                                                                    "at most 1)")],
    }
    _parameter_examples: ClassVar[dict[str, str]] = {
        "lam": "lam = 1.0", "lr": "lr = 1e-3", "target_nec": "target_nec = 5", "glm_lam": "glm_lam = 7e-4",
        "alpha": "alpha = 0.99", "min_similarity": "min_similarity = 0.2"}

    def __init__(self, solver: str = "adam", lam: float = 1.0, lr: float = 1e-3, epochs: int = 200,
                 batch_size: int = 512, seed: int = 0, target_nec: float | None = None,
                 glm_lam: float = 7e-4, alpha: float = 0.99, positive: bool = False,
                 min_similarity: float | None = None):
        self.solver, self.lam, self.lr, self.epochs = solver, lam, lr, epochs
        self.batch_size, self.seed, self.target_nec = batch_size, seed, target_nec
        self.glm_lam, self.alpha, self.positive = glm_lam, alpha, positive
        self.min_similarity = min_similarity

    # -- fitting ----------------------------------------------------------------------
    def _discovery(self, context: Context):
        d = context.discovery
        if d.sae is None:
            raise ConfigError(f"{self.name} needs a trained sparse autoencoder in context.discovery.sae (a "
                              "run trains or loads it from [discovery]).")
        if not len(d.words) or d.word_embedding is None:
            raise ConfigError(f"{self.name} needs a vocabulary and its text embeddings in context.discovery "
                              "(words, word_embedding) to name the SAE's latents.")
        meta = dict(getattr(d.sae, "meta", None) or {})
        trained_for = meta.get("backbone_id", "")
        if trained_for and context.backbone_id and trained_for != context.backbone_id:
            raise ConfigError(f"{self.name}: the SAE was trained for backbone {trained_for!r}, but this "
                              f"run's backbone is {context.backbone_id!r}; an SAE only reads the embeddings "
                              "of its own backbone. Train one for this backbone (or use that backbone).")
        kind = meta.get("input", "normalised")
        if kind not in SAE_INPUTS:
            raise DataError(f"{self.name}: the SAE's meta['input'] is {kind!r}; expected one of "
                            f"{SAE_INPUTS}.")
        return d, kind, trained_for

    def _fit(self, train, context: Context, val) -> None:
        d, kind, trained_for = self._discovery(context)
        sae = d.sae
        x = sae_input(train, kind, self.name)
        W_enc, b_enc, b_pre = sae_encoder(sae)
        if W_enc.shape[1] != x.shape[1]:
            raise DataError(f"{self.name}: the SAE reads {W_enc.shape[1]}-dimensional embeddings, these "
                            f"are {x.shape[1]}-dimensional; it was trained for another backbone.")
        fired = getattr(sae, "fired_", None)
        naming = name_latents(sae.decoder_directions(), list(d.words), d.word_embedding, fired=fired,
                              min_similarity=self.min_similarity)
        kept = [e for e in naming if e["name"] is not None]
        dead = sum(e["dead"] for e in naming)
        if not kept:
            raise DataError(f"{self.name}: none of the SAE's {len(naming)} latents could be named ({dead} "
                            f"dead, {len(naming) - dead} below min_similarity={self.min_similarity}); "
                            "lower min_similarity or train the SAE longer or on a larger pool.")
        idx = np.array([e["latent"] for e in kept], dtype=np.int64)
        self.naming_ = naming  # every latent's name, similarity and status (not saved)
        self.latent_index_ = idx
        self.name_similarity_ = np.array([e["similarity"] for e in kept], dtype=np.float32)
        self.concepts_ = unique_names([e["name"] for e in kept], self.name_similarity_.tolist())
        self.second_names_ = [e["second"] for e in kept]
        self.encoder_, self.b_enc_ = W_enc[idx].copy(), b_enc[idx].copy()
        self.b_pre_ = b_pre.copy()
        self.sae_input_, self.sae_backbone_id_ = kind, trained_for
        self.n_dead_, self.n_weak_ = int(dead), len(naming) - int(dead) - len(kept)
        A = encode(x, self.encoder_, self.b_enc_, self.b_pre_)
        self._check_against_sae(sae, x[:256], A[:256])
        y = np.asarray(train.labels)
        m = len(self.classes_)
        if self.solver == "glm" or self.target_nec is not None:
            mean = A.mean(0)
            std = A.std(0, ddof=1) if len(A) > 1 else np.zeros(A.shape[1], A.dtype)
            std = np.where(std > 0, std, 1.0).astype(np.float32)
            W, b, self.lam_ = fit_sparse_layer((A - mean) / std, y, m, self.glm_lam, self.target_nec,
                                               self.alpha, positive=self.positive)
            # fold the standardisation in, so transform() is the concept strengths themselves
            self.class_weights_ = (W / std).astype(np.float32)
            self.intercept_ = (b - (W / std) @ mean).astype(np.float32)
            self.solver_ = "glm"
        else:
            self.class_weights_ = train_probe(A, y, m, self.lam, self.lr, self.epochs, self.batch_size,
                                              self.seed, self.positive)
            self.intercept_ = np.zeros(m, np.float32)
            self.lam_, self.solver_ = float(self.lam), "adam"
        log.info("dn_cbm: %d of %d latents named (%d dead, %d weak); probe %s, NEC %.1f", len(kept),
                 len(naming), self.n_dead_, self.n_weak_, self.solver_, self.nec_)

    def _check_against_sae(self, sae, x: np.ndarray, mine: np.ndarray) -> None:
        """The saved encoder must reproduce the SAE's own encode() (else a reloaded model would
        not be the fitted one)."""
        theirs = np.asarray(sae.encode(x), dtype=np.float32)[:, self.latent_index_]
        if theirs.shape != mine.shape:
            raise DataError(f"{self.name}: the SAE's encode() gives shape {theirs.shape}; expected "
                            f"{mine.shape}.")
        scale = max(1.0, float(np.abs(theirs).max()) if theirs.size else 1.0)
        if not np.allclose(mine, theirs, rtol=1e-4, atol=1e-4 * scale):
            raise DataError(f"{self.name}: the SAE's encode() does not equal ReLU(W_enc (x - b_pre) + "
                            f"b_enc) from its arrays (largest difference {np.abs(mine - theirs).max():.3g}); "
                            "expected a conceptlens.discovery.sae.SparseAutoencoder.")

    def discovery_record(self) -> DiscoveryRecord:
        """Each concept an SAE latent, with its naming record (methods/protocols.py: Discovering)."""
        self.check_fitted()
        return DiscoveryRecord("latents", latents=latent_naming(self))

    def _extra_state(self) -> dict:
        return {"sae_input": self.sae_input_, "sae_backbone_id": self.sae_backbone_id_,
                "solver": self.solver_, "lam": self.lam_, "n_dead": self.n_dead_, "n_weak": self.n_weak_,
                "second_names": list(self.second_names_)}

    def _load_extra(self, extra: dict) -> None:
        if extra["sae_input"] not in SAE_INPUTS:
            raise ValueError(f"sae_input {extra['sae_input']!r}")
        self.sae_input_, self.sae_backbone_id_ = extra["sae_input"], str(extra["sae_backbone_id"])
        self.solver_, self.lam_ = str(extra["solver"]), float(extra["lam"])
        self.n_dead_, self.n_weak_ = int(extra["n_dead"]), int(extra["n_weak"])
        self.second_names_ = list(extra["second_names"])

    # -- predicting -------------------------------------------------------------------
    def transform(self, bundle) -> np.ndarray:
        """Concept strengths of the named latents (n, k)."""
        self.check_fitted()
        x = sae_input(bundle, self.sae_input_, self.name)
        if x.shape[1] != self.encoder_.shape[1]:
            raise DataError(f"{self.name}: the model reads {self.encoder_.shape[1]}-dimensional embeddings; "
                            f"these are {x.shape[1]}-dimensional (another backbone?).")
        return encode(x, self.encoder_, self.b_enc_, self.b_pre_)

    def torch_head(self):
        """The SAE encoder (named latents) and the final layer as a torch module (methods/torch_head.py)."""
        from .torch_head import make_torch_head, sae_encoder

        raw = self.sae_input_ != "normalised"
        return make_torch_head(self, sae_encoder, {"weight": self.encoder_, "b_enc": self.b_enc_,
                                                   "b_pre": self.b_pre_}, {"raw": raw}, needs_norm=raw)
