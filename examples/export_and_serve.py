"""Export a fitted concept bottleneck model: a torch.nn.Module, one ONNX file, a save_pretrained folder
with a model card, and the Hub upload (here to a local stand-in for the Hub).

Runs in seconds on one CPU core, offline: the backbone is a tiny random CLIP saved as an `hf:` folder
(conceptlens.testing.save_tiny_hf), the images are coloured noise. With the offline default backbone
(`get_backbone("offline")`) or any `hf:` CLIP the calls are the same.

    python examples/export_and_serve.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from conceptlens.backbones import get_backbone
from conceptlens.export import (
    OnnxModel,
    export_onnx,
    export_torch,
    from_pretrained,
    push_to_hub,
    save_pretrained,
)
from conceptlens.features import FeatureBundle
from conceptlens.methods import Context, get_method
from conceptlens.testing import save_tiny_hf

CLASSES = ("red", "green", "blue")
CONCEPTS = ["red paint", "green leaves", "blue sky", "bright light", "dark shadow", "round shape"]


def coloured_images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = []
    for c in labels:
        im = rng.integers(0, 80, (40, 40, 3), dtype=np.uint8)
        im[..., c] += 150
        images.append(im)
    return images, labels


class LocalHub:
    """What push_to_hub asks of huggingface_hub.HfApi, writing to a local folder (no network here)."""

    def __init__(self, root: Path):
        self.root = root

    def create_repo(self, repo_id, repo_type="model", private=False, exist_ok=False):
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, folder_path, repo_id, repo_type="model", revision=None, commit_message=None):
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return f"{self.root / repo_id}"


def main() -> None:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="conceptlens-export-"))
    try:
        # 1. a backbone and features (an hf: folder: the model records its absolute path)
        backbone = get_backbone(f"hf:{save_tiny_hf(work / 'tiny-clip')}")
        images, labels = coloured_images(60)
        enc = backbone.encode_images(images)
        ids = [f"img/{i}" for i in range(len(images))]

        def bundle(part):
            return FeatureBundle(ids[part], labels[part], CLASSES, enc["embedding"][part], None, backbone.id,
                                 embedding_norm=enc["embedding_norm"][part])

        train, test = bundle(slice(0, 45)), bundle(slice(45, 60))
        prompts = backbone.encode_texts([f"a photo of {c}" for c in CLASSES])
        context = Context(CLASSES, CONCEPTS, backbone.encode_texts(CONCEPTS), class_embedding=prompts,
            backbone_id=backbone.id, preprocess_id=backbone.preprocess_id,
            backbone_spec=backbone.spec)

        # 2. fit a Post-hoc CBM (any linear-bottleneck method exports the same way)
        model = get_method("posthoc", lam=1e-3).fit(train, context)
        want = model.predict_proba(test)
        accuracy = float((model.predict(test) == test.labels).mean())

        # 3. the whole model as a torch.nn.Module: prepared pixels -> (logits, concept activations)
        module = export_torch(model, backbone)
        pixels = module.prepare(images[45:])
        with torch.no_grad():
            logits, concepts = module(pixels)
            torch_gap = float(np.abs(module.predict_proba(pixels).numpy() - want).max())
        print(f"torch module: logits {tuple(logits.shape)}, concepts {tuple(concepts.shape)}; "
              f"max |p - predict_proba| = {torch_gap:.1e}")

        # 4. one ONNX file (image tower + concept layer + final layer), run by ONNX Runtime
        onnx_path = export_onnx(model, backbone, work / "model.onnx")
        onnx_gap = float(np.abs(OnnxModel(onnx_path).predict_proba(pixels) - want).max())
        print(f"ONNX ({onnx_path.stat().st_size / 1e6:.1f} MB): max |p - predict_proba| = {onnx_gap:.1e}")
        assert torch_gap < 1e-5 and onnx_gap < 1e-5

        # 5. save_pretrained / from_pretrained: the model, its card (README.md) and card.json
        folder = save_pretrained(model, work / "colours-posthoc", metrics={"top1": accuracy})
        again = from_pretrained(folder)
        assert np.array_equal(again.predict_proba(test), want)
        print(f"save_pretrained: {sorted(p.name for p in folder.iterdir())}; reopens {again.backbone_spec_}")

        # 6. the Hub: push_to_hub(folder, "you/colours") with $HF_TOKEN set; here a local stand-in
        print("pushed to", push_to_hub(folder, "me/colours-posthoc", api=LocalHub(work / "hub")))
        # serve it: conceptlens serve <folder> (the model's own backbone is reopened from its spec)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
