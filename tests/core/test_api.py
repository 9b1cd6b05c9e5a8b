"""The public API at the package root: lazy, complete, and enough for a notebook session."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import conceptlens as cl
from conceptlens.testing import TinyBackbone, make_problem


def test_import_is_lazy_and_every_public_name_resolves():
    code = "import sys, conceptlens; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    for name in cl.__all__:
        assert getattr(cl, name) is not None
    assert set(cl.__all__) <= set(dir(cl))


def test_make_context_then_fit_evaluate_explain_edit_save_load(tmp_path):
    train, _, test, toy = make_problem()
    backbone = TinyBackbone()
    ctx = cl.make_context(backbone, ["a", "b"], {"a": ["red fur", "long tail"], "b": ["blue sky"]},
                          cache_dir=tmp_path / "cache")
    assert ctx.concepts == ["red fur", "long tail", "blue sky"] and ctx.concept_embedding.shape[0] == 3
    assert ctx.class_prior.tolist() == [[1, 1, 0], [0, 0, 1]] and ctx.backbone_id == backbone.id
    model = cl.get_method("posthoc", lam=1e-3).fit(train, toy)
    assert cl.evaluate(model, test)["top1"] > 0.5
    assert cl.explain_image(model, test, 0)
    edited = cl.edit_model(model, remove=[model.concepts_[0]])
    loaded = cl.load_model(model.save(tmp_path / "m"))
    assert np.allclose(loaded.decision_function(test), model.decision_function(test), atol=1e-6)
    assert edited.concepts_ == model.concepts_
