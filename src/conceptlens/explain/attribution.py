"""Where concepts look: input attributions of a concept's prediction (or of a class logit) through
the whole differentiable pipeline, image pixels -> the backbone's preprocessing -> its embedding or
features -> the model's concept predictor, as heat maps over the image at its own resolution.

Furby et al. 2024 ("Can we constrain concept bottleneck models to learn semantically meaningful
input features?", METHODS_WAVE2.md section 6) ask whether a concept's prediction rests on the
pixels that show the concept, and find that concepts which always co-occur in training are
attributed to each other's regions. This module gives the heat maps and `region_share`, the share
of positive attribution mass inside given regions (what `benchmarks/fig_attribution.py` measures on
the composite dataset, whose regions are known).

1. Pixels: each decoded image (H, W[, C]) uint8 becomes a (1, 3, H, W) float tensor in 0..255 (a
   grey image is repeated over the three channels, as `backbones.base.to_rgb_uint8` does); the heat
   map is the attribution summed over the channels (for a grey image that is exactly the
   attribution of its one grey value, by the chain rule), so it has the input's resolution.
2. The differentiable path (`pixel_encoder`): a backbone that has a `pixel_encoder(image, keys)`
   method supplies it (the hook for new backbones). For `offline` and `hf` it is built here from the
   backbone's own modules, reproducing `prepare` + `encode_prepared` in torch with autograd:
   `resize_center_crop_t` (backbones/base.py, the tensor form of `resize_center_crop`),
   the offline backbone's inversion decided once per image from its uint8 pixels (as `prepare`
   does), its normalisation, EfficientNet-Lite0's pooled features and the ConSE embedding (the
   gradient flows through the top-T probabilities; which T classes are chosen is piecewise
   constant, as in any top-k), CLIP/SigLIP's `get_image_features`, then the L2 normalisation.
   `tests/explain/test_attribution.py` checks that it reproduces `encode_images`.
3. The concept predictor (`predictor_for`): `cbm`'s concept logits g(x) (standardisation, optional
   hidden layer, linear head; the per-concept logit is what the paper attributes) and its class
   logits head(A); `ecbm`'s concept-energy logits E_k(x, c_k = 0) - E_k(x, c_k = 1), the image's
   evidence for each concept (its p(c_k = 1 | x) under the concept energy alone: the inference by
   gradient descent, which adds the global energy at weight 0.01, is not differentiated through;
   no class logits, as ECBM's class decision is that inference); any other method whose
   `transform` and `decision_function` are affine in its input (label_free, linear_probe,
   zero_shot, ...) through that affine map, recovered by probing the method and verified on random
   inputs (a method that is not affine, such as cosine-normalised ones, is refused with a
   ConfigError);
   `similarity_predictor` scores cosine similarity with concept text embeddings (the raw CLIP
   concept score of the similarity-based methods).
4. Attribution (`attribute`): 'ig', integrated gradients (Sundararajan et al. 2017) through captum's
   `IntegratedGradients` from a black image (all pixels 0) with `n_steps` steps of captum's default
   Gauss-Legendre rule; 'grad_x_input', the plain gradient times (input - baseline). Both report
   f(x), f(baseline) and the completeness gap sum(map) - (f(x) - f(baseline)) (IG's is small; the
   gradient x input one need not be).

Deviations from the reference (notes below the table)
| what | reference (Furby et al.) | here | effect |
|---|---|---|---|
| attribution [1] | LRP (TorchLRP, composite rules) | IG (captum), grad x input | other heat maps |
| model | VGG-11-BN X->C fine-tuned per concept | frozen backbone + cbm's concept head | seconds to train |
| localisation [2] | unverified (card corner polygons) | positive-mass share per region | our measure |

[1] The paper's LRP rules are tied to a VGG's layer types; the pipelines here (EfficientNet-Lite0
    with ConSE, CLIP/SigLIP transformers) have no agreed LRP composite, while integrated gradients
    applies to any differentiable path and satisfies completeness, which the tests check. The
    author's earlier code uses integrated gradients too (with SmoothGrad squared). PyPI `zennit`
    would give LRP for the convolutional offline backbone; not done.
[2] `region_share` is the fraction of the positive attribution mass inside a region (negative
    attribution is evidence against the concept, not where it is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import resize_center_crop_t, to_rgb_uint8
from ..backbones.hf import HFBackbone
from ..backbones.offline import OfflineBackbone
from ..errors import ConfigError, DataError, closest
from ..features.bundle import FeatureBundle
from ..methods.protocols import TorchForward

ATTRIBUTION_METHODS = ("ig", "grad_x_input")
KINDS = ("concept", "class")
PixelEncoder = Callable[[torch.Tensor], dict[str, torch.Tensor]]


# -- the differentiable path from pixels ------------------------------------------------------


CAPTUM_HINT = "the `attribution` extra: pip install 'conceptlens[attribution]'"


def captum_missing() -> str | None:
    """None when captum (integrated gradients) can be imported, else what to install."""
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return f"integrated gradients need captum ({CAPTUM_HINT})"
    return None


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A decoded image (H, W) or (H, W, 1|3|4) uint8 -> (1, 3, H, W) float32 in 0..255."""
    a = np.asarray(image)
    if a.ndim not in (2, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"an image must be (H, W) or (H, W, channels) pixels; got shape {a.shape}.")
    # a copy: decoded images may be read-only views
    return torch.from_numpy(np.array(to_rgb_uint8(a), dtype=np.float32)).permute(2, 0, 1)[None]


def _offline_encoder(bb, image: np.ndarray, keys: Sequence[str]) -> PixelEncoder:
    invert = bb._should_invert(np.asarray(image))  # decided on the uint8 pixels, as `prepare` does
    model = bb.model
    text = bb._class_text_embeddings() if "embedding" in keys else None

    def encode(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = resize_center_crop_t(pixels, bb.image_size)
        if invert:
            x = 255.0 - x
        x = (x - 127.0) / 128.0
        feats = model._avg_pooling(model.extract_features(x)).flatten(1)
        out = {"features": feats}
        if text is not None:
            probs = torch.softmax(model._fc(feats) / bb.temperature, dim=-1)
            weights, top = probs.topk(bb.top_t, dim=-1)
            emb = torch.einsum("nt,ntd->nd", weights, text[top])
            out["embedding"] = F.normalize(emb, dim=-1, eps=1e-12)
        return out

    return encode


def _hf_encoder(bb, image: np.ndarray, keys: Sequence[str]) -> PixelEncoder:
    def encode(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = resize_center_crop_t(pixels, bb.crop, resize_to=bb.short, mode=bb.mode, squash=bb.squash)
        x = (x * bb.rescale - bb.mean) / bb.std
        out = bb._pooled(bb.model.get_image_features(pixel_values=x.to(bb.device)))
        return {"embedding": F.normalize(out.float().cpu(), dim=-1, eps=1e-12)}

    return encode


def pixel_encoder(backbone, image: np.ndarray, keys: Sequence[str] = ("embedding",)) -> PixelEncoder:
    """A function (b, 3, H, W) 0..255 pixels of `image`'s size -> {key: (b, .) tensor} with autograd,
    equal to the backbone's `prepare` + `encode_prepared` (embedding L2-normalised)."""
    own = getattr(backbone, "pixel_encoder", None)
    if callable(own):
        return own(image, keys)

    if isinstance(backbone, OfflineBackbone):
        return _offline_encoder(backbone, image, keys)
    if isinstance(backbone, HFBackbone):
        if "features" in keys:
            raise ConfigError(
                f"the hf backbone {backbone.id!r} gives no 'features', only the embedding; attribute a "
                "model trained on the embedding (e.g. cbm with on='embedding')."
            )
        return _hf_encoder(backbone, image, keys)
    raise ConfigError(
        f"backbone {getattr(backbone, 'id', type(backbone).__name__)!r} has no differentiable path from "
        "pixels to its embedding, so input attributions cannot be computed (precomputed features and "
        "open_clip are not supported yet). Use the 'offline' or an 'hf:' CLIP/SigLIP backbone, or give "
        "the backbone a `pixel_encoder(image, keys)` method returning a torch function of the pixels."
    )


# -- concept predictors in torch --------------------------------------------------------------


@dataclass
class TorchPredictor:
    """A fitted model's concept scores and class logits as torch functions of its input (the
    backbone's 'embedding' or 'features'). `class_fn` is None where class logits are not available."""

    concepts: tuple[str, ...]
    classes: tuple[str, ...]
    input: str
    concept_fn: Callable[[torch.Tensor], torch.Tensor]
    class_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    name: str = ""


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _affine_probe(fn: Callable[[np.ndarray], np.ndarray], d: int, seed: int = 0,
                  rtol: float = 1e-3) -> tuple[np.ndarray, np.ndarray] | None:
    """(M (out, d), c (out,)) with fn(X) = X @ M.T + c, or None where fn is not affine: read at 0 and
    at the unit vectors, then checked on random inputs."""
    with np.errstate(all="ignore"):
        probe = np.vstack([np.zeros((1, d), np.float32), np.eye(d, dtype=np.float32)])
        out = np.asarray(fn(probe), np.float64)
        c, M = out[0], (out[1:] - out[0]).T
        X = np.random.default_rng(seed).normal(size=(8, d)).astype(np.float32) / np.sqrt(d)
        got = np.asarray(fn(X), np.float64)
    want = X.astype(np.float64) @ M.T + c
    if not (np.isfinite(out).all() and np.isfinite(got).all()):
        return None
    tol = rtol * max(1.0, float(np.abs(want).max()))
    return (M, c) if float(np.abs(got - want).max()) <= tol else None


def predictor_for(model, input_dim: int | None = None) -> TorchPredictor:
    """The torch concept predictor of a fitted model (see the module docstring, step 3).
    `input_dim`: the size of the model's input (the backbone's embed_dim or feature_dim), needed to
    probe an affine method; guessed from its arrays when None."""
    if isinstance(model, TorchPredictor):
        return model
    check = getattr(model, "check_fitted", None)
    if check is None:
        raise ConfigError(f"expected a fitted conceptlens model or a TorchPredictor; got {type(model)}.")
    check()
    forward = model.torch_forward() if isinstance(model, TorchForward) else None
    if forward is not None:  # an exact torch forward (methods/protocols.py)
        concept_fn, class_fn, key = forward
        return TorchPredictor(tuple(model.concepts_), tuple(model.classes_), key, concept_fn, class_fn,
                              getattr(type(model), "name", ""))

    key = getattr(model, "feature_key_", model.input)
    d = int(input_dim) if input_dim else _input_dim(model)

    def bundle(X):
        n = len(X)
        return FeatureBundle([f"probe/{i}" for i in range(n)], np.zeros(n, np.int64), tuple(model.classes_),
                             X if key == "embedding" else None, X if key == "features" else None, "probe")

    concept_map = class_map = None
    try:
        concept_map = _affine_probe(lambda X: model.transform(bundle(X)), d)
        class_map = _affine_probe(lambda X: model.decision_function(bundle(X)), d)
    except (DataError, ValueError, RuntimeError):
        pass
    if concept_map is None:
        raise ConfigError(
            f"method {model.name!r}: its concept activations are not an affine function of its input, and "
            "no differentiable concept predictor is known for it, so input attributions cannot be "
            "computed. Supported: methods with an exact torch forward (tags.differentiable: cbm, ecbm), and "
            "methods whose transform is affine in the embedding "
            "(label_free, linear_probe, zero_shot, ...); or score concepts by similarity "
            "(similarity_predictor)."
        )
    M, c = (_t(a) for a in concept_map)
    Mc, cc = (_t(a) for a in class_map) if class_map is not None else (None, None)
    return TorchPredictor(
        tuple(model.concepts_), tuple(model.classes_), key, lambda x: x @ M.T + c,
        None if Mc is None else (lambda x: x @ Mc.T + cc), model.name)


def _input_dim(model) -> int:
    n = getattr(model, "n_features_in_", None)  # scikit-learn's name, where a method declares it
    if isinstance(n, int | np.integer):
        return int(n)
    for name in ("projection_", "prompt_embedding_", "concept_embedding_", "encoder_"):
        a = getattr(model, name, None)
        if a is not None and np.ndim(a) == 2:
            return int(np.shape(a)[1])
    raise ConfigError(f"method {model.name!r}: cannot tell the size of its input to probe it; pass "
                      "input_dim (the backbone's embed_dim, or feature_dim for 'features').")


def similarity_predictor(concepts: Sequence[str], concept_embedding: np.ndarray) -> TorchPredictor:
    """Concept score = cosine of the image embedding with each concept's text embedding (k, d)."""
    E = np.asarray(concept_embedding, dtype=np.float32)
    if E.ndim != 2 or len(E) != len(concepts):
        raise DataError(f"concept_embedding must be ({len(concepts)}, d), one row per concept; "
                        f"got {E.shape}.")
    Et = F.normalize(torch.from_numpy(E), dim=-1)
    return TorchPredictor(tuple(concepts), (), "embedding",
                          lambda x: F.normalize(x, dim=-1, eps=1e-12) @ Et.T, None, "similarity")


# -- attribution ------------------------------------------------------------------------------


@dataclass
class Heatmaps:
    """Attributions of `targets` for each image: `maps[i]` is (len(targets), H_i, W_i) float32 at
    image i's resolution; `outputs` / `baseline_outputs` (n, t) are f(x) and f(black image);
    `delta` (n, t) = map sum - (f(x) - f(baseline)), IG's completeness gap."""

    maps: list[np.ndarray]
    targets: tuple[str, ...]
    kind: str
    method: str
    outputs: np.ndarray
    baseline_outputs: np.ndarray
    delta: np.ndarray

    def heatmap(self, i: int, target: str) -> np.ndarray:
        return self.maps[i][self.targets.index(target)]

    def stacked(self) -> np.ndarray:
        """(n, t, H, W) where every image has one size."""
        shapes = {m.shape for m in self.maps}
        if len(shapes) > 1:
            raise DataError(f"the images have different sizes {sorted(shapes)[:3]}; use `maps` per image.")
        return np.stack(self.maps)


def _target_index(names: Sequence[str] | None, known: Sequence[str], kind: str, who: str) -> list[int]:
    if names is None:
        return list(range(len(known)))
    if isinstance(names, str):
        names = [names]
    out = []
    for t in names:
        if t not in known:
            raise ConfigError(
                f"{who} has no {kind} {t!r}.{closest(str(t), list(known))} Its {kind}s: "
                f"{list(known)[:10]}{' ...' if len(known) > 10 else ''}."
            )
        out.append(list(known).index(t))
    if not out:
        raise ConfigError(f"no {kind}s to attribute: give at least one {kind} name.")
    return out


def attribute(backbone, model, images: Sequence[np.ndarray], targets: Sequence[str] | str | None = None,
              *, kind: str = "concept", method: str = "ig", n_steps: int = 32,
              internal_batch_size: int | None = 32) -> Heatmaps:
    """Heat maps of `targets` (concept names, or class names with kind='class'; None = all) for each
    decoded image, through `backbone`'s differentiable path and `model`'s predictor (a fitted
    conceptlens model or a TorchPredictor). method: 'ig' (integrated gradients from a black image,
    `n_steps` steps) or 'grad_x_input'."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}; got {kind!r}.")
    if method not in ATTRIBUTION_METHODS:
        raise ConfigError(f"method must be one of {ATTRIBUTION_METHODS}; got {method!r}.")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"n_steps must be an integer >= 1; got {n_steps!r} (captum's default is 50).")
    key = getattr(model, "feature_key_", getattr(model, "input", "embedding"))
    dim = getattr(backbone, "embed_dim" if key == "embedding" else "feature_dim", None)
    pred = predictor_for(model, dim if isinstance(dim, int) and dim > 0 else None)
    who = f"the model ({pred.name or 'predictor'})"
    if kind == "class" and pred.class_fn is None:
        raise ConfigError(f"{who} has no differentiable class logits; attribute its concepts instead.")
    idx = _target_index(targets, pred.concepts if kind == "concept" else pred.classes, kind, who)
    names = tuple((pred.concepts if kind == "concept" else pred.classes)[j] for j in idx)
    score = pred.concept_fn if kind == "concept" else pred.class_fn
    cols = torch.tensor(idx)
    if method == "ig":
        try:
            from captum.attr import IntegratedGradients
        except ImportError as e:
            raise ConfigError(f"integrated gradients need captum ({CAPTUM_HINT}), or "
                              "method='grad_x_input'.") from e
    maps, outs, base_outs, deltas = [], [], [], []
    t = len(idx)
    for image in images:
        x = image_tensor(image)
        encode = pixel_encoder(backbone, image, (pred.input,))

        def f(pixels, encode=encode):
            return score(encode(pixels)[pred.input].float())[:, cols]

        base = torch.zeros_like(x)
        with torch.no_grad():
            fx, fb = f(x)[0], f(base)[0]
        xs = x.expand(t, *x.shape[1:]).contiguous()
        if method == "ig":
            attr = IntegratedGradients(f).attribute(
                xs, baselines=base.expand_as(xs), target=list(range(t)), n_steps=n_steps,
                internal_batch_size=internal_batch_size)
        else:
            xs.requires_grad_(True)
            out = f(xs)
            (grad,) = torch.autograd.grad(out.diagonal().sum(), xs)
            attr = grad * (xs - base)
        hm = attr.detach().sum(1).float().numpy()  # (t, H, W): summed over the colour channels
        maps.append(hm.astype(np.float32))
        outs.append(fx.numpy())
        base_outs.append(fb.numpy())
        deltas.append(hm.reshape(t, -1).sum(1) - (fx - fb).numpy())
    n = len(maps)
    shape = (n, t)
    def arr(rows):
        return np.asarray(rows, np.float64).reshape(shape)

    return Heatmaps(maps, names, kind, method, arr(outs), arr(base_outs), arr(deltas))


# -- where the mass falls ---------------------------------------------------------------------


def grid_masks(height: int, width: int, rows: int = 2, cols: int = 2) -> np.ndarray:
    """(rows * cols, H, W) bool masks of a rows x cols grid, row-major (the composite's REGIONS
    order for 2 x 2: top-left, top-right, bottom-left, bottom-right); edges at i * H // rows."""
    if min(height, width, rows, cols) < 1 or rows > height or cols > width:
        raise ConfigError(f"a {rows} x {cols} grid needs an image at least that large; "
                          f"got {height} x {width}.")
    ys = [i * height // rows for i in range(rows + 1)]
    xs = [j * width // cols for j in range(cols + 1)]
    out = np.zeros((rows * cols, height, width), dtype=bool)
    for i in range(rows):
        for j in range(cols):
            out[i * cols + j, ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = True
    return out


def region_share(heatmap: np.ndarray, regions: Mapping[str, np.ndarray] | np.ndarray):
    """Share of the positive attribution mass of `heatmap` (H, W) inside each region: a mapping
    name -> (H, W) bool mask gives a dict, an (r, H, W) bool array an (r,) array. The denominator is
    the whole image's positive mass (regions need not cover it); NaN where there is none."""
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise DataError(f"heatmap must be (H, W); got shape {h.shape}.")
    named = isinstance(regions, Mapping)
    masks = np.asarray(list(regions.values()) if named else regions)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != h.shape:
        raise DataError(f"region masks must be (H, W) = {h.shape} each; got {masks.shape}.")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise DataError("region masks must be boolean (or 0/1) arrays.")
        masks = masks.astype(bool)
    pos = np.maximum(h, 0.0)
    total = pos.sum()
    shares = (masks * pos).sum((1, 2)) / total if total > 0 else np.full(len(masks), np.nan)
    return dict(zip(regions, shares.tolist(), strict=True)) if named else shares
