"""`conceptlens explain | intervene | edit | report`: working with a saved model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, closest
from .data_commands import add_encode_options, add_matching_options


def _load(args):
    from ..methods import Method
    from ..runs.experiment import open_backbone

    model = Method.load(args.model)
    backbone = open_backbone(args.backbone, args.cache_dir)
    if backbone.id != model.backbone_id_:
        raise ConfigError(f"The model was fitted on features of {model.backbone_id_!r}, but "
                          f"--backbone gives {backbone.id!r}; pass the backbone it was fitted with.")
    return model, backbone


def _cache(args):
    return None if args.cache_dir is None else Path(args.cache_dir) / "features"


def _split(args, backbone, data, split, per_class):
    from ..features import encode_split

    return encode_split(backbone, data, split, per_class, args.seed, cache=_cache(args),
                        batch_size=args.batch_size, workers=args.workers,
                        progress=not args.no_progress)


def _dataset(args, model):
    from ..data import load_dataset

    data = load_dataset(args.dataset)
    if tuple(data.classes) != tuple(model.classes_):
        raise ConfigError(f"The dataset's classes {list(data.classes)[:5]} differ from the "
                          f"model's {list(model.classes_)[:5]}.")
    return data


def _class_index(model, name: str) -> int:
    if name in model.classes_:
        return model.classes_.index(name)
    shown = ", ".join(model.classes_[:40]) + (f", ... ({len(model.classes_)} in all)"
                                              if len(model.classes_) > 40 else "")
    raise ConfigError(f"--target {name!r} is not one of the model's classes.{closest(name, model.classes_)} "
                      f"Classes: {shown}.")


def _model_folder_above(path: Path) -> Path | None:
    """The saved model folder (one with model.json) that `path` is or lies inside, if any."""
    for folder in (path, *path.parents):
        if (folder / "model.json").is_file():
            return folder
    return None


def cmd_explain(args) -> int:
    from ..data import ImageDataset
    from ..data.images import FileImages
    from ..explain.contributions import as_text, explain_image
    from ..features import encode_dataset

    model, backbone = _load(args)
    paths = [Path(p) for p in args.images]
    data = ImageDataset("images", model.classes_, np.zeros(len(paths), dtype=np.int64),
                        tuple(str(p) for p in paths), FileImages(paths))
    target = None if args.target is None else _class_index(model, args.target)
    bundle = encode_dataset(backbone, data, _cache(args), batch_size=args.batch_size,
                            workers=args.workers, progress=not args.no_progress)
    for i in range(len(bundle)):
        print(as_text(explain_image(model, bundle, i, target=target, top=args.top)))
    return 0


def cmd_intervene(args) -> int:
    from ..concepts import ConceptSet
    from ..intervene import intervention_curve
    from ..intervene.interventions import class_level_truth

    model, backbone = _load(args)
    data = _dataset(args, model)
    concepts = ConceptSet.load(args.concepts)
    prior = concepts.subset([concepts.index(c) for c in model.concepts_]).class_matrix(model.classes_)
    train = _split(args, backbone, data, "train", args.images_per_class)
    test = _split(args, backbone, data, "test", args.images_per_class)
    truth = class_level_truth(model, test.labels, prior)
    print(f"accuracy after 0..{args.steps} interventions per image ({args.strategy} values; "
          "concept truth = generated for the image's class)")
    for policy in args.policy or ["random", "uncertain", "contribution"]:
        curve = intervention_curve(model, test, truth, args.steps, policy, args.strategy, train)
        print(f"  {policy:12s} " + " ".join(f"{100 * a:5.1f}" for a in curve))
    return 0


def cmd_edit(args) -> int:
    from ..intervene import edit_model
    from ..intervene.edits import check_edit_destination
    from ..methods import Method

    check_edit_destination(args.out, args.model)
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a folder for the edited model.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"--out {args.out} already exists and is not empty; pass --overwrite to "
                          "replace the model there, or choose a new folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / "model.json").is_file():
        raise ConfigError(f"--out {args.out} holds files but no saved model (model.json); refusing "
                          "to write a model into it even with --overwrite. Choose a new folder.")
    model = Method.load(args.model)
    reweight = {}
    for item in args.reweight or []:
        concept, _, factor = item.rpartition("=")
        try:
            reweight[concept] = float(factor)
        except ValueError:
            raise ConfigError(f"--reweight takes CONCEPT=FACTOR; got {item!r}.") from None
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    edited = edit_model(model, remove=args.remove or [], reweight=reweight, classes=classes,
                        note=args.note or "")
    edited.save(args.out)
    for e in edited.edit_log_[len(getattr(model, "edit_log_", [])):]:
        print(f"{e['concept']!r} x {e['factor']:g} for {', '.join(e['classes'])}")
    print(f"-> {args.out} (the original {args.model} is unchanged)")
    return 0


def _check_report_out(args) -> None:
    out = Path(args.out).resolve()
    inside = _model_folder_above(out.parent) or (out if (out / "model.json").is_file() else None)
    if inside is not None:
        raise ConfigError(f"--out {args.out} lies inside the saved model folder {inside}; writing "
                          "there could replace the model's files. Write the report elsewhere.")
    if out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give a file name, e.g. report.html.")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out} already exists; pass --overwrite to replace it, or "
                          "choose another file name.")


def cmd_report(args) -> int:
    from ..evaluation import evaluate
    from ..grounding import evaluate_grounding, matching_embedder, resolve_annotations
    from ..report import write_report

    if args.k < 1:
        raise ConfigError(f"--k must be a positive integer (top concepts per class); got {args.k}.")
    if not -1 <= args.match_threshold <= 1:
        raise ConfigError(f"--match-threshold is a cosine similarity in [-1, 1]; got {args.match_threshold}.")
    _check_report_out(args)  # before the images are encoded
    model, backbone = _load(args)
    data = _dataset(args, model)
    train = _split(args, backbone, data, "train", args.images_per_class)
    test = _split(args, backbone, data, "test", args.images_per_class)
    index = {item: i for i, item in enumerate(data.ids)}

    def image(item):
        return data.images.decode(index[item], data.images.read(index[item]))

    grounding = None
    annotations = resolve_annotations(args.annotations, args.dataset, data)
    if annotations is not None:
        cache = _cache(args)
        embed = matching_embedder(args.embed, backbone, cache)
        grounding = evaluate_grounding(model, test, annotations, embed, k=args.k,
                                       threshold=args.match_threshold, class_ids=list(data.ids),
                                       class_labels=data.labels)
    write_report(args.out, model, {model.name: evaluate(model, test)}, test, train, image,
                 title=f"conceptlens: {model.name} on {data.name}", grounding=grounding)
    print(f"-> {args.out}")
    return 0


def add_commands(sub) -> None:
    def common(p, data=True):
        p.add_argument("model", help="a saved model folder")
        if data:
            p.add_argument("--dataset", required=True)
            p.add_argument("--images-per-class", default="50")
            p.add_argument("--seed", type=int, default=0)
        add_encode_options(p)

    p = sub.add_parser("explain", help="why a saved model classifies images as it does")
    common(p, data=False)
    p.add_argument("images", nargs="+")
    p.add_argument("--target", help="explain this class's score (default: the prediction)")
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("intervene", help="accuracy after test-time concept interventions")
    common(p)
    p.add_argument("--concepts", required=True, help="the concept set the model was built on")
    p.add_argument("--policy", action="append", choices=["random", "uncertain", "contribution"])
    p.add_argument("--strategy", default="truth", choices=["truth", "mean", "clamp"])
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(func=cmd_intervene, policy=None)

    p = sub.add_parser("edit", help="remove or reweight concepts; writes a new model")
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--remove", action="append")
    p.add_argument("--reweight", action="append", help="CONCEPT=FACTOR")
    p.add_argument("--classes", help="comma-separated; default: every class")
    p.add_argument("--note")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a saved model already at --out (never the input model)")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("report", help="write the HTML report of a saved model")
    common(p)
    p.add_argument("--out", required=True, help="the .html file to write (not inside a model folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--annotations", default="auto",
                   help="concept annotations for the grounding section: auto (built-in for the dataset), "
                        "none, fashion-mnist, or a class-level / per-image CSV")
    p.add_argument("--k", type=int, default=5, help="top concepts per class for explanation precision@k")
    add_matching_options(p)
    p.set_defaults(func=cmd_report)
