"""The concept stages wired to a backbone and a dataset (what the CLI calls)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backbones import Backbone
from ..backbones.text_encoder import cached_sentences
from ..errors import DataError
from ..features import FeatureBundle, encode_texts
from .blocklist import Blocklist, blocked
from .conceptset import ConceptSet
from .filters import (
    SOURCE_MAX_CHARS,
    Dropped,
    TextSimilarity,
    filter_activation,
    filter_class_similarity,
    filter_duplicates,
    filter_length,
)
from .importers import import_concepts
from .selection import Selection, select_concepts
from .sources.options import make_source

log = logging.getLogger("conceptlens")


def label_free_similarity(backbone: Backbone, cache=None, sentence_weight: float = 1.0,
                          backbone_weight: float = 3.0) -> TextSimilarity:
    """Label-free CBM's text similarity: sentence encoder and backbone text tower, 1:3 (both
    cached under the feature cache root `cache`)."""
    return TextSimilarity([(lambda t: cached_sentences(t, cache), sentence_weight),
                           (lambda t: encode_texts(backbone, t, cache), backbone_weight)])


@dataclass
class FilterResult:
    concepts: ConceptSet
    dropped: list[Dropped] = field(default_factory=list)

    def report(self) -> str:
        by = {}
        for d in self.dropped:
            by.setdefault(d.filter, []).append(d)
        lines = [f"kept {len(self.concepts)} concepts; dropped {len(self.dropped)}"]
        for name, items in by.items():
            lines.append(f"  {name}: {len(items)} (e.g. {items[0].text!r}: {items[0].detail})")
        return "\n".join(lines)


def align_classes(concepts: ConceptSet, dataset_classes: Sequence[str]) -> list[str]:
    """The concept set's class names in the dataset's order; an error names any mismatch.

    A dataset class the set does not name is fine when the set has global concepts (tied to
    no class, e.g. an imported Label-free CBM list): it keeps the dataset's spelling."""
    by_key = {c.casefold(): c for c in concepts.classes}
    missing = [c for c in dataset_classes if c.casefold() not in by_key]
    if missing and not any(not c.classes for c in concepts):
        raise DataError(f"Dataset classes without concepts in the concept set: {missing[:10]}. "
                        f"The concept set has: {concepts.classes[:10]}. Make the concept file's class "
                        "names match the dataset's (case is ignored), or add global concepts (tied to no "
                        "class) with a [concepts] global_budget.")
    return [by_key.get(c.casefold(), c) for c in dataset_classes]


def with_classes(concepts: ConceptSet, classes: Sequence[str]) -> ConceptSet:
    """`concepts` naming every one of `classes` too (a global-only set names none)."""
    missing = [c for c in classes if c not in concepts.classes]
    return ConceptSet([*concepts.classes, *missing], concepts.concepts) if missing else concepts


def run_filters(concepts: ConceptSet, backbone: Backbone, classes: Sequence[str],
                train: FeatureBundle | None = None, max_chars: int = 30,
                class_cutoff: float = 0.85, duplicate_cutoff: float = 0.9,
                activation_cutoff: float = 0.25, activation_quantile: float | None = None,
                cache=None, source_max_chars: Mapping[str, int | None] | None = None) -> FilterResult:
    """Label-free CBM's filters in its order. `source_max_chars` (default SOURCE_MAX_CHARS:
    longer whole phrases for wordnet/imagenet, none for annotated attributes; {} = the
    reference's single `max_chars` for every concept) sets the length cap per source."""
    sim = label_free_similarity(backbone, cache)
    dropped: list[Dropped] = []
    caps = SOURCE_MAX_CHARS if source_max_chars is None else source_max_chars
    concepts, d = filter_length(concepts, max_chars, caps)
    dropped += d
    concepts, d = filter_class_similarity(concepts, list(classes), sim, class_cutoff)
    dropped += d
    concepts, d = filter_duplicates(concepts, sim, duplicate_cutoff)
    dropped += d
    if train is not None and len(concepts):
        emb = encode_texts(backbone, concepts.texts, cache)
        concepts, d = filter_activation(concepts, train.embedding, emb, activation_cutoff,
                                        quantile=activation_quantile)
        dropped += d
    return FilterResult(concepts, dropped)


def run_selection(concepts: ConceptSet, backbone: Backbone, train: FeatureBundle,
                  cache=None, **options) -> Selection:
    """Select from `concepts` on the training images (MI); `options` go to select_concepts
    (per_class, method, lam, global_budget, ...). The result names every dataset class."""
    classes = align_classes(concepts, train.classes)
    concepts = with_classes(concepts, classes)
    emb = encode_texts(backbone, concepts.texts, cache)
    sel = select_concepts(concepts, emb, train.embedding, np.asarray(train.labels), classes, **options)
    log.info("concept selection: %s", sel.report())
    return sel


def build_candidates(concepts_cfg, classes: Sequence[str]) -> ConceptSet:
    """The run's candidate concepts from [concepts] (`runs.config.ConceptConfig`): every source
    with its options ([concepts.sources.<name>] tables), then [concepts] file when no `file`
    source already reads it. A class a source could not resolve is logged."""
    out = ConceptSet(list(classes))
    options = concepts_cfg.source_options()
    for name, opts in options.items():
        result = make_source(name, opts, concepts_cfg.file).generate(list(classes))
        if result.unresolved:
            log.warning("[%s] no concepts for: %s", name, ", ".join(result.unresolved))
        out = out.merge(result.concepts)
    if concepts_cfg.file and not ("file" in options and not options["file"].get("path")):
        out = out.merge(import_concepts(concepts_cfg.file)[0])
    blocklist = Blocklist(getattr(concepts_cfg, "block_words", ()), getattr(concepts_cfg, "allow_words", ()))
    return drop_blocked(out, blocklist)


def drop_blocked(concepts: ConceptSet, blocklist: Blocklist | None = None) -> ConceptSet:
    """The concepts without blocked texts (concepts/blocklist.py); what was dropped is logged."""
    dropped = [(c.text, why) for c in concepts if (why := blocked(c.text, blocklist))]
    if not dropped:
        return concepts
    log.warning("%d concept(s) left out by the blocklist: %s", len(dropped),
                "; ".join(f"{t!r}: {why}" for t, why in dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
    bad = {t for t, _ in dropped}
    return concepts.subset([i for i, c in enumerate(concepts) if c.text not in bad])


WORD_ASSOCIATIONS = (
    "No concept is linked to any class: the {n} concepts are word associations ({sources}), not "
    "evidence. A model's weights say which words' scores it uses, not why an image is its class, so its "
    "explanations are no reasons (and no truth check can pass). For reasons, give concepts written for "
    "the classes (an LLM, WordNet, a file of class,concept rows) or concept annotations.")


def link_warning(concepts: ConceptSet) -> str | None:
    """The warning that the concepts are word associations: none is linked to a class (the
    'vocabulary' source, a plain word list); None when some concept is linked."""
    if not len(concepts) or any(c.classes for c in concepts):
        return None
    sources = sorted({str(p.get("source", "?")) for c in concepts for p in c.provenance} or {"unknown source"})
    return WORD_ASSOCIATIONS.format(n=len(concepts), sources=", ".join(sources))


def separability_warning(concepts: ConceptSet, classes: Sequence[str] | None = None,
                         limit: int = 5) -> str | None:
    """A warning when the selected concepts cannot tell some classes apart by what they are
    tied to: groups of classes whose concept lists are identical (and with no global concept
    to help). None when every class has concepts of its own.

    On digits WordNet gives 'digit', 'integer', 'measure' for ten classes: a concept bottleneck
    then has only what those few words say to separate them."""
    classes = list(classes or concepts.classes)
    if any(not c.classes for c in concepts):
        return None  # global concepts are shared by design and may separate any class
    by_set: dict[frozenset, list[str]] = {}
    for cls in classes:
        key = frozenset(concepts.for_class(cls)) if cls in concepts.classes else frozenset()
        by_set.setdefault(key, []).append(cls)
    groups = sorted((g for g in by_set.values() if len(g) > 1), key=len, reverse=True)
    if not groups:
        return None
    lines = []
    for g in groups[:limit]:
        idx = concepts.for_class(g[0]) if g[0] in concepts.classes else []
        texts = [concepts.concepts[i].text for i in idx]
        said = (f"the same {len(texts)} concept(s): {', '.join(map(repr, texts[:6]))}"
                f"{' ...' if len(texts) > 6 else ''}" if texts else "no concept at all")
        lines.append(f"  {', '.join(map(repr, g))} have {said}")
    more = f"\n  ... and {len(groups) - limit} more group(s)" if len(groups) > limit else ""
    return ("The concepts cannot separate these classes (each group shares all its concepts):\n"
            + "\n".join(lines) + more + "\nThe sources describe the class names, which say little here. "
            "Use concepts that do not depend on class names: a method that discovers its own concepts "
            "from the images ([methods.dn_cbm] or [methods.v2c]), the 'vocabulary' source (global "
            "concepts, kept by [concepts] global_budget), or your own concept file "
            "([concepts.sources.file] path = ...).")
