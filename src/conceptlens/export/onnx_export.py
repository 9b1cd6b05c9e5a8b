"""The whole model (backbone image tower + concept layer + final layer) as one ONNX file, run by
ONNX Runtime (the `export` extra: onnx, onnxscript, onnxruntime).

    path = export_onnx(model, backbone, "model.onnx")       # checked against PyTorch on a probe batch
    session = OnnxModel(path)
    session.predict_proba(pixels)                            # pixels = export_torch(...).prepare(images)

The graph's input is "pixels" (n, 3, s, s) float32, the backbone's prepared images (any n); its outputs
are "probabilities" (n, m), "logits" (n, m) and "concepts" (n, k). The file's metadata records the
classes, concepts, method and backbone (spec and id) as JSON strings, so it can be read on its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_write
from .._version import __version__
from ..errors import ConfigError, DataError
from .torch_module import ExportedModel, export_torch

__all__ = ["OPSET", "OnnxModel", "export_onnx"]

OPSET = 18
OUTPUTS = ("probabilities", "logits", "concepts")
EXPORT_TOLERANCE = 1e-5  # the most |ONNX - PyTorch| a probability may differ by on the probe batch


class _Graph(nn.Module):
    def __init__(self, exported: ExportedModel):
        super().__init__()
        self.exported = exported

    def forward(self, pixels):
        logits, concepts = self.exported(pixels)
        return torch.softmax(logits, dim=-1), logits, concepts


def _requires():
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install 'conceptlens[export]'.")


def _probe(exported: ExportedModel, backbone, n: int = 3) -> torch.Tensor:
    """A probe batch: n random photo-like images through the backbone's own preprocessing."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48 + 8 * i, 56, 3), dtype=np.uint8) for i in range(n)]
    return exported.prepare(images) if backbone is not None else None


def export_onnx(model, backbone, path: str | Path, *, overwrite: bool = False,
                probe: torch.Tensor | None = None) -> Path:
    """Write `model` with `backbone` as one ONNX file at `path` (atomically; an existing file only with
    overwrite=True), check it against the PyTorch module on a probe batch (`probe`: prepared pixels;
    default three random images) and return the path. DataError when ONNX Runtime's probabilities differ
    from PyTorch's by more than 1e-5."""
    _requires()
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass overwrite=True to replace it.")
    exported = model if isinstance(model, ExportedModel) else export_torch(model, backbone)
    x = _probe(exported, backbone) if probe is None else probe
    example = x[:2] if len(x) >= 2 else torch.cat([x, x])
    graph = _Graph(exported).eval()
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["pixels"], output_names=list(OUTPUTS),
                                        dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1)}},
                                        verbose=False)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    import onnx

    proto = program.model_proto
    meta = {"conceptlens": __version__, "method": getattr(exported.head, "method", ""),
            "classes": json.dumps(list(exported.classes)), "concepts": json.dumps(list(exported.concepts)),
            "backbone_spec": exported.backbone_spec, "backbone_id": exported.backbone_id,
            "input": "pixels (n, 3, s, s): the backbone's prepared images", "input_shape": json.dumps(
                list(example.shape[1:]))}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=f"conceptlens.{k}", value=str(v))
    # one self-contained file, written whole or not at all
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp), save_as_external_data=False))
    with torch.no_grad():
        want = exported.predict_proba(x).numpy()
    got = OnnxModel(path).predict_proba(x.numpy())
    gap = float(np.abs(got - want).max())
    if not gap <= EXPORT_TOLERANCE:
        path.unlink(missing_ok=True)
        raise DataError(f"the ONNX export of {meta['method']!r} differs from PyTorch by {gap:.2e} in a "
                        f"probability on the probe batch (allowed {EXPORT_TOLERANCE:g}); nothing was "
                        "written.")
    return path


class OnnxModel:
    """An exported ONNX model on ONNX Runtime: `run(pixels)` -> {"probabilities", "logits", "concepts"};
    `classes`, `concepts`, `method`, `backbone_spec` from the file's metadata."""

    def __init__(self, path: str | Path, threads: int | None = None):
        _requires()
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for a bad file
            raise DataError(f"{self.path} is not a readable ONNX model ({type(e).__name__}: {e}).") from e
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k.removeprefix("conceptlens."): v for k, v in props.items()}
        self.classes = tuple(json.loads(self.meta.get("classes", "[]")))
        self.concepts = tuple(json.loads(self.meta.get("concepts", "[]")))
        self.method = self.meta.get("method", "")
        self.backbone_spec = self.meta.get("backbone_spec", "")

    def run(self, pixels) -> dict[str, np.ndarray]:
        x = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else pixels
        out = self.session.run(list(OUTPUTS), {"pixels": np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(OUTPUTS, out, strict=True))

    def predict_proba(self, pixels) -> np.ndarray:
        """softmax of the logits in float64 (as the model's predict_proba)."""
        z = self.run(pixels)["logits"].astype(np.float64)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
