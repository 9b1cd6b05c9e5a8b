"""`conceptlens explain | intervene | edit | report`: working with a saved model."""

from __future__ import annotations

import sys
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


# the video containers `conceptlens explain` reads as videos (any other file is an image)
EXPLAIN_VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov")


def _explain_videos(args, model, backbone, paths: list[Path], target) -> list[str]:
    """Per video file: the prediction and the top concepts per window (a motif model), with the
    window sampling the model was fitted with."""
    import sys

    from ..data.video import VideoDataset, VideoSampling
    from ..features.video_encode import encode_videos
    from ..methods.motif import explain_video, video_as_text

    if not hasattr(model, "video_sampling"):
        raise ConfigError(f"{paths[0]} is a video, but the model in {args.model} is a {model.name!r} "
                          "model, which explains images only; explain videos with a model fitted by "
                          "the 'motif' method.")
    sampling = model.video_sampling()
    if sampling is None:  # fitted on images: each window is one image, cut as the reference does
        sampling = VideoSampling()
        print(f"note: the model was not fitted on videos; cutting windows of {sampling.window} frames "
              "(the reference's default)", file=sys.stderr)
    data = VideoDataset("videos", model.classes_, np.zeros(len(paths), dtype=np.int64),
                        tuple(str(p) for p in paths), tuple(paths))
    feats = encode_videos(backbone, data, sampling, _cache(args), batch_size=args.batch_size,
                          workers=args.workers, progress=not args.no_progress)
    return [video_as_text(explain_video(model, feats, i, target=target, top=args.top), top=args.top)
            for i in range(len(feats))]


def _write_heatmaps(args, model, backbone, data, bundle, explained) -> None:
    """--heatmap: integrated-gradient heat maps of each image's top concepts (the union over the
    images, at most --top) through the backbone and the model, as one HTML page."""
    from .._io import write_text
    from ..explain.attribution import attribute
    from ..report.heatmaps import heatmap_section

    concepts = list(dict.fromkeys(c.concept for e in explained for c in e["top"]))[: args.top]
    index = {item: i for i, item in enumerate(data.ids)}
    images = [data.images.decode(index[i], data.images.read(index[i])) for i in bundle.ids]
    maps = attribute(backbone, model, images, concepts, n_steps=args.heatmap_steps)
    labels = [f"{Path(i).name}: {e['predicted']}" for i, e in zip(bundle.ids, explained, strict=True)]
    body = heatmap_section(images, maps, maps.targets, labels=labels,
                           title=f"Where the concepts of {getattr(model, 'name', 'the model')} look")
    write_text(args.heatmap, "<!doctype html><html><head><meta charset='utf-8'><title>conceptlens "
               f"heat maps</title></head><body>{body}</body></html>")
    print(f"heat maps -> {args.heatmap}", file=sys.stderr)


def cmd_explain(args) -> int:
    from ..data import ImageDataset
    from ..data.images import FileImages
    from ..explain.contributions import as_text, explain_image
    from ..features import encode_dataset

    model, backbone = _load(args)
    paths = [Path(p) for p in args.images]
    is_video = [p.suffix.lower() in EXPLAIN_VIDEO_SUFFIXES for p in paths]
    target = None if args.target is None else _class_index(model, args.target)
    images = [p for p, v in zip(paths, is_video, strict=True) if not v]
    texts: list[str] = []
    if images:
        data = ImageDataset("images", model.classes_, np.zeros(len(images), dtype=np.int64),
                            tuple(str(p) for p in images), FileImages(images))
        bundle = encode_dataset(backbone, data, _cache(args), batch_size=args.batch_size,
                                workers=args.workers, progress=not args.no_progress)
        explained = [explain_image(model, bundle, i, target=target, top=args.top) for i in range(len(bundle))]
        texts = [as_text(e) for e in explained]
        if args.heatmap:
            _write_heatmaps(args, model, backbone, data, bundle, explained)
    videos = [p for p, v in zip(paths, is_video, strict=True) if v]
    video_texts = _explain_videos(args, model, backbone, videos, target) if videos else []
    # in the order the files were given
    for v in is_video:
        print((video_texts if v else texts).pop(0))
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

    p = sub.add_parser("explain", help="why a saved model classifies images (or videos: a motif model, "
                       "top concepts per window) as it does")
    common(p, data=False)
    p.add_argument("images", nargs="+",
                   help=f"image files, or video files ({', '.join(EXPLAIN_VIDEO_SUFFIXES)})")
    p.add_argument("--target", help="explain this class's score (default: the prediction)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--heatmap", metavar="OUT.html",
                   help="also write heat maps of where each image's top concepts look (integrated "
                        "gradients through the backbone; needs a differentiable backbone and captum)")
    p.add_argument("--heatmap-steps", type=int, default=32, help="integrated-gradient steps (default 32)")
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
