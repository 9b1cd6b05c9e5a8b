"""The confounded-shift evaluation of a run (KnoBo's protocol, Yang et al. 2024): does a model
classify by the class, or by a nuisance tied to the class in training?

For each class pair (A, B) a binary task is built (data/confounded.py): a nuisance painted on
every image of A in train, val and the in-distribution (ID) test, and on every image of B in
the out-of-distribution (OOD) test. Every configured method is fitted on train (with val)
exactly as a run fits it, concepts included (built, filtered and selected per pair as a run
does, from that pair's training images), and scored on ID and OOD: ID top-1, OOD top-1,
gap = |ID - OOD|, average = (ID + OOD) / 2, in %, per pair and averaged over pairs
(evaluation/shift.py). The linear probe is one of the rows. Concept methods are also scored
after the built test-time improvement (intervene/test_time.py), edited with
`adapt_per_class` labelled images per class of the OOD domain drawn from items that are not
OOD test images.

Model selection: every method that selects (uses_validation) selects on a validation split
drawn like train (confounded like train), not on ID as KnoBo does, so our ID numbers are not
optimistic. The result records this.

Interface (called by runs/experiment.py; the stages it shares with a run are runs/stages.py's):
    ConfoundedConfig                    the [confounded] table (declared in runs/config.py with
                                        the other tables; re-exported here)
    parse_confounded(table) -> ConfoundedConfig
        check a [confounded] TOML table (a dict): unknown keys, types, ranges, the nuisance
        and its strength; ConfigError names the bad one. Class names are checked against the
        dataset when run_confounded starts (check_confounded_classes).
    validate_confounded(cfg) -> cfg     check a ConfoundedConfig built or edited in Python
    confounded_toml(cfg) -> str         the table as TOML, read back by parse_confounded
    run_confounded(cfg, run_cfg, data, backbone, cache, cache_root) -> dict
        cfg: ConfoundedConfig; run_cfg: the RunConfig (methods, concepts, batch_size,
        workers, progress, data.on_error); data: the loaded ImageDataset (all splits);
        backbone; cache: the image FeatureCache (features.encode.image_cache);
        cache_root: the feature cache root for texts, or None (as in run_experiment).
        Returns a JSON-serialisable dict: "results" {method: {"pairs": {pair: row},
        "mean": row}}, "test_time" {method: same} for concept methods (empty when
        adapt_per_class = 0), a row being {"id", "ood", "gap", "average"}; also "pairs",
        "sizes", "nuisance_effect", "concepts", "protocol", "seconds" and "table".
    confounded_table(result, per_pair=False) -> str    the Markdown table
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..concepts import ConceptSet
from ..data.confounded import check_pair, confounded_task, nuisance_tag, pair_name, with_nuisance
from ..evaluation.shift import KEYS, evaluate_shift, evaluate_test_time_shift, mean_shift
from ..features import encode_dataset
from .config import ConfoundedConfig, toml_text
from .stages import (
    build_candidates,
    build_context,
    concepts_from,
    fit_and_evaluate,
    text_filters,
    uses_run_concepts,
)
from .tables import DASH

log = logging.getLogger("conceptlens")
SELECTION_NOTE = ("models are selected on a validation split drawn like train (confounded like "
                  "train); KnoBo selects on the ID split, which makes its ID numbers optimistic")
EFFECT_ITEMS = 16  # images per pair encoded twice (with and without the nuisance)


__all__ = ["ConfoundedConfig", "check_confounded_classes", "confounded_table", "confounded_toml",
           "parse_confounded", "run_confounded", "validate_confounded"]


def parse_confounded(table: dict) -> ConfoundedConfig:
    """A checked ConfoundedConfig from a [confounded] table (see the module docstring)."""
    return ConfoundedConfig.from_table(table)


def validate_confounded(cfg: ConfoundedConfig) -> ConfoundedConfig:
    """Check a ConfoundedConfig built in Python; numbers are normalised in place."""
    return cfg.check()


def confounded_toml(cfg: ConfoundedConfig) -> str:
    """The [confounded] table (strength left out when it is the nuisance's default, None)."""
    return toml_text({"confounded": cfg.toml_values()})


def check_confounded_classes(cfg: ConfoundedConfig, data) -> None:
    """DataError naming the pair and the dataset's classes for a class the dataset lacks."""
    for x in cfg.pairs:
        check_pair(data, x)


def _embedding_distance(a, b) -> float:
    """Mean cosine distance between matching rows of two L2-normalised embeddings."""
    return float(np.mean(1.0 - np.sum(np.asarray(a) * np.asarray(b), axis=1)))


def nuisance_effect(part, train_bundle, cfg: ConfoundedConfig, encode) -> dict:
    """How far the backbone moves an image when the nuisance is painted on it ("shift", mean
    cosine distance over up to EFFECT_ITEMS clean training images), next to how far apart two
    images of the same class are ("within_class"). A shift of 0 means the backbone cannot see
    the nuisance (e.g. "invert" through the offline backbone's automatic inversion); None
    where under two clean images could be encoded. `encode`: ImageDataset -> FeatureBundle."""
    row = {i: r for r, i in enumerate(train_bundle.ids)}
    clean = [i for i in np.flatnonzero(part.labels == 1) if part.ids[i] in row][:EFFECT_ITEMS]
    if len(clean) < 2:
        return {"shift": None, "within_class": None, "items": len(clean)}
    edited = encode(with_nuisance(part, clean, cfg.nuisance, cfg.strength))
    before = train_bundle.embedding[[row[part.ids[i]] for i in clean]]
    after_row = {i: r for r, i in enumerate(edited.ids)}
    kept = [k for k, i in enumerate(clean) if edited.ids[k] in after_row]
    shift = _embedding_distance(before[kept], edited.embedding[[after_row[edited.ids[k]] for k in kept]])
    within = _embedding_distance(before, np.roll(before, 1, axis=0))
    return {"shift": shift, "within_class": within, "items": len(kept)}


def _blind(effect: dict) -> bool:
    return effect["shift"] is not None and effect["shift"] < 1e-6


def run_confounded(cfg: ConfoundedConfig, run_cfg, data, backbone, cache, cache_root, grounding=None,
                   discovery=None) -> dict:
    """Every method of `run_cfg` on every confounded pair (see the module docstring). `grounding`
    (the run's grounding.Grounding, or None) gives each pair's context its annotated class truth,
    which KnoBo's prior reads; `discovery` (the run's DiscoveryInputs, or None: they see no label,
    so every pair reuses them) reaches the methods that find their own concepts."""
    validate_confounded(cfg)
    check_confounded_classes(cfg, data)
    t0 = time.perf_counter()

    def encode(ds):
        return encode_dataset(backbone, ds, cache, batch_size=run_cfg.batch_size, workers=run_cfg.workers,
                              on_error=run_cfg.data.on_error, progress=run_cfg.progress)

    needs_concepts = uses_run_concepts(run_cfg.methods)
    results: dict[str, dict] = {}
    test_time: dict[str, dict] = {}
    sizes, effects, concepts, seconds = {}, {}, {}, {"encode": 0.0, "concepts": 0.0, "fit": 0.0}
    for pair in cfg.pairs:
        name = pair_name(pair)
        t = time.perf_counter()
        parts = confounded_task(data, tuple(pair), cfg.nuisance, cfg.train_per_class, cfg.val_per_class,
                                cfg.id_per_class, cfg.ood_per_class, cfg.seed, strength=cfg.strength,
                                n_adapt=cfg.adapt_per_class)
        bundles = {k: encode(v) for k, v in parts.items() if len(v)}
        effects[name] = nuisance_effect(parts["train"], bundles["train"], cfg, encode)
        if _blind(effects[name]):
            log.warning("[confounded] %s: the backbone does not see the %r nuisance (the same embedding "
                        "with and without it); ID and OOD will agree. Try another nuisance.", name,
                        cfg.nuisance)
        seconds["encode"] += time.perf_counter() - t
        sizes[name] = {k: len(b) for k, b in bundles.items()}
        train, val = bundles["train"], bundles.get("val")
        classes = tuple(pair)

        t = time.perf_counter()
        selected = None
        if needs_concepts:
            found = build_candidates(run_cfg, classes)
            # only the pair's own concepts: a concept file may hold every class's
            candidates = ConceptSet(classes)
            for c in found:
                if own := [x for x in c.classes if x in classes]:
                    candidates.add(c.text, own, c.provenance)
            texts = text_filters(run_cfg, candidates, backbone, classes, cache_root)
            selected = concepts_from(run_cfg, texts, backbone, train, cache_root, cfg.seed)[1]
            concepts[name] = selected.summary()
        context = build_context(backbone, classes, selected, cache_root,
                                grounding=None if grounding is None else grounding.for_classes(classes),
                                discovery=discovery)
        seconds["concepts"] += time.perf_counter() - t

        t = time.perf_counter()
        fitted, models = fit_and_evaluate(run_cfg.methods, train, val, bundles["id"], context, nec=0)
        for method, row in fitted.items():
            if "failed" in row:  # e.g. KnoBo with no concept it can ground for this pair
                results.setdefault(method, {"pairs": {}}).setdefault("failed", {})[name] = row["failed"]
        for method, model in models.items():
            results.setdefault(method, {"pairs": {}})["pairs"][name] = evaluate_shift(
                model, bundles["id"], bundles["ood"])
            if "adapt" in bundles:
                row = evaluate_test_time_shift(model, train, bundles["adapt"], bundles["id"], bundles["ood"])
                if row is not None:
                    test_time.setdefault(method, {"pairs": {}})["pairs"][name] = row
        seconds["fit"] += time.perf_counter() - t
    for rows in (*results.values(), *test_time.values()):
        # over the pairs where the method was fitted; the table names the pairs it failed on
        rows["mean"] = mean_shift(rows["pairs"].values()) if rows["pairs"] else None
    seconds["total"] = time.perf_counter() - t0
    out = {"protocol": cfg.to_dict() | {"nuisance_tag": nuisance_tag(cfg.nuisance, cfg.strength),
                                      "selection": SELECTION_NOTE},
           "pairs": [pair_name(x) for x in cfg.pairs], "sizes": sizes, "nuisance_effect": effects,
           "concepts": concepts, "results": results, "test_time": test_time, "seconds": seconds}
    out["table"] = confounded_table(out)
    return out


def _cells(row: dict) -> str:
    return " | ".join(f"{row[k]:.1f}" for k in KEYS)


def confounded_table(result: dict, per_pair: bool = False) -> str:
    """Markdown: method | ID | OOD | gap | average (top-1 %, mean over pairs; with `per_pair`,
    a row per method and pair), test-time rows as "<method> + test-time", and the protocol."""
    head = ["method", *(["pair"] if per_pair else []), "ID", "OOD", "gap", "average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(m, r) for m, r in result["results"].items()]
    rows += [(f"{m} + test-time", r) for m, r in result["test_time"].items()]
    for label, r in rows:
        if per_pair:
            lines += [f"| {label} | {pair} | {_cells(row)} |" for pair, row in r["pairs"].items()]
        elif r["mean"] is None:
            lines.append(f"| {label} | " + " | ".join([DASH] * 4) + " |")
        else:
            lines.append(f"| {label} | {_cells(r['mean'])} |")
    proto = result["protocol"]
    pairs = result["pairs"]
    notes = [f"Top-1 (%) on {len(pairs)} confounded pair(s) ({'; '.join(pairs)})"
             + ("" if per_pair else ", mean over pairs; gap = mean of the per-pair |ID - OOD|") + ".",
             f"Nuisance {proto['nuisance_tag']} on the first class of each pair in train, val and ID, "
             "on the second in OOD; " + SELECTION_NOTE + "."]
    if result["test_time"]:
        notes.append(f"Test-time rows: edited with {proto['adapt_per_class']} labelled OOD-domain images "
                     "per class, not among the OOD test images.")
    for method, r in result["results"].items():
        for pair, why in r.get("failed", {}).items():
            notes.append(f"{method} could not be fitted on {pair} and is averaged without it: {why}")
    blind = [p for p, e in result["nuisance_effect"].items() if _blind(e)]
    if blind:
        notes.append(f"The backbone does not see the nuisance on: {'; '.join(blind)} (ID = OOD there).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
