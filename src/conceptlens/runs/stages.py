"""The stages a run is made of, as functions of their inputs (runs/experiment.py chains them over
a RunState; runs/confounded.py reuses them per class pair): the language side (Context), the
concepts (text filters, then the activation filter and the selection on the training images),
fitting and evaluating every method, the concept-label, truth and grounding measures, and which
model the report shows.

Nothing here writes a file or imports the report: the run folder is record.py's, report.html the
caller's (conceptlens.report.run_report, passed to run_experiment by the CLI and the demo).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..concepts import ConceptSet
from ..concepts.filters import filter_activation
from ..concepts.pipeline import FilterResult, align_classes, run_filters, run_selection
from ..data import few_shot
from ..errors import ConfigError, DataError
from ..evaluation import evaluate, nec_curve_fields
from ..evaluation.nec import VLGPaths, accuracy_at_nec
from ..features import encode_texts, encode_texts_with_norms
from ..grounding.evaluate import Grounding, resolve_annotations, row_fields
from ..methods import Context, make_method
from ..methods.protocols import Discovering, Intervenable
from ..methods.tags import get_tags
from ..threads import threads_for_work
from .config import REPORT_AUTO, DataConfig, RunConfig

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
                       preprocess_id=backbone.preprocess_id, discovery=discovery,
                       backbone_spec=getattr(backbone, "spec", ""))
    names = align_classes(concepts, classes)
    emb, norms = encode_texts_with_norms(backbone, concepts.texts, cache)
    truth = None if grounding is None else grounding.class_truth(concepts.texts).astype(np.float32)
    by_id = image_concept_truth(grounding, concepts.texts) if concept_labels else None
    return Context(tuple(classes), concepts.texts, emb, concepts.class_matrix(names), class_emb,
                   backbone.id, concept_norm=norms, class_truth=truth, discovery=discovery,
                   concept_truth_by_id=by_id, preprocess_id=backbone.preprocess_id,
                   backbone_spec=getattr(backbone, "spec", ""))


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
                    context: Context | None = None, **vlg_options) -> dict | None:
    """Top-1 of `model` at `nec` concepts per class by `protocol` ("vlg": VLG-CBM's sparse
    evaluation; "refit": refit a sparse final layer (`refit_at_nec`), prune the rest; "prune";
    see evaluation/nec.py), or None for a method without a concept layer. A model with fewer
    than `nec` concepts is measured at all of them. The one place a run measures accuracy
    at NEC, so the comparison changes in one spot. `vlg_options`: accuracy_at_nec's ("vlg")."""
    if not has_concepts(model):
        return None
    k = np.asarray(model.class_weights_).shape[1]
    r = accuracy_at_nec(model, train, test, min(nec, k), protocol=protocol, val=val, context=context,
                        **vlg_options)
    return {"top1_at_nec": r["top1"], "nec_at_nec": r["nec"], "nec_how": r["how"]}


def fit_work(train, context: Context) -> float:
    """Multiply-adds of the fit's largest per-step product: the training images' features times
    the widest layer over them (Label-free's projection onto the concepts, a probe's classes)."""
    n = len(train)
    dim = 1 if train.features is None else int(np.shape(train.features)[1])
    return float(n) * dim * max(len(context.concepts), len(context.classes), 1)


def fit_and_evaluate(methods: dict, train, val, test, context: Context, nec: int,
                     protocol: str = "vlg", nec_curve=()) -> tuple[dict, dict]:
    """`fit_all` under the thread policy (conceptlens/threads.py): the free cores, never more
    than the work fills or the user set; the small solvers inside take one thread of their own.
    On a busy machine this is what keeps the fit near its quiet time (issue 23)."""
    with threads_for_work(fit_work(train, context)):
        return fit_all(methods, train, val, test, context, nec, protocol, nec_curve)


def fit_all(methods: dict, train, val, test, context: Context, nec: int,
            protocol: str = "vlg", nec_curve=()) -> tuple[dict, dict]:
    """Fit every method on `train` with the same `val` (None: no validation for anyone); with
    `val`, each row also holds `val_top1`, the top-1 on it (what [report] method "auto" picks by).

    A method that cannot be fitted on these data (a DataError from its fit: e.g. KnoBo with no
    concept it can ground, in a few-shot subset or a two-class pair) does not stop the others:
    its row is {"failed": message, "fit_seconds"} and it has no model, which every table shows
    and a warning logs. Any other error (a bug, a bad parameter) still stops the run."""
    results, models = {}, {}
    # "vlg": one elastic-net path per bottleneck, shared by the NEC column and the curve (issue 23)
    shared = {"paths": VLGPaths()} if protocol == "vlg" else {}
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
            row |= evaluate_at_nec(model, train, test, nec, protocol, val, context, **shared) or {}
        if nec_curve:  # accuracy against NEC (evaluation/nec.py accuracy_curve)
            row |= nec_curve_fields(model, train, test, nec_curve, protocol, val, context, row["top1"],
                                    **shared)
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
