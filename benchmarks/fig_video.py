"""Video figure: MoTIF vs frame averaging on the generated moving-fashion clips, and encode speed.

    .venv/bin/python benchmarks/fig_video.py            # -> benchmarks/results/video.{json,md}
    .venv/bin/python benchmarks/fig_video.py --per-class 20,5,10   # smaller, faster

Builds `moving-fashion` (data/moving_fashion.py: 4 order classes in two pairs, 2 presence
classes), encodes every clip window by window with the offline default backbone (fresh cache,
so the encode is cold and timed), and fits on the same window embeddings and concepts, raw
strings as the reference embeds them (`--concepts`):

* `all` (default): the 6 item names, the 10 Fashion-MNIST class names and the 36 built-in
  Fashion-MNIST attributes (source `fashion-mnist-attributes`), 52 concepts;
* `items`, `classes`, `attributes`: one of those lists alone.

The item names alone carry little signal through the offline backbone (its image side is an
ImageNet classifier mapped into MiniLM text space): the frame-averaged CBM on them sat near chance
even on presence classes, and motif reached 75% on order classes. More concepts span more of the
embedding. Chosen on the VALIDATION clips only (never test), with the reference's
hyperparameters and then epochs 300 / lr 1e-3, 3e-3, 1e-2 (patience 100):

| concepts | hyperparameters | val accuracy |
|---|---|---|
| items | reference (100 epochs, lr 1e-3) | 0.500 |
| classes | reference | 0.617 |
| attributes | reference | 0.767 |
| all | reference | 0.850 |
| attributes | 300 epochs, lr 1e-3 / 3e-3 / 1e-2 | 0.867 / 0.867 / 0.917 |
| all | 300 epochs, lr 3e-3 / 1e-2 | 0.950 / 0.950 |

`TUNED_MOTIF` is the best on validation (the tie broken towards the reference's lr): the
reference's 100 epochs at lr 1e-3 stop before the training accuracy levels off on 240 clips
(4 batches per epoch, so 400 steps). Rows:

* `motif` with `TUNED_MOTIF`, over seeds 0, 1, 2 (mean, and each seed in the JSON), and
  `motif` with the reference's hyperparameters (seed 0); both selected on the validation clips;
* the frame-averaged CBM: the reference's "mean CBM" (a linear layer on time-averaged
  standardised concept activations, `fit_mean_cbm`);
* a linear probe on the mean window embedding (`fit_frame_averaged("linear_probe")`).

Accuracy is split into order classes (chance within a pair: 50%) and presence classes. Speed:
windows/s of the video encode (decode + one frame per window + backbone) against images/s of
the image encode stage (`encode_dataset`) on as many Fashion-MNIST test images, both cold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conceptlens._io import write_json, write_text

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# tuned on the validation clips (see the docstring); the method's own defaults are the reference's
TUNED_MOTIF = {"epochs": 300, "lr": 3e-3, "patience": 100}
SEEDS = (0, 1, 2)
CONCEPT_SETS = ("all", "items", "classes", "attributes")


def concept_lists(which: str) -> list[str]:
    from conceptlens.concepts.sources import get_source
    from conceptlens.data.fashion_mnist import FASHION_MNIST_CLASSES
    from conceptlens.data.moving_fashion import concept_names

    lists = {"items": concept_names(), "classes": list(FASHION_MNIST_CLASSES),
             "attributes": get_source("fashion-mnist-attributes").generate(list(FASHION_MNIST_CLASSES))
             .concepts.texts}
    return lists[which] if which != "all" else lists["items"] + lists["classes"] + lists["attributes"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", default="40,10,20", help="clips per class: train,val,test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--motif", default=json.dumps(TUNED_MOTIF),
                    help="motif parameters as JSON, fitted with seeds 0, 1, 2 (the reference's: epochs=100, "
                    "lr=1e-3, the method's defaults)")
    ap.add_argument("--concepts", default="all", choices=CONCEPT_SETS)
    ap.add_argument("--work", default=None, help="folder for clips and caches (default: a temp folder)")
    args = ap.parse_args()

    import torch

    from conceptlens.backbones import get_backbone
    from conceptlens.data import load_fashion_mnist
    from conceptlens.data.moving_fashion import class_kinds, generate_moving_fashion
    from conceptlens.data.video import VideoSampling
    from conceptlens.features.encode import encode_dataset, encode_texts
    from conceptlens.features.video_encode import encode_videos
    from conceptlens.methods.base import Context
    from conceptlens.methods.motif import Motif, fit_frame_averaged, fit_mean_cbm

    per_class = tuple(int(x) for x in args.per_class.split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="conceptlens-video-figure-"))
    t0 = time.perf_counter()
    ds, kinds = generate_moving_fashion(work / "clips", per_class=per_class, seed=args.seed)
    t_generate = time.perf_counter() - t0

    backbone = get_backbone("offline")
    sampling = VideoSampling()  # the reference's: windows of 8 frames, one frame each
    t0 = time.perf_counter()
    videos = encode_videos(backbone, ds, sampling, cache=work / "cache-video", progress=False)
    t_video = time.perf_counter() - t0
    n_windows = int(videos.lengths.sum())
    fm = load_fashion_mnist(split="test")
    images = fm.subset(np.arange(n_windows))
    t0 = time.perf_counter()
    encode_dataset(backbone, images, cache=work / "cache-image", progress=False)
    t_image = time.perf_counter() - t0

    concepts = concept_lists(args.concepts)
    ctx = Context(ds.classes, concepts, encode_texts(backbone, concepts, cache=work / "cache-text"),
                  backbone_id=backbone.id)
    split = np.asarray(ds.split)
    train, val, test = (videos.rows(np.flatnonzero(split == s)) for s in ("train", "val", "test"))
    order = np.asarray([kinds[ds.classes[y]] == "order" for y in test.labels])

    def scores(pred) -> dict:
        ok = np.asarray(pred) == test.labels
        return {"all": round(float(ok.mean()), 4), "order": round(float(ok[order].mean()), 4),
                "presence": round(float(ok[~order].mean()), 4)}

    # the encodes above ran with torch's default threads; the tiny fits below use one (on a shared
    # machine more threads only wait on each other)
    torch.set_num_threads(1)
    params = json.loads(args.motif)
    fits, per_seed = [], []
    for seed in SEEDS:
        t0 = time.perf_counter()
        motif = Motif(**{**params, "seed": seed}).fit(train, ctx, val)
        fits.append({"seed": seed, "fit_s": round(time.perf_counter() - t0, 1),
                     "epochs_run": motif.epochs_run_, "val_accuracy": round(motif.selection_accuracy_, 4)})
        per_seed.append(scores(motif.predict(test)))
        fits[-1]["test"] = per_seed[-1]
    t0 = time.perf_counter()
    reference = Motif(seed=0).fit(train, ctx, val)
    t_reference = time.perf_counter() - t0
    rows = {
        f"motif (tuned, mean of {len(SEEDS)} seeds)": {
            k: round(float(np.mean([r[k] for r in per_seed])), 4) for k in ("all", "order", "presence")},
        "motif (reference hyperparameters)": scores(reference.predict(test)),
        "frame-averaged CBM (reference mean CBM)": scores(fit_mean_cbm(train, ctx)(test)),
        "linear probe on mean embeddings": scores(
            fit_frame_averaged("linear_probe", train, ctx, val, on="embedding").predict(test.mean_bundle())),
        "linear probe on mean features": scores(
            fit_frame_averaged("linear_probe", train, ctx, val, on="features").predict(test.mean_bundle())),
    }
    speed = {"windows": n_windows, "videos": len(ds), "video_encode_s": round(t_video, 2),
             "windows_per_s": round(n_windows / t_video, 1), "images": n_windows,
             "image_encode_s": round(t_image, 2), "images_per_s": round(n_windows / t_image, 1),
             "ratio_windows_to_images": round((n_windows / t_video) / (n_windows / t_image), 3)}
    result = {
        "script": "benchmarks/fig_video.py", "per_class": list(per_class), "seed": args.seed,
        "classes": class_kinds(), "concept_set": args.concepts, "concepts": concepts, "backbone": backbone.id,
        "sampling": sampling.id, "motif_params": params, "motif_fits": fits,
        "motif_reference": {"fit_s": round(t_reference, 1), "epochs_run": reference.epochs_run_,
                            "val_accuracy": round(reference.selection_accuracy_, 4)},
        "generate_s": round(t_generate, 1),
        "accuracy": rows, "speed": speed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    write_json(RESULTS / "video.json", result)
    lines = ["| method | all | order classes | presence classes |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['all']:.1%} | {r['order']:.1%} | {r['presence']:.1%} |"
              for name, r in rows.items()]
    lines += ["", f"Test clips: {int(order.sum())} order (chance within a pair 50%), {int((~order).sum())} "
              f"presence; {len(concepts)} concepts ({args.concepts}); tuned motif {json.dumps(params)}, "
              f"per seed order accuracy {[r['order'] for r in per_seed]}, fit "
              f"{np.mean([f['fit_s'] for f in fits]):.0f} s each on one thread. Encode: "
              f"{speed['windows_per_s']} windows/s (decode of all 8 frames + one frame per window encoded) "
              f"vs {speed['images_per_s']} images/s for the image encode stage; ratio "
              f"{speed['ratio_windows_to_images']}."]
    write_text(RESULTS / "video.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
