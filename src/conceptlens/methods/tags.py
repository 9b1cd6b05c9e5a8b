"""What a method declares about itself, in scikit-learn's manner (`__sklearn_tags__`): one
`MethodTags` record per class, read by the runs, the evaluation, the explanations, the report and
the CLI instead of scattered class flags or the method's name.

A method declares its tags as a class attribute built from its parent's:

    class MyMethod(Method):
        tags = replace(Method.tags, uses_validation=True, requires=("concepts", "concept_embedding",
                                                                     "class_embedding"))

and `get_tags(model_or_class)` reads them. `Method.fit` checks `requires` (every Context field
named there must be given, else a ConfigError naming the method and the field), and the contract
suite (`conceptlens.testing.check_method`) checks that each tag matches what the method does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["CONTEXT_FIELD_HINTS", "DISCOVERY_NEEDS", "MethodTags", "get_tags", "missing_context", "replace"]

# what each DiscoveryInputs group is (runs/discovery.py builds only the groups a run's methods name)
DISCOVERY_NEEDS = ("pool", "words", "sae", "codebook")

# how a run fills each Context field: the hint in the error of a method that requires it
CONTEXT_FIELD_HINTS = {
    "concepts": "the concept texts; a run takes them from [concepts]",
    "concept_embedding": "the concepts' text embeddings; a run encodes them with the backbone",
    "class_prior": "which concepts were generated for which class; a concept source gives it",
    "class_embedding": "the class prompt embeddings; build the context with the backbone's class prompts",
    "concept_norm": "the raw norms of the concept text embeddings",
    "class_truth": "the annotated truth of each concept per class; a run reads it from [grounding]",
    "concept_truth_by_id": "per-image concept labels; a run reads them from [grounding]",
    "discovery": "the unlabelled pool, words and models a method discovers concepts from; a run fills it "
                 "from [discovery]",
}


@dataclass(frozen=True)
class MethodTags:
    """A method's declared abilities and needs (see the module docstring)."""

    # Context fields `fit` cannot do without (checked by Method.fit before any work)
    requires: tuple[str, ...] = ("concepts", "concept_embedding")
    # has a concept layer whose concepts come from the run (or, with discovers_concepts, its own):
    # NEC, grounding and the concept report measure it; False for baselines (linear_probe, zero_shot)
    needs_concepts: bool = True
    # trains on concept labels (class_truth / concept_truth_by_id): a run gives it annotations
    concept_labelled: bool = False
    # finds its own concepts in fit (context.discovery); discovery_needs names the DiscoveryInputs
    # groups it reads (DISCOVERY_NEEDS)
    discovers_concepts: bool = False
    discovery_needs: tuple[str, ...] = ()
    # the image input it reads by default: "embedding" (text space) or "features" (backbone)
    input: str = "embedding"
    # takes videos (features.video_encode.VideoFeatures) and has `video_sampling()`
    takes_video: bool = False
    # a sparse final layer refittable at a `target_nec` constructor parameter
    refit_at_nec: bool = False
    # fit reads `val` (model selection, early stopping)
    uses_validation: bool = False
    # each concept's detector is trained on the concept's class links, so evidence on held-out images
    # shows that the detectors generalise, not that each concept is visible (the truth check says so)
    grounds_from_links: bool = False
    # has its own concept intervention (methods.protocols.Intervenable: `intervene_concepts`)
    intervenable: bool = False
    # has an exact torch forward for input attributions (methods.protocols.TorchForward:
    # `torch_forward()`); others are probed as affine maps by explain/attribution.py
    differentiable: bool = False

    def __post_init__(self):
        unknown = set(self.discovery_needs) - set(DISCOVERY_NEEDS)
        if unknown:
            raise ValueError(f"discovery_needs {sorted(unknown)} are unknown; known: "
                             f"{', '.join(DISCOVERY_NEEDS)}.")
        if self.input not in ("embedding", "features"):
            raise ValueError(f"input must be 'embedding' or 'features'; got {self.input!r}.")
        bad = [f for f in self.requires if f not in CONTEXT_FIELD_HINTS]
        if bad:
            raise ValueError(f"requires names no Context field: {bad}; known: "
                             f"{', '.join(CONTEXT_FIELD_HINTS)}.")


TAG_NAMES = tuple(f.name for f in fields(MethodTags))
# the class flags the tags replace (Method keeps read-only views of them under these names)
LEGACY_FLAGS = ("needs_concepts", "refit_at_nec", "uses_validation", "discovers_concepts", "discovery_needs",
                "concept_labelled", "grounds_from_links")


def get_tags(obj) -> MethodTags:
    """The tags of a method class or instance. An object that declares none (a stand-in in a test,
    an old subclass) is read from attributes of the tag names, defaults for the rest."""
    tags = getattr(obj, "tags", None)
    if isinstance(tags, MethodTags):
        # an old flag set on the class after it was made (a test's monkeypatch) still counts
        cls = obj if isinstance(obj, type) else type(obj)
        late = {}
        for n in LEGACY_FLAGS:
            v = next((k.__dict__[n] for k in cls.__mro__ if n in k.__dict__), None)
            if isinstance(v, bool | tuple):
                late[n] = v
        return replace(tags, **late) if late else tags
    return MethodTags(**{n: getattr(obj, n) for n in TAG_NAMES if hasattr(obj, n)})


def _empty(v) -> bool:
    if v is None:
        return True
    try:
        return len(v) == 0
    except TypeError:
        return False


def missing_context(tags: MethodTags, context) -> list[str]:
    """The Context fields `tags.requires` names that `context` lacks (None or empty)."""
    return [f for f in tags.requires if _empty(getattr(context, f, None))]
