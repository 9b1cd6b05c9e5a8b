"""One run: data -> features -> concepts -> methods -> metrics (+ few-shot), recorded.

Where concept annotations are known ([grounding]), every concept method is also scored on how
well its concepts mean what they say (concept AUROC, explanation precision@k; grounding/), beside
accuracy in results.json, results.md, the few-shot table and the report, and the run's concepts
are matched to the annotated attributes (concept_matches.csv) to fill Context.class_truth.

The whole config is checked and the output folder claimed before any image is read; the run
folder (report included) is written to a temporary sibling and renamed into place at the end
(see record.py).

Methods trained on concept labels (cbm, ecbm: `concept_labelled`) need annotations ([grounding];
refused before any image is read without them). Class-level annotations reach them as
Context.class_truth (each image takes its class's row); per-image ones (the composite dataset's)
also as Context.concept_truth_by_id, every annotated image of every split by id, each run concept
taking its matched attribute's column. The run then records, per such method, concept accuracy on
the test images (per concept, mean, whole vector; unknown labels never counted) and the
intervention curve (accuracy after correcting 0..k concepts per image with their true labels,
known labels only; ECBM, which re-infers at every step, the first 10) under "concept_labels" in
results.json, and as a table in results.md.

Methods that find their own concepts (dn_cbm, v2c: `discovers_concepts`) get an unlabelled image
pool, a vocabulary and what is built from them ([discovery], runs/discovery.py) in
Context.discovery, built once: the same for every few-shot k and every confounded pair (none of
it sees a label). Their concepts are their own (`concepts_`: latent names, V2C tokens), so they
are grounded, reported and tabled like any other concept method; results.json records what
discovery built under "discovery".

report.html shows one concept bottleneck, [report] method: "auto" picks the one with the best
top-1 on the validation split (`val_top1`, recorded per method; never the test split) among those
whose explanations pass the truth floor (grounding/truth.py: coverage-aware precision@k on
validation annotations where they cover the explanations, else the share of top-k pairs linked
and evidenced on validation images; `truth` in each results row), or the first in [methods]
order when there is no validation split; results.json records which and why under
"report_method", with the models passed over and why, and the report's title says it. splits.json records each split's ids, so
`conceptlens report RUN_DIR` reproduces the run's test split (record.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..backbones import open_backbone
from ..concepts import ConceptSet
from ..concepts.filters import filter_activation
from ..concepts.pipeline import FilterResult, align_classes, run_filters, run_selection
from ..data import few_shot, load_dataset
from ..data.splits import take_splits
from ..errors import ConfigError, DataError
from ..evaluation import evaluate, nec_curve_fields
from ..features import encode_dataset, encode_texts, encode_texts_with_norms
from ..features.encode import image_cache
from ..grounding.evaluate import Grounding, matching_embedder, resolve_annotations, row_fields
from ..methods import Context, make_method
from ..methods.protocols import Discovering, Intervenable
from ..methods.tags import get_tags
from .config import REPORT_AUTO, DataConfig, RunConfig, validate_config
from .record import check_output_dir, record_run
from .tables import concept_label_table, few_shot_table, results_table

log = logging.getLogger("conceptlens")
TEMPLATES = ("a photo of a {}.",)


def dataset_options(data: DataConfig) -> dict:
    """load_dataset's keyword arguments for [data] (data_dir is Fashion-MNIST's root folder;
    load_dataset refuses it for any other dataset)."""
    return {"allow_non_ascii": data.allow_non_ascii, "root": data.data_dir,
            "max_pixels": data.max_pixels or None}


def build_candidates(cfg: RunConfig, classes) -> ConceptSet:
    """Every [concepts] source with its options, then [concepts] file (concepts/pipeline.py)."""
    from ..concepts.pipeline import build_candidates as candidates_from_config

    return candidates_from_config(cfg.concepts, classes)


def build_context(backbone, classes, concepts: ConceptSet | None, cache,
                  grounding: Grounding | None = None, discovery=None,
                  concept_labels: bool = False) -> Context:
    """The language side of a run; with `grounding`, class_truth holds each concept's matched
    annotated attribute for each class (NaN where unmatched or unknown), and with
    `concept_labels` (a method trains on concept labels: cbm, ecbm) and per-image annotations,
    concept_truth_by_id holds every annotated image's row (all splits; `image_concept_truth`);
    `discovery` (a DiscoveryInputs from runs/discovery.py, or None) becomes Context.discovery."""
    prompts = [t.format(c) for c in classes for t in TEMPLATES]
    class_emb = encode_texts(backbone, prompts, cache).reshape(len(classes), len(TEMPLATES), -1)
    class_emb = class_emb.mean(1)
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    if concepts is None or not len(concepts):
        return Context(tuple(classes), class_embedding=class_emb, backbone_id=backbone.id,
                       preprocess_id=backbone.preprocess_id, discovery=discovery)
    names = align_classes(concepts, classes)
    emb, norms = encode_texts_with_norms(backbone, concepts.texts, cache)
    truth = None if grounding is None else grounding.class_truth(concepts.texts).astype(np.float32)
    by_id = image_concept_truth(grounding, concepts.texts) if concept_labels else None
    return Context(tuple(classes), concepts.texts, emb, concepts.class_matrix(names), class_emb,
                   backbone.id, concept_norm=norms, class_truth=truth, discovery=discovery,
                   concept_truth_by_id=by_id, preprocess_id=backbone.preprocess_id)


def image_concept_truth(grounding: Grounding | None, texts) -> dict[str, np.ndarray] | None:
    """image id -> (k,) truth of the concepts `texts` (each its matched annotated attribute's value,
    NaN where unmatched or unknown) for per-image annotations; None for class-level ones (methods
    then broadcast Context.class_truth) or without annotations."""
    if grounding is None or grounding.annotations.level != "image":
        return None
    ann = grounding.annotations
    col = {c: j for j, c in enumerate(ann.concepts)}
    cols = [col.get(m["match"]) for m in grounding.match(texts)]
    values = np.asarray(ann.values, dtype=np.float64)
    table = np.full((len(ann.items), len(cols)), np.nan)
    for j, c in enumerate(cols):
        if c is not None:
            table[:, j] = values[:, c]
    return {str(item): table[i] for i, item in enumerate(ann.items)}


def labelled_methods(methods: dict) -> list[str]:
    """The configured methods that train on concept labels (`concept_labelled`: cbm, ecbm)."""
    return [name for name, params in methods.items()
            if get_tags(make_method(name, params)).concept_labelled]


def check_concept_labels(methods: dict, annotations) -> None:
    """A concept-labelled method without annotations fails now, before any image is encoded."""
    names = labelled_methods(methods)
    if names and annotations is None:
        raise ConfigError(f"{', '.join(names)} train(s) on concept labels, and this run has no concept "
                          'annotations: set [grounding] annotations ("auto" finds the built-in ones for '
                          "fashion-mnist and fashion-mnist-composite; or a CSV path, class level "
                          "'attribute,<class>,...' or per image), or remove those methods.")


REINFER_STEPS = 10  # a model that re-infers its concepts at each correction (ECBM): the first 10


def score_concept_labels(results: dict, models: dict, train, test, context: Context,
                         steps: int | None = None, policy: str = "uncertain") -> dict:
    """For each fitted concept-labelled model: concept accuracy on `test` against the annotated
    labels (per concept, mean over concepts, whole vector over the images with every label known;
    unknown labels never counted) and the intervention curve (accuracy after correcting 0..k
    concepts per image with their true labels, `policy` order, training activations as the
    reference; intervene.labelled_intervention_curve; `steps` None: every concept, except for a model
    with its own intervention (ECBM), which re-runs its inference at every step: REINFER_STEPS). Adds
    concept_accuracy, concept_accuracy_whole and intervention_gain (accuracy at the last step minus
    at 0) to each row; returns the details."""
    from ..intervene.interventions import labelled_intervention_curve
    from ..methods.cbm import concept_accuracy, concept_truth

    details = {}
    for name, model in models.items():
        if not get_tags(model).concept_labelled:
            continue
        truth = concept_truth(name, test, context)
        acc = concept_accuracy(model.predict_concepts(test), truth)
        n = steps if steps is not None or not isinstance(model, Intervenable) else REINFER_STEPS
        curve = labelled_intervention_curve(model, test, truth, n, policy, reference=train)
        known = ~np.isnan(truth)
        whole = None if np.isnan(acc["whole_vector"]) else acc["whole_vector"]
        per = zip(model.concepts_, acc["per_concept"], known.any(0), strict=True)
        details[name] = {"per_concept": {c: (float(a) if any_known else None) for c, a, any_known in per},
                         "mean": acc["mean"], "whole_vector": whole,
                         "whole_vector_images": int(known.all(1).sum()), "n_images": len(test),
                         "intervention": curve}
        results[name] |= {"concept_accuracy": acc["mean"], "concept_accuracy_whole": whole,
                          "intervention_gain": curve["accuracy"][-1] - curve["accuracy"][0]}
    return details


def open_grounding(cfg: RunConfig, data, train_idx=None) -> tuple:
    """[grounding]'s annotations for the loaded dataset (None when there are none), checked
    against its classes now, before any image is encoded; returns (annotations, class-level).
    Per-image annotations become class-level from the training images alone (`train_idx`), since
    the class-level truth is also KnoBo's training prior: a test image must not shape it."""
    from ..errors import ConceptLensError
    from ..grounding import class_level

    spec = cfg.grounding.annotations
    try:
        annotations = resolve_annotations(spec, cfg.data.dataset, data)
        if annotations is None:
            return None, None
        rows = np.arange(len(data)) if train_idx is None else np.asarray(train_idx)
        return annotations, class_level(annotations, data.classes, [data.ids[i] for i in rows],
                                        data.labels[rows])
    except ConceptLensError as e:
        raise ConfigError(f"[grounding] annotations = {spec!r} (dataset {cfg.data.dataset!r}): {e} Fix the "
                          'annotations, or set [grounding] annotations = "none" to skip the grounding '
                          "measures.") from e


def check_truth(results: dict, models: dict, held, context: Context, grounding: Grounding | None,
                k: int = 5, on: str = "validation") -> None:
    """Each concept model's truth check on the held-out images (grounding/truth.py), into its
    results row: "truth" {passed, by, value, why, on}, "evidence_at_k", "linked_at_k"."""
    from ..concepts.evidence import EVIDENCE_FLOOR
    from ..grounding.truth import explanation_evidence, truth_check

    for name, model in models.items():
        if not has_concepts(model):
            continue
        row = row_fields(grounding.evaluate(model, held)) if grounding is not None else None
        # the floor the head was fitted with, so a report's two sections use one floor
        evidence = explanation_evidence(model, held, context, k,
                                        getattr(model, "evidence_floor", EVIDENCE_FLOOR))
        truth = truth_check(row, evidence)
        if get_tags(model).grounds_from_links and truth["by"] == "evidence":
            truth["why"] += (" (its concepts are grounded from these links: the figure shows that its detectors "
                             "generalise to unseen images, not that each concept is visible)")
        results[name] |= {"evidence_at_k": evidence["evidence_at_k"], "linked_at_k": evidence["linked_at_k"],
                          "truth": {**truth, "on": on, "unsupported": evidence["unsupported"][:20]}}


def ground_models(results: dict, models: dict, test, grounding: Grounding | None) -> dict:
    """Add the grounding numbers to each results row (None for methods without concepts) and
    return each method's full measures (per concept, matches, per class) by name."""
    details = {}
    if grounding is None:
        return details
    for name, model in models.items():
        details[name] = grounding.evaluate(model, test)
        results[name] |= row_fields(details[name])
    return details


def text_filters(cfg: RunConfig, candidates: ConceptSet, backbone, classes, cache_root) -> FilterResult:
    """Label-free's filters that look only at texts (length, class similarity, duplicates):
    the same for every training set, so run once."""
    if not cfg.concepts.filter:
        return FilterResult(candidates)
    return run_filters(candidates, backbone, list(classes), None, cache=cache_root)


def concepts_from(cfg: RunConfig, texts: FilterResult, backbone, train, cache_root,
                  seed: int) -> tuple[FilterResult, ConceptSet]:
    """The activation filter and the selection, on `train` alone (the k-shot set in few-shot
    runs, so no concept is chosen by looking at images the methods do not get)."""
    filtered = texts
    if cfg.concepts.filter and len(texts.concepts):
        emb = encode_texts(backbone, texts.concepts.texts, cache_root)
        kept, dropped = filter_activation(texts.concepts, train.embedding, emb,
                                          quantile=cfg.concepts.activation_quantile)
        filtered = FilterResult(kept, texts.dropped + dropped)
    selected = run_selection(filtered.concepts, backbone, train, cache=cache_root,
                             per_class=cfg.concepts.per_class, method=cfg.concepts.selection,
                             lam=cfg.concepts.lam, seed=seed,
                             global_budget=cfg.concepts.global_budget).concepts
    return filtered, selected


def warn_if_inseparable(selected: ConceptSet, classes) -> str | None:
    """Log (and return, for results.json) the warning that some classes share all their concepts,
    or that no concept is linked to any class (word associations, concepts/pipeline.py)."""
    from ..concepts.pipeline import link_warning, separability_warning

    warning = link_warning(selected) or separability_warning(selected, list(classes))
    if warning:
        log.warning(warning)
    return warning


def model_concept_warnings(models: dict, classes) -> dict[str, str]:
    """The shared-concept warning for each model that chose its own per-class concepts (V2C's
    discovery record's concept_set): {name: warning}, logged."""
    from ..concepts.pipeline import separability_warning

    out = {}
    for name, model in models.items():
        own = model.discovery_record().concept_set if isinstance(model, Discovering) else None
        if not isinstance(own, ConceptSet) and getattr(model, "class_consistent", False):
            # a class-consistent head: the concepts each class may weigh (its non-zero weights)
            own = ConceptSet(list(classes))
            W = np.asarray(model.class_weights_)
            for j, text in enumerate(model.concepts_):
                if (W[:, j] != 0).any():
                    own.add(text, [classes[i] for i in np.flatnonzero(W[:, j] != 0)])
        if isinstance(own, ConceptSet):
            warning = separability_warning(own, list(classes))
            if warning:
                out[name] = f"{name}: {warning}"
                log.warning(out[name])
    return out


def evaluate_at_nec(model, train, test, nec: int, protocol: str = "vlg", val=None,
                    context: Context | None = None) -> dict | None:
    """Top-1 of `model` at `nec` concepts per class by `protocol` ("vlg": VLG-CBM's sparse
    evaluation; "refit": refit a sparse final layer (`refit_at_nec`), prune the rest; "prune";
    see evaluation/nec.py), or None for a method without a concept layer. A model with fewer
    than `nec` concepts is measured at all of them. The one place a run measures accuracy
    at NEC, so the comparison changes in one spot."""
    from ..evaluation.nec import accuracy_at_nec

    if not has_concepts(model):
        return None
    k = np.asarray(model.class_weights_).shape[1]
    r = accuracy_at_nec(model, train, test, min(nec, k), protocol=protocol, val=val, context=context)
    return {"top1_at_nec": r["top1"], "nec_at_nec": r["nec"], "nec_how": r["how"]}


def fit_and_evaluate(methods: dict, train, val, test, context: Context, nec: int,
                     protocol: str = "vlg", nec_curve=()) -> tuple[dict, dict]:
    """Fit every method on `train` with the same `val` (None: no validation for anyone); with
    `val`, each row also holds `val_top1`, the top-1 on it (what [report] method "auto" picks by).

    A method that cannot be fitted on these data (a DataError from its fit: e.g. KnoBo with no
    concept it can ground, in a few-shot subset or a two-class pair) does not stop the others:
    its row is {"failed": message, "fit_seconds"} and it has no model, which every table shows
    and a warning logs. Any other error (a bug, a bad parameter) still stops the run."""
    results, models = {}, {}
    for name, params in methods.items():
        t = time.perf_counter()
        try:
            model = make_method(name, params).fit(train, context, val)
        except DataError as e:
            log.warning("%s could not be fitted on these data and is left out: %s", name, e)
            results[name] = {"failed": str(e), "fit_seconds": time.perf_counter() - t}
            continue
        row = evaluate(model, test)
        row["fit_seconds"] = time.perf_counter() - t
        if val is not None and len(val):
            row["val_top1"] = float((model.predict(val) == np.asarray(val.labels)).mean())
        if nec:
            row |= evaluate_at_nec(model, train, test, nec, protocol, val, context) or {}
        if nec_curve:  # accuracy against NEC (evaluation/nec.py accuracy_curve)
            row |= nec_curve_fields(model, train, test, nec_curve, protocol, val, context, row["top1"])
        results[name], models[name] = row, model
    return results, models


def has_concepts(model) -> bool:
    """A concept bottleneck: concepts from the run (needs_concepts) or its own (discovers_concepts)."""
    return get_tags(model).needs_concepts or get_tags(model).discovers_concepts


def concept_methods(methods: dict) -> list[str]:
    """The configured methods that are concept bottlenecks (has_concepts), in config order."""
    return [name for name, params in methods.items() if has_concepts(make_method(name, params))]


def check_report_method(choice: str, methods: dict) -> None:
    """[report] method names a concept bottleneck of the run ("auto" always passes): refused
    before any image is read (that the name is in [methods] is runs/config.py's check)."""
    if choice == REPORT_AUTO or choice in concept_methods({choice: methods[choice]}):
        return
    others = concept_methods(methods)
    hint = (f"choose one of {', '.join(map(repr, others))} or \"auto\"" if others else
            "add a concept-bottleneck method (e.g. [methods.label_free]) or leave [report] method out")
    raise ConfigError(f"[report] method = {choice!r} is not a concept bottleneck (no concept layer for the "
                      f"report to show); {hint}.")


NO_VALIDATION = "first in config (no validation split)"


def choose_report_method(choice: str, results: dict, models: dict) -> dict | None:
    """Which fitted model report.html shows, and why: {"method", "chosen_by"}; None when no
    concept bottleneck was fitted and none was named. `choice` is [report] method: a name
    ("chosen_by": "config"), or "auto": the concept bottleneck with the best `val_top1` (the
    first in config order on a tie; "chosen_by": "validation top-1 0.812"), or without
    validation numbers the first concept bottleneck in config order (NO_VALIDATION): never
    the test split. A named method that failed to fit, or has no concepts, is a ConfigError."""
    if choice != REPORT_AUTO:
        if choice not in models:
            why = results.get(choice, {}).get("failed", "it is not one of the run's methods")
            raise ConfigError(f"[report] method = {choice!r} could not be fitted on these data ({why}), so "
                              "there is no model to report. Name another concept bottleneck in [report] "
                              "method, or \"auto\" for the best one on validation.")
        if not has_concepts(models[choice]):
            raise ConfigError(f"[report] method = {choice!r} is not a concept bottleneck (no concept layer "
                              "for the report to show); name one that is, or \"auto\".")
        return {"method": choice, "chosen_by": "config"}
    names = [n for n in results if n in models and has_concepts(models[n])]  # results: config order
    if not names:
        return None
    truth = {n: results[n].get("truth") for n in names}
    passing = [n for n in names if (truth[n] or {}).get("passed", True)]  # unchecked (older results): passes
    passed_over = {n: f"explanations fail the truth floor: {truth[n]['why']}" for n in names if n not in passing}
    extra = {"passed_over": passed_over} if passed_over else {}
    checked = any(truth.values())
    if not passing:  # say so, and show the model whose explanations are the most often true
        best = max(names, key=lambda n: ((truth[n] or {}).get("value") or 0.0,
                                         results[n].get("val_top1") or 0.0))
        log.warning("No concept bottleneck's explanations pass the truth floor; the report shows %s (the "
                    "highest truth figure) and says that its reasons are not evidence.", best)
        return {"method": best, "chosen_by": "no model passes the truth floor; the highest truth figure",
                "passed_truth_floor": False, **extra}
    scored = [n for n in passing if results[n].get("val_top1") is not None]
    if not scored:
        log.warning("No validation split: the report shows %s, the first concept bottleneck in [methods]; "
                    "give the run a validation split ([data] val_fraction) to choose by it, or name one "
                    "in [report] method.", passing[0])
        return {"method": passing[0], "chosen_by": NO_VALIDATION, **({"passed_truth_floor": True} if checked else {}),
                **extra}
    best = max(scored, key=lambda n: results[n]["val_top1"])  # max keeps the first of equals
    return {"method": best, "chosen_by": f"validation top-1 {results[best]['val_top1']:.3f}",
            **({"passed_truth_floor": True} if checked else {}), **extra}


def report_title(method: str, dataset: str, chosen: dict | None) -> str:
    """The report's title line: what it shows and why that model (choose_report_method's
    "chosen_by"; `conceptlens report RUN_DIR --method` gives "--method")."""
    why = (chosen or {}).get("chosen_by")
    if why is None:
        reason = ""
    elif why.startswith("validation top-1"):
        floor = " whose explanations pass the truth floor" if (chosen or {}).get("passed_over") else ""
        reason = f" (the best concept bottleneck{floor} by {why})"
    else:
        reason = {"config": " (named in [report] method)", "--method": " (chosen with --method)",
                  NO_VALIDATION: " (the first concept bottleneck in the config; the run has no validation "
                                 "split)"}.get(why, f" ({why})")
    return f"conceptlens: {method} on {dataset}{reason}"


def uses_run_concepts(methods: dict) -> bool:
    """Whether any configured method takes the run's concept list (so candidates are built)."""
    return any(get_tags(m).needs_concepts and not get_tags(m).discovers_concepts
               for m in (make_method(name, params) for name, params in methods.items()))


def _take(data, idx, per_class, seed):
    return few_shot(data, idx, "all" if per_class == 0 else per_class, seed)


def encode_parts(cfg: RunConfig, backbone, data, parts: dict, cache) -> dict:
    """Each split's FeatureBundle: encoded here, or on a Ray cluster when [data] ray is set
    (features/ray_encode.py: the same cache shards, so either way resumes the other)."""
    if not cfg.data.ray:
        return {k: encode_dataset(backbone, data.subset(v), cache, batch_size=cfg.batch_size,
                                  workers=cfg.workers, on_error=cfg.data.on_error, progress=cfg.progress)
                for k, v in parts.items()}
    from ..features.ray_encode import connect, encode_dataset_ray

    started = connect(cfg.data.ray)  # once, so "local" does not start a cluster per split
    try:
        return {k: encode_dataset_ray(cfg.backbone, data.subset(v), cache, address=cfg.data.ray,
                                      workers=cfg.data.ray_workers, batch_size=cfg.batch_size,
                                      num_gpus=cfg.data.ray_gpus_per_worker,
                                      cpus_per_worker=cfg.data.ray_cpus_per_worker,
                                      on_error=cfg.data.on_error, progress=cfg.progress,
                                      text_cache_dir=cfg.cache_dir, backbone=backbone)
                for k, v in parts.items()}
    finally:
        if started:
            import ray

            ray.shutdown()


def run_experiment(cfg: RunConfig, write: bool = True, overwrite: bool = False) -> dict:
    """Run `cfg`. With `write`, record it in cfg.output_dir, which must not exist or be empty
    unless `overwrite` (then a previous run folder there is replaced once this one is done)."""
    validate_config(cfg)
    check_report_method(cfg.report.method, cfg.methods)
    if write:
        check_output_dir(cfg.output_dir, overwrite, cfg.cache_dir)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    data = load_dataset(cfg.data.dataset, **dataset_options(cfg.data))
    if cfg.confounded is not None:
        from .confounded import check_confounded_classes

        check_confounded_classes(cfg.confounded, data)  # a wrong class name fails before encoding
    parts = take_splits(data, cfg.data)  # [data] fractions and per-class sizes
    annotations, class_annotations = open_grounding(cfg, data, parts["train"])
    check_concept_labels(cfg.methods, annotations)
    labelled = bool(labelled_methods(cfg.methods))
    backbone = open_backbone(cfg.backbone, cfg.cache_dir)
    cache_root = None if cfg.cache_dir is None else Path(cfg.cache_dir) / "features"
    cache = image_cache(backbone, cache_root)
    grounding = None
    if annotations is not None:
        embed = matching_embedder(cfg.grounding.embed, backbone, cache_root)
        grounding = Grounding(annotations, class_annotations, embed, cfg.grounding.k,
                              cfg.grounding.match_threshold)
    t = time.perf_counter()
    bundles = encode_parts(cfg, backbone, data, parts, cache)
    seconds["encode"] = time.perf_counter() - t
    train, test = bundles["train"], bundles["test"]
    val = bundles["val"] if len(bundles["val"]) else None

    from .discovery import build_discovery

    t = time.perf_counter()
    discovery_record: dict = {}
    discovery = build_discovery(cfg, backbone, cache, cache_root, train, cfg.methods, discovery_record)
    if discovery is not None:
        seconds["discovery"] = time.perf_counter() - t

    t = time.perf_counter()
    needs_concepts = uses_run_concepts(cfg.methods)
    texts = selected = None
    report = {}
    if needs_concepts:
        candidates = build_candidates(cfg, data.classes)
        texts = text_filters(cfg, candidates, backbone, data.classes, cache_root)
        filtered, selected = concepts_from(cfg, texts, backbone, train, cache_root, cfg.data.seed)
        if cfg.concepts.filter:
            report["filter"] = filtered.report()
        report["concepts"] = {"candidates": candidates.summary(), "filtered": filtered.concepts.summary(),
                              "selected": selected.summary(),
                              "warning": warn_if_inseparable(selected, data.classes)}
    seconds["concepts"] = time.perf_counter() - t
    context = build_context(backbone, data.classes, selected, cache_root, grounding, discovery, labelled)

    t = time.perf_counter()
    results, models = fit_and_evaluate(cfg.methods, train, val, test, context, cfg.nec, cfg.nec_protocol,
                                       cfg.nec_curve)
    seconds["fit"] = time.perf_counter() - t
    warnings = [w for w in [report.get("concepts", {}).get("warning")] if w]
    warnings += list(model_concept_warnings(models, data.classes).values())
    if warnings:
        report["warnings"] = warnings
    concept_labels = None
    if labelled:
        t = time.perf_counter()
        concept_labels = {"policy": "uncertain", "strategy": "truth", "reference": "train",
                          "level": annotations.level,
                          "methods": score_concept_labels(results, models, train, test, context)}
        seconds["concept_labels"] = time.perf_counter() - t
    check_truth(results, models, val if val is not None else train, context, grounding,
                cfg.grounding.k, on="validation" if val is not None else "training")
    t = time.perf_counter()
    details = ground_models(results, models, test, grounding)
    # the run's concepts and every discovering method's own (latent names, V2C tokens), once each
    own = [c for m in models.values() if get_tags(m).discovers_concepts for c in m.concepts_]
    matched = list(dict.fromkeys([*context.concepts, *own]))
    matches = grounding.match(matched) if grounding is not None and matched else None
    if grounding is not None:
        seconds["grounding"] = time.perf_counter() - t

    files = {}
    report_method = choose_report_method(cfg.report.method, results, models) if write else None
    if report_method is not None:
        t = time.perf_counter()
        files["report.html"] = _faithfulness_and_report(results, models, train, test, data, details,
                                                        report_method, concept_labels, backbone, warnings)
        seconds["report"] = time.perf_counter() - t

    fewshot = fewshot_grounding = None
    fewshot_failures: dict[str, list[str]] = {}
    if cfg.fewshot.shots:
        t = time.perf_counter()
        fewshot_grounding = {} if grounding is not None else None
        fewshot = run_few_shot(cfg, train, val, test, backbone, texts, cache_root, grounding,
                               fewshot_grounding, discovery, fewshot_failures)
        seconds["fewshot"] = time.perf_counter() - t
    confounded = None
    if cfg.confounded is not None:
        from .confounded import run_confounded

        t = time.perf_counter()
        # the pool and SAE see no label, so every pair reuses them
        confounded = run_confounded(cfg.confounded, cfg, data, backbone, cache, cache_root, grounding,
                                    discovery)
        seconds["confounded"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    out = {"backbone_id": backbone.id, "preprocess": backbone.preprocess_id,
           "sizes": {k: len(v) for k, v in bundles.items()}, "results": results,
           "split_ids": {k: list(v.ids) for k, v in bundles.items()},  # record_run: splits.json
           "nec": cfg.nec, "nec_protocol": cfg.nec_protocol,
           "fewshot": fewshot, "fewshot_validation": cfg.fewshot.use_val if fewshot else None,
           "concept_report": report, "seconds": seconds,
           "grounding": None if grounding is None else {
               "annotations": annotations.provenance, "level": annotations.level,
               "n_attributes": len(annotations.concepts), "k": cfg.grounding.k,
               "match_threshold": cfg.grounding.match_threshold, "embed": cfg.grounding.embed,
               "methods": details},
           "concept_matches": matches, "fewshot_grounding": fewshot_grounding, "confounded": confounded,
           "discovery": discovery_record or None,
           "concept_labels": concept_labels, "report_method": report_method,
           "table": results_table(results, cfg.nec, cfg.nec_protocol, cfg.grounding.k)
           + ("\n\n" + concept_label_table(concept_labels) if concept_labels else ""),
           "fewshot_failures": fewshot_failures or None,
           "fewshot_table": (few_shot_table(fewshot, fewshot_grounding, cfg.grounding.k, fewshot_failures)
                             if fewshot else None)}
    if write:
        out["output_dir"] = str(record_run(cfg, out, selected, models, files, overwrite))
    return out


def _faithfulness_and_report(results, models, train, test, data, grounding: dict | None = None,
                             chosen: dict | None = None, concept_labels: dict | None = None,
                             backbone=None, warnings: list[str] | None = None) -> str:
    """Deletion-curve areas for every concept method, and the HTML report of `chosen`
    (choose_report_method's pick; None: the first concept method)."""
    from ..explain import deletion_curves
    from ..report import build_report

    concept_models = [n for n, m in models.items() if has_concepts(m)]
    curves = {}
    for name in concept_models:
        curves[name] = deletion_curves(models[name], test)
        results[name]["deletion_area_top"] = curves[name]["area_top"]
        results[name]["deletion_area_random"] = curves[name]["area_random"]
    index = {item: i for i, item in enumerate(data.ids)}

    def image(item):
        i = index[item]
        return data.images.decode(i, data.images.read(i))

    main = concept_models[0] if chosen is None else chosen["method"]
    discovered = {n: m for n, m in models.items() if get_tags(m).discovers_concepts}
    return build_report(models[main], results, test, train, image,
                        title=report_title(main, data.name, chosen), faithfulness=curves[main],
                        grounding=(grounding or {}).get(main), discovered=discovered,
                        concept_labels=concept_labels, backbone=backbone, chosen=chosen,
                        warnings=warnings)


def run_few_shot(cfg: RunConfig, train, val, test, backbone, texts: FilterResult | None,
                 cache_root, grounding: Grounding | None = None, measures: dict | None = None,
                 discovery=None, failures: dict | None = None) -> dict:
    """LaBo's protocol: k images per class (nested across k), several seeds, every method
    on the same features, on equal terms:
    - concepts are filtered (activation filter) and selected from the k-shot images alone;
      `texts` holds the candidates after the text-only filters, which see no image;
    - every method gets the same validation split at every k (cfg.fewshot.use_val), or none
      does; a method that can use it (`uses_validation`) does;
    - methods that discover concepts get the same `discovery` inputs (pool, SAE, vocabulary) at
      every k: they are built without labels, from the full pool.
    Returns {method: {shots: [top-1 per seed]}}; with `grounding`, `measures` (a dict) is filled
    with {method: {shots: {"concept_auroc" | "precision_at_k" | "negative_precision_at_k":
    [per seed, None where undefined or the method has no concepts]}}}. A method that cannot be
    fitted at some k and seed (fit_and_evaluate) has None there, and `failures` (a dict), when
    given, is filled with {method: ["<k>-shot seed <s>: <why>", ...]}.
    """
    val = val if cfg.fewshot.use_val else None
    rows: dict[str, dict[str, list[float | None]]] = {}
    failures = {} if failures is None else failures
    for seed in cfg.fewshot.seeds:
        for shots in cfg.fewshot.shots:
            idx = few_shot(train, np.arange(len(train)), shots, seed)
            sub = train.rows(idx)
            selected = None
            if texts is not None:
                selected = concepts_from(cfg, texts, backbone, sub, cache_root, seed)[1]
            context = build_context(backbone, train.classes, selected, cache_root, grounding, discovery,
                                    bool(labelled_methods(cfg.methods)))
            results, models = fit_and_evaluate(cfg.methods, sub, val, test, context, nec=0)
            ground_models(results, models, test, grounding)
            for name, row in results.items():
                # a method that failed at this k and seed (see fit_and_evaluate) gives None there
                rows.setdefault(name, {}).setdefault(str(shots), []).append(row.get("top1"))
                if "failed" in row:
                    failures.setdefault(name, []).append(f"{shots}-shot seed {seed}: {row['failed']}")
                if grounding is not None and measures is not None:
                    cell = measures.setdefault(name, {}).setdefault(str(shots), {})
                    for key in ("concept_auroc", "precision_at_k", "negative_precision_at_k",
                                "precision_at_k_coverage"):
                        cell.setdefault(key, []).append(row.get(key))
    return rows

