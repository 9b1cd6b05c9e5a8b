"""Video figure: MoTIF vs frame averaging on the generated moving-fashion clips, and encode speed.

    .venv/bin/python benchmarks/fig_video.py            # -> benchmarks/results/video.{json,md}
    .venv/bin/python benchmarks/fig_video.py --per-class 20,5,10   # smaller, faster

Builds `moving-fashion` (data/moving_fashion.py: 4 order classes in two pairs, 2 presence
classes), encodes every clip window by window with the offline default backbone (fresh cache,
so the encode is cold and timed), and fits on the same window embeddings and concepts (the
Fashion-MNIST item names, raw strings as the reference embeds them):

* `motif` (methods/motif.py), selected on the validation clips;
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
DEFAULT_MOTIF = {"epochs": 300, "lr": 1e-2, "patience": 100, "seed": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", default="40,10,20", help="clips per class: train,val,test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--motif", default=json.dumps(DEFAULT_MOTIF),
                    help="motif parameters as JSON (the reference's are epochs=100, lr=1e-3)")
    ap.add_argument("--work", default=None, help="folder for clips and caches (default: a temp folder)")
    args = ap.parse_args()

    from conceptlens.backbones import get_backbone
    from conceptlens.data import load_fashion_mnist
    from conceptlens.data.moving_fashion import class_kinds, concept_names, generate_moving_fashion
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

    concepts = concept_names()
    ctx = Context(ds.classes, concepts, encode_texts(backbone, concepts, cache=work / "cache-text"),
                  backbone_id=backbone.id)
    split = np.asarray(ds.split)
    train, val, test = (videos.rows(np.flatnonzero(split == s)) for s in ("train", "val", "test"))
    order = np.asarray([kinds[ds.classes[y]] == "order" for y in test.labels])

    def scores(pred) -> dict:
        ok = np.asarray(pred) == test.labels
        return {"all": round(float(ok.mean()), 4), "order": round(float(ok[order].mean()), 4),
                "presence": round(float(ok[~order].mean()), 4)}

    params = json.loads(args.motif)
    t0 = time.perf_counter()
    motif = Motif(**params).fit(train, ctx, val)
    t_motif = time.perf_counter() - t0
    rows = {
        "motif": scores(motif.predict(test)),
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
        "classes": class_kinds(), "concepts": concepts, "backbone": backbone.id, "sampling": sampling.id,
        "motif_params": params, "motif_fit_s": round(t_motif, 1), "motif_epochs_run": motif.epochs_run_,
        "motif_val_accuracy": motif.selection_accuracy_, "generate_s": round(t_generate, 1),
        "accuracy": rows, "speed": speed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    write_json(RESULTS / "video.json", result)
    lines = ["| method | all | order classes | presence classes |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['all']:.1%} | {r['order']:.1%} | {r['presence']:.1%} |"
              for name, r in rows.items()]
    lines += ["", f"Test clips: {int(order.sum())} order (chance within a pair 50%), {int((~order).sum())} "
              f"presence. Encode: {speed['windows_per_s']} windows/s (decode + one frame per window of 8) "
              f"vs {speed['images_per_s']} images/s for the image encode stage; ratio "
              f"{speed['ratio_windows_to_images']}."]
    write_text(RESULTS / "video.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
