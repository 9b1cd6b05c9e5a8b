"""The contract suites (conceptlens.testing) over every registered method, backbone and concept
source, and over a throwaway method registered here: adding an entry to a registry gets it
checked with no edit to the tests."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conceptlens.backbones import BACKBONES, get_backbone
from conceptlens.concepts.sources import SOURCES, get_source
from conceptlens.errors import ConfigError
from conceptlens.methods import METHODS, Context, Method
from conceptlens.methods.tags import MethodTags
from conceptlens.testing import (
    TinyBackbone,
    check_backbone,
    check_method,
    check_source,
    make_problem,
    save_tiny_hf,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SRC = Path(__file__).resolve().parents[2] / "src" / "conceptlens"


@pytest.fixture(scope="module")
def problem():
    return make_problem()


# -- methods -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_meets_the_contract(name, problem):
    check_method(name, problem=problem)


class Nearest(Method):
    """A throwaway method, as docs/contributing.md writes one: concept activations are cosines to
    the concept embeddings, each class weighs its class-prior concepts by their mean activation."""

    tags = replace(Method.tags, requires=("concepts", "concept_embedding", "class_prior"))
    _arrays = ("class_weights_", "intercept_", "concept_embedding_")

    def __init__(self, scale: float = 10.0):
        self.scale = scale

    def _validate(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float) or not self.scale > 0:
            raise ConfigError(f"{self.name}: scale must be a positive number; got {self.scale!r}.")

    def _fit(self, train, context, val) -> None:
        self.concepts_ = list(context.concepts)
        self.concept_embedding_ = np.asarray(context.concept_embedding, np.float32)
        A = self.transform(train)
        prior = context.class_prior.astype(np.float32)  # (classes, concepts) 0/1: required
        means = np.stack([A[train.labels == c].mean(0) for c in range(len(self.classes_))])
        self.class_weights_ = (self.scale * prior * means).astype(np.float32)
        self.intercept_ = np.zeros(len(self.classes_), np.float32)

    def transform(self, bundle) -> np.ndarray:
        self.check_fitted()
        return self._x(bundle) @ self.concept_embedding_.T


def test_a_method_registered_in_a_test_meets_the_contract(problem):
    with METHODS.registered("nearest_throwaway", Nearest):
        assert "nearest_throwaway" in METHODS.names()
        check_method("nearest_throwaway", problem=problem)
        # (the lead adds the generated invalid-parameter checks of conceptlens.testing.params here)
    assert "nearest_throwaway" not in METHODS


def test_the_contract_catches_a_tag_that_lies(problem):
    """A required field that is not required, and a method that reads val without saying so."""
    class Lying(Nearest):
        tags = replace(Nearest.tags, requires=(*Nearest.tags.requires, "class_embedding"))

    with METHODS.registered("lying_throwaway", Lying), \
            pytest.raises(AssertionError, match="context.class_embedding, but fit works without it"):
        check_method("lying_throwaway", problem=problem)

    class PeeksAtVal(Nearest):
        def _fit(self, train, context, val):
            super()._fit(train, context, val)
            shift = 0.0 if val is None else 1e-3 * np.arange(len(self.classes_))
            self.intercept_ = self.intercept_ + shift

    with METHODS.registered("peeks_throwaway", PeeksAtVal), \
            pytest.raises(AssertionError, match="declare uses_validation=True"):
        check_method("peeks_throwaway", problem=problem)


def test_registered_contextmanager_and_unregister():
    with METHODS.registered("tmp_throwaway", Nearest), pytest.raises(ConfigError, match="registered twice"):
        METHODS.register("tmp_throwaway")(Nearest)
    assert "tmp_throwaway" not in METHODS
    METHODS.register("tmp_throwaway")(Nearest)
    assert METHODS.unregister("tmp_throwaway") is Nearest and "tmp_throwaway" not in METHODS
    with pytest.raises(ConfigError, match="Unknown method"):
        METHODS.unregister("tmp_throwaway")


def test_fit_names_the_method_and_the_missing_context_field(problem):
    train, val, _, ctx = problem
    with METHODS.registered("nearest_throwaway", Nearest), \
            pytest.raises(ConfigError, match=r"nearest_throwaway needs context\.class_prior"):
        Nearest().fit(train, replace(ctx, class_prior=None), val)


def test_tags_are_declared_and_old_flag_names_read_them():
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert isinstance(cls.tags, MethodTags), name
        for flag in ("needs_concepts", "refit_at_nec", "uses_validation", "discovers_concepts",
                     "discovery_needs", "concept_labelled"):
            assert getattr(cls, flag) == getattr(cls.tags, flag) == getattr(cls(), flag), (name, flag)
        assert cls.input == cls.tags.input, name
    with pytest.raises(ValueError, match="discovery_needs"):
        MethodTags(discovery_needs=("nope",))
    with pytest.raises(ValueError, match="no Context field"):
        MethodTags(requires=("nope",))


# -- no module above the methods knows a method by its name -------------------------------------

ABOVE_METHODS = ("explain", "report", "runs", "evaluation", "intervene", "grounding")


def _name_literals(path: Path, names: set[str]) -> list[str]:
    """Registered method names used as a whole string literal or compared with (docstrings and
    f-string text are not literals of a name)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    return [f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and id(node) not in docstrings and id(node) not in in_fstring]


def test_no_module_above_the_methods_branches_on_a_method_name():
    """explain/, report/, runs/, ... ask a method's tags or protocols (methods/tags.py,
    methods/protocols.py), never its registered name. Exceptions: the run config's documented
    default method list (runs/config.py) and the confounded task's named defaults."""
    names = set(METHODS.names())
    allowed = {"runs/config.py", "runs/confounded.py"}
    found = [hit for folder in ABOVE_METHODS for path in sorted((SRC / folder).rglob("*.py"))
             if str(path.relative_to(SRC)) not in allowed for hit in _name_literals(path, names)]
    assert not found, "method names used as literals (use tags / protocols):\n" + "\n".join(found)


# -- backbones -----------------------------------------------------------------------------------

def _precomputed(tmp_path: Path):
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(3)]
    np.savez(tmp_path / "f.npz", ids=np.array(ids), embedding=rng.normal(size=(3, 5)).astype(np.float32),
             texts=np.array(["a red crest", "striped fur", "x" * 300]),
             text_embedding=rng.normal(size=(3, 5)).astype(np.float32))
    return get_backbone(f"precomputed:{tmp_path / 'f.npz'}")


# how the contract builds a small instance of each registered backbone; None: why it cannot here
BACKBONE_EXAMPLES = {
    "offline": lambda tmp_path: get_backbone("offline"),
    "precomputed": _precomputed,
    "hf": lambda tmp_path: get_backbone(f"hf:{save_tiny_hf(tmp_path / 'clip', 'clip')}"),
    "open_clip": None,  # downloads weights: nothing can be fetched in the tests
}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_registered_backbone_meets_the_contract(name, tmp_path):
    assert name in BACKBONE_EXAMPLES, f"say how to build a small {name!r} in BACKBONE_EXAMPLES"
    if BACKBONE_EXAMPLES[name] is None:
        pytest.skip(f"{name}: no offline example here")
    backbone = BACKBONE_EXAMPLES[name](tmp_path)
    if name == "precomputed":  # it serves stored vectors by image id, not pixels: texts only
        from conceptlens.backbones import Backbone

        assert isinstance(backbone, Backbone) and backbone.id and backbone.embed_dim == 5
        text = backbone.encode_texts(["striped fur"])
        np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, rtol=1e-5)
        return
    check_backbone(backbone)


def test_the_tiny_backbone_meets_the_contract():
    check_backbone(TinyBackbone())


# -- concept sources -----------------------------------------------------------------------------

def _file_source(tmp_path: Path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"cat": ["whiskers", "fur"], "dog": ["fur", "a wagging tail"]}))
    return get_source("file", path=str(f))


SOURCE_EXAMPLES = {  # name -> (a small instance, the classes to ask for); None: why not here
    "file": (_file_source, ("cat", "dog")),
    "vocabulary": (lambda tmp_path: get_source("vocabulary", size=200), ()),
    "wordnet": (lambda tmp_path: get_source("wordnet"), ("cat", "Sneaker")),
    "imagenet": (lambda tmp_path: get_source("imagenet"), ("goldfish", "bear")),
    "fashion-mnist-attributes": (lambda tmp_path: get_source("fashion-mnist-attributes"),
                                 ("T-shirt/top", "Sneaker")),
    "llm": None,  # needs a chat server: tests/concepts/test_llm_source.py runs it against a loopback one
}


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_registered_source_meets_the_contract(name, tmp_path):
    assert name in SOURCE_EXAMPLES, f"say how to build a small {name!r} in SOURCE_EXAMPLES"
    if SOURCE_EXAMPLES[name] is None:
        pytest.skip(f"{name}: no offline example here")
    make, classes = SOURCE_EXAMPLES[name]
    check_source(make(tmp_path), classes)


def test_the_context_has_the_fields_tags_may_require():
    from conceptlens.methods.tags import CONTEXT_FIELD_HINTS

    assert set(CONTEXT_FIELD_HINTS) <= set(Context.__dataclass_fields__)
    assert re.fullmatch(r"[a-z_]+", "".join(CONTEXT_FIELD_HINTS))


def test_the_worked_example_in_the_contributing_guide_meets_the_contract(problem):
    """docs/contributing.md's example method, as written there (its imports made absolute)."""
    text = (SRC.parent.parent / "docs" / "contributing.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("from ..errors", "from conceptlens.errors")
    code = code.replace("from .base", "from conceptlens.methods.base")
    try:
        exec(compile(code, "docs/contributing.md", "exec"), {"__name__": "contributing_example"})
        check_method("nearest", problem=problem)
    finally:
        if "nearest" in METHODS:
            METHODS.unregister("nearest")


def test_every_module_of_the_methods_package_is_imported():
    """methods/__init__.py imports each module itself: a new method file needs no edit there."""
    import pkgutil
    import sys

    import conceptlens.methods as package

    modules = {f"conceptlens.methods.{m.name}" for m in pkgutil.iter_modules(package.__path__)}
    assert modules <= set(sys.modules)
    assert {METHODS.get(n).__module__ for n in METHODS.names()} <= modules
