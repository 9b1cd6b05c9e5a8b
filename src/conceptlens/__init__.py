"""conceptlens: interpretable image classifiers (concept bottleneck models) from a
vision-language model and a list of class names.

The public API, one import each (loaded lazily: `import conceptlens` imports nothing heavy)::

    import conceptlens as cl

    data = cl.load_dataset("fashion-mnist")                # dataset: a folder, a manifest, built-ins
    backbone = cl.get_backbone("offline")                  # backbone: offline, hf:, open_clip:, precomputed:
    train = cl.encode_dataset(backbone, data.subset(range(200)))   # image embeddings (a FeatureBundle)
    ctx = cl.make_context(backbone, data.classes, {"Sneaker": ["laces", "rubber sole"], ...})  # concepts
    model = cl.get_method("label_free", lam=1e-3).fit(train, ctx)   # methods, fit
    cl.evaluate(model, test)                               # evaluate: top-1, ECE, NEC, ...
    cl.explain_image(model, test, 0)                       # explain one image
    cl.intervene_concepts(model, test, concepts=["short sleeves"])  # intervene at test time
    edited = cl.edit_model(model, remove=["short sleeves"])  # edit
    model.save("my_model"); cl.load_model("my_model")      # save / load
    cl.run_experiment(cl.load_config("run.toml"))          # a whole recorded run, with report.html

On precomputed embeddings, any method is a scikit-learn classifier:
`cl.ConceptBottleneckClassifier("label_free", concept_embeddings=C, concepts=texts).fit(X, y)`
(`conceptlens.sklearn`). See docs/guides/python-api.md.
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import ConceptLensError, ConfigError, DataError, NotFittedError

# public name -> the module that defines it (imported on first use)
_LAZY = {
    # data
    "load_dataset": "conceptlens.data", "ImageDataset": "conceptlens.data", "few_shot": "conceptlens.data",
    # backbones
    "get_backbone": "conceptlens.backbones", "open_backbone": "conceptlens.backbones",
    "Backbone": "conceptlens.backbones",
    # features
    "encode_dataset": "conceptlens.features", "encode_texts": "conceptlens.features",
    "FeatureBundle": "conceptlens.features",
    # concepts
    "ConceptSet": "conceptlens.concepts", "Concept": "conceptlens.concepts",
    "import_concepts": "conceptlens.concepts", "select_concepts": "conceptlens.concepts",
    # methods
    "Context": "conceptlens.methods", "Method": "conceptlens.methods", "get_method": "conceptlens.methods",
    "METHODS": "conceptlens.methods",
    # evaluation, explain, intervene, edit
    "evaluate": "conceptlens.evaluation", "accuracy_at_nec": "conceptlens.evaluation",
    "explain_image": "conceptlens.explain", "contributions": "conceptlens.explain",
    "top_images": "conceptlens.explain", "class_weights": "conceptlens.explain",
    # (not "intervene": importing the subpackage conceptlens.intervene would rebind that name)
    "intervene_concepts": ("conceptlens.intervene", "intervene"), "edit_model": "conceptlens.intervene",
    # runs and the report
    "RunConfig": "conceptlens.runs", "load_config": "conceptlens.runs", "run_experiment": "conceptlens.runs",
    "write_report": "conceptlens.report", "build_report": "conceptlens.report",
    # scikit-learn
    "ConceptBottleneckClassifier": "conceptlens.sklearn",
    # the notebook estimator on images
    "ImageConceptClassifier": "conceptlens.api", "as_dataset": "conceptlens.api",
}


def make_context(backbone, classes, concepts=None, cache_dir=None):
    """The `Context` (language side) every `fit` takes, built as a run builds it: class prompts and
    concept texts embedded by `backbone` (a Backbone or a spec such as "offline"), the class prior
    from which class each concept was given for. `concepts`: a ConceptSet, a list of texts (tied to
    no class), or a dict class -> list of texts. `cache_dir`: the text-embedding cache (None: the
    user cache). A Context can also be built directly: `Context(classes, texts, embeddings)`."""
    from .backbones import get_backbone
    from .concepts import ConceptSet
    from .runs.experiment import build_context

    if isinstance(backbone, str):
        backbone = get_backbone(backbone)
    classes = tuple(classes)
    if concepts is not None:
        concepts = ConceptSet.from_user(concepts, classes)
    return build_context(backbone, classes, concepts, cache_dir)


def load_model(folder):
    """A saved model folder (`Method.save`): `conceptlens.methods.Method.load`."""
    from .methods import Method

    return Method.load(folder)


__all__ = ["ConceptLensError", "ConfigError", "DataError", "NotFittedError", "__version__", "load_model", "make_context",
           *sorted(_LAZY)]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conceptlens' has no attribute {name!r}")
    module, attr = module if isinstance(module, tuple) else (module, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later reads skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
