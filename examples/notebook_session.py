"""A notebook user's session with the public API, each step one import from `conceptlens`:
features, a concept set and its Context, fit, evaluate, explain, intervene, edit, save and load.

It runs on conceptlens.testing's tiny stand-ins so that it takes seconds; with real images, swap
in `cl.load_dataset("my_images/")`, `cl.get_backbone("offline")` and `cl.encode_dataset(...)`.
"""

import tempfile
from pathlib import Path

import conceptlens as cl
from conceptlens.testing import TinyBackbone, make_problem

# a concept set and the Context every fit takes, embedded by a backbone
backbone = TinyBackbone()
ctx = cl.make_context(backbone, ["cat", "dog"], {"cat": ["whiskers", "pointed ears"], "dog": ["snout"]},
                      cache_dir="conceptlens-cache")  # text embeddings cached here
print("concepts:", ctx.concepts, "class prior:", ctx.class_prior.tolist())

# precomputed toy features (FeatureBundles) with their own Context
train, val, test, toy = make_problem()
model = cl.get_method("label_free", steps=100, lam=1e-3).fit(train, toy, val)
metrics = cl.evaluate(model, test)
print("top-1:", round(metrics["top1"], 3), "NEC:", round(model.nec_, 1))

why = cl.explain_image(model, test, 0)  # the concepts behind the first test image's prediction
print("predicted:", why["predicted"], "top concepts:", [c.concept for c in why["top"][:3]])

# a test-time intervention: the first concept set to its mean activation on every test image
activations, logits = cl.intervene_concepts(model, test, concepts=[model.concepts_[0]], strategy="mean")
print("intervened:", activations.shape, "predictions changed:", int((logits.argmax(1) != model.predict(test)).sum()))

edited = cl.edit_model(model, remove=[model.concepts_[0]])  # a global edit, logged
with tempfile.TemporaryDirectory() as tmp:
    folder = edited.save(Path(tmp) / "edited")
    print("reloaded:", cl.load_model(folder).concepts_[:3], "edits:", len(cl.load_model(folder).edit_log_))
