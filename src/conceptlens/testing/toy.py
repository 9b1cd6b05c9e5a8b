"""The toy problems the tests (and a newcomer's own tests) are built on.

`make_problem`: 4 classes, 12 concepts, 3 concepts per class (concepts 3c..3c+2 belong to class c);
an image mixes its class's concept vectors plus noise. Everything a method may read is filled: the
concept texts and embeddings, the class prior and prompt embeddings, the annotated truth (= the
prior) and the discovery inputs (an unlabelled pool, a codebook and an SAE whose latents are the
concept vectors), so every registered method fits on it in well under a second with `FAST_PARAMS`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "CLASSES",
    "FAST_PARAMS",
    "SERVICE_CLASSES",
    "SERVICE_CONCEPTS",
    "D",
    "F",
    "K",
    "M",
    "attribute_csv",
    "decode_png",
    "make_problem",
    "service_model",
    "spy_run",
    "tiny_run_setup",
    "toy_bundles",
    "write_png",
]

M, K, D, F = 4, 12, 16, 24  # classes, concepts, embedding dim, feature dim
CLASSES = tuple("abcd")
# parameters that make each method's fit on make_problem's toy quick (and still beat chance)
FAST_PARAMS = {"labo": {"optimizer": "lbfgs", "max_iter": 100}, "label_free": {"steps": 200, "lam": 1e-3},
               "sparse_cbm": {"epochs": 150}, "posthoc": {"lam": 1e-3}, "posthoc_hybrid": {"lam": 1e-3},
               "knobo": {"min_val": 2, "lr": 1e-2, "epochs": 100},
               "v2c": {"optimizer": "lbfgs", "max_iter": 100, "n_images": 40, "top_k": 3, "per_class": 6},
               "dn_cbm": {"epochs": 100, "lr": 1e-2, "lam": 0.1}, "cbm": {},
               "ecbm": {"hidden": 32, "epochs": 60}, "motif": {"epochs": 30}}


def make_problem(n_per_class=30, seed=0, noise=0.6):
    """(train, val, test, context) of the 3-concepts-per-class toy (see the module docstring).
    The concepts are the same for every seed; `seed` draws the images."""
    from ..discovery import SparseAutoencoder
    from ..features import FeatureBundle
    from ..methods import Context, DiscoveryInputs

    fixed = np.random.default_rng(1234)
    rng = np.random.default_rng(seed)
    concepts = fixed.normal(size=(K, D))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    prior = np.zeros((M, K), np.float32)
    for c in range(M):
        prior[c, 3 * c : 3 * c + 3] = 1
    proj = fixed.normal(size=(D, F))

    def bundle(n):
        labels = np.repeat(np.arange(M), n)
        emb = prior[labels] @ concepts + noise * rng.normal(size=(len(labels), D))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return FeatureBundle([str(i) for i in range(len(labels))], labels, CLASSES,
                             emb.astype(np.float32), (emb @ proj).astype(np.float32), "toy")

    class_emb = prior @ concepts
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    train, val, test = bundle(n_per_class), bundle(10), bundle(25)
    # drawn after the splits, so they are unchanged: what methods that discover their concepts read:
    # an unlabelled pool, a codebook and an SAE whose latents are the concept vectors (named by a
    # word list of the concept texts)
    sae = SparseAutoencoder(np.zeros(D), concepts, np.zeros(K), concepts.T, np.ones(K),
                            {"backbone_id": "toy", "input": "normalised"})
    discovery = DiscoveryInputs(pool_embedding=bundle(50).embedding,
                                codebook_texts=tuple(f"word {i}" for i in range(K)),
                                codebook_embedding=concepts.astype(np.float32),
                                words=tuple(f"concept {i}" for i in range(K)),
                                word_embedding=concepts.astype(np.float32), sae=sae)
    ctx = Context(CLASSES, [f"concept {i}" for i in range(K)], concepts.astype(np.float32),
                  prior, class_emb.astype(np.float32), "toy", discovery=discovery,
                  class_truth=prior.astype(np.float64))  # annotated truth = the prior (cbm, ecbm)
    return train, val, test, ctx


def toy_bundles(seed=0, n=60, k=3, d=6):
    """(train, test) FeatureBundles of k Gaussian classes ("a", "b", "c") in d dimensions,
    L2-normalised embeddings, no features."""
    from ..features import FeatureBundle

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = rng.normal(size=(k, d))
    x = centres[labels] + 0.7 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    b = FeatureBundle([f"i{i}" for i in range(n)], labels, ("a", "b", "c"), x.astype("float32"), None, "t")
    return b.rows(range(0, n, 2)), b.rows(range(1, n, 2))


def write_png(path: Path, rgb: tuple[int, int, int], size=(12, 10)) -> Path:
    """A plain-colour PNG at `path` (folders made)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


# class-level annotations of tiny_run_setup's classes (cat, dog, fox) and concept words, matched by
# normalised text ('Fur' matches 'fur'); 'wings' matches no concept and the concept 'ears' is absent
ATTRIBUTES = {"Fur": [1, 1, 0], "tail": [1, 0, 1], "whiskers": [1, 0, None], "paws": [0, 1, 1],
              "snout": [0, 1, 1], "stripes": [0, 0, 1], "spots": [1, 0, 1], "claws": [0, 1, 0],
              "wings": [0, 0, 0]}  # (cat, dog, fox); 'ears' is not annotated


def attribute_csv(tmp_path, labels: dict | None = None, classes=("cat", "dog", "fox")) -> Path:
    """`labels` (default ATTRIBUTES: concept -> one 1 / 0 / None per class) written as a class-level
    annotations CSV in tmp_path."""
    from ..annotations import ConceptAnnotations

    labels = ATTRIBUTES if labels is None else labels
    values = np.array([[np.nan if v is None else v for v in row] for row in labels.values()]).T
    ann = ConceptAnnotations("class", tuple(labels), values, classes=tuple(classes))
    return ann.to_csv(Path(tmp_path) / "attributes.csv")


def tiny_run_setup(tmp_path, monkeypatch, classes=("cat", "dog", "fox"), per_class=12):
    """An image folder, a concept file and the TinyBackbone standing in for the offline one;
    returns a function making a RunConfig for it (text-only filters stubbed: they load the
    sentence encoder, which these tests do not need). `monkeypatch`: pytest's fixture."""
    import conceptlens.backbones
    import conceptlens.runs.stages as stages

    from ..concepts.pipeline import FilterResult
    from ..runs.config import ConceptConfig, DataConfig, FewShotConfig, RunConfig
    from .backbones import TinyBackbone

    tmp_path = Path(tmp_path)
    root = tmp_path / "images"
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", (80 * c + 3 * i, 200 - 60 * c, 7 * i))
    concepts = tmp_path / "class2concepts.json"
    words = ["fur", "tail", "whiskers", "paws", "snout", "ears", "stripes", "spots", "claws"]
    concepts.write_text(json.dumps({name: [*words[3 * c: 3 * c + 3], words[(3 * c + 4) % 9]]
                                    for c, name in enumerate(classes)}))
    monkeypatch.setattr(conceptlens.backbones, "get_backbone", lambda spec: TinyBackbone())
    monkeypatch.setattr(stages, "run_filters", lambda c, *a, **k: FilterResult(c))

    def make(methods=None, **changes):
        cfg = RunConfig(data=DataConfig(str(root), 6, 0, 0, 0),
                        concepts=ConceptConfig([], str(concepts), True, 0.2, 2, "submodular", 0.1),
                        methods=methods or {"zero_shot": {}, "linear_probe": {}},
                        fewshot=FewShotConfig(), nec=2, output_dir=str(tmp_path / "out"),
                        cache_dir=str(tmp_path / "cache"), progress=False)
        for k, v in changes.items():
            setattr(cfg, k, v)
        return cfg

    return make


def spy_run(monkeypatch) -> dict:
    """Capture a run's context and bundles (runs.experiment.fit_and_evaluate's arguments): the
    returned dict gets "context", "train" and "test" once a run has fitted."""
    import conceptlens.runs.experiment as experiment

    seen = {}
    real = experiment.fit_and_evaluate

    def spy(methods, train, val, test, context, *a, **k):
        seen.setdefault("context", context)
        seen.setdefault("test", test)
        seen.setdefault("train", train)
        return real(methods, train, val, test, context, *a, **k)

    monkeypatch.setattr(experiment, "fit_and_evaluate", spy)
    return seen


SERVICE_CLASSES = ("cat", "dog", "red fox")
SERVICE_CONCEPTS = ["reddish fur", "green grass", "blue sky", "stripes", "pointed ears"]


def decode_png(path: Path) -> np.ndarray:
    """The reference decode: plain PIL, independent of the service's decoder."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def service_model(root: Path) -> tuple[Path, Path]:
    """(model folder, images folder) under `root`: 3 classes (SERVICE_CLASSES) x 5 noisy 16x16
    colour squares, a PCBM-h over SERVICE_CONCEPTS (it has a residual, so the contributions alone
    do not make the logit) fitted on TinyBackbone and saved."""
    from PIL import Image

    from ..features import FeatureBundle
    from ..methods import Context, get_method
    from .backbones import TinyBackbone

    root = Path(root)
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for c, name in enumerate(SERVICE_CLASSES):
        for i in range(5):
            base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][c])
            pixels = np.clip(base + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            path = root / "images" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            paths.append(path)
            labels.append(c)
    backbone = TinyBackbone()
    out = backbone.encode_images([decode_png(p) for p in paths])
    train = FeatureBundle([str(p) for p in paths], np.array(labels), SERVICE_CLASSES, out["embedding"],
                          out["features"], backbone.id, embedding_norm=out["embedding_norm"])
    ctx = Context(SERVICE_CLASSES, SERVICE_CONCEPTS, backbone.encode_texts(SERVICE_CONCEPTS),
                  class_embedding=backbone.encode_texts(list(SERVICE_CLASSES)), backbone_id=backbone.id,
                  preprocess_id=backbone.preprocess_id)
    get_method("posthoc_hybrid", lam=1e-3).fit(train, ctx).save(root / "model")
    return root / "model", root / "images"

# ATTRIBUTES and 'ears', for methods trained on concept labels (cbm refuses a concept without any
# known label)
CONCEPT_LABELS = ATTRIBUTES | {"ears": [0, 1, None]}
