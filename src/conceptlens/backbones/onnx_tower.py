"""The offline backbone's image tower (EfficientNet-Lite0 -> pooled features, ImageNet logits)
run by ONNX Runtime: 11x the images/s of the PyTorch CPU forward here, 7x for the whole encode
stage (`benchmarks/bench_encode.py`), with the same outputs to float rounding.

The tower is exported once per (weights, image size, exporter, opset) to `<cache>/onnx/` with
torch's own exporter, written atomically, and checked against the PyTorch forward on a probe
batch every time a session opens: a file that no longer computes what PyTorch computes (a bad
export, a damaged or edited file) is refused with a warning and the PyTorch path is used, so
the faster path can never give a silently different answer. An ONNX file is a graph and its
weights, no code, so loading one made here is safe.

Outputs differ from the PyTorch path's by float rounding only (cosine to the PyTorch features
>= 0.999999 on the probe and the tests), yet that rounding can move a table's last digit (label_free
79.8 vs 79.7 on the demo), so each runtime has its own feature-cache identity (`runtime_of`,
`Backbone.runtime_id`): a cache never mixes them. The model's backbone id is the same for both, so
a model fitted on one runtime is explained and served on the other.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write, cache_root
from ..errors import ConfigError

log = logging.getLogger(__name__)

OPSET = 18
MIN_COSINE = 0.999  # the probe's bar; measured values are ~0.9999998
RUNTIMES = ("auto", "onnx", "torch")


class TorchTower(torch.nn.Module):
    """pixels (n, 3, s, s) -> (pooled features (n, 1280), logits (n, 1000)): what is exported."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        feats = self.model._avg_pooling(self.model.extract_features(x)).flatten(1)
        return feats, self.model._fc(feats)


def onnx_available() -> str | None:
    """None when ONNX Runtime can be used, else why not (for 'auto' and the error of 'onnx')."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'conceptlens[fast]')"
    return None


def _export(tower: TorchTower, size: int, path: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript") if _missing(m)]
    if missing:
        raise ImportError(f"exporting needs {', '.join(missing)} (pip install 'conceptlens[fast]')")
    example = torch.zeros(2, 3, size, size)
    # the exporter narrates its passes on stdout and in INFO logs: keep a user's output clean
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(tower, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["pixels"], output_names=["features", "logits"],
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                                        verbose=False)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    # one self-contained file (18 MB), not a graph plus an external-data file to keep together
    atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))


def _missing(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return True
    return False


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((num / den).min())


class OnnxTower:
    """A callable like TorchTower on (n, 3, s, s) float tensors, run by ONNX Runtime."""

    def __init__(self, session, threads: int):
        self.session, self.threads = session, threads

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)  # what ORT reads
        feats, logits = self.session.run(None, {"pixels": pixels})
        return torch.from_numpy(feats), torch.from_numpy(logits)


def onnx_file(folder: Path, weights_fp: str, size: int) -> Path:
    return folder / f"efficientnet-lite0@{weights_fp}-{size}px-opset{OPSET}-torch{torch.__version__}.onnx"


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # as many as torch may use (a Ray actor's CPUs, a user's cap)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between calls: decoding and resizing run on the same cores in between
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def probe_cosine(tower, torch_tower: TorchTower, size: int) -> float:
    """Smallest cosine between `tower`'s and PyTorch's features and logits on a fixed batch."""
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (3, 3, size, size)).astype(np.float32))
    with torch.inference_mode():
        want = [t.numpy() for t in torch_tower(x)]
    got = [t.numpy() for t in tower(x)]
    return min(_cosine(g, w) for g, w in zip(got, want, strict=True))


_WARNED = False  # the missing-onnxruntime warning, once per process
_SESSIONS: dict[tuple, OnnxTower] = {}
_EXPORTED: dict[tuple, Path] = {}  # files this process exported or checked, to copy, not export again


def _load(torch_tower: TorchTower, weights_fp: str, size: int, folder: Path, threads: int) -> OnnxTower:
    key = (weights_fp, size, str(folder), threads)
    if key not in _SESSIONS:
        path = onnx_file(folder, weights_fp, size)
        done = _EXPORTED.get((weights_fp, size))
        if not path.is_file() and done is not None and done.is_file():
            atomic_write(path, lambda tmp: shutil.copyfile(done, tmp))  # another cache folder's
        if not path.is_file():
            log.info("Exporting the offline image tower to ONNX (once): %s", path)
            _export(torch_tower, size, path)
        fast = OnnxTower(_session(path, threads), threads)
        cos = probe_cosine(fast, torch_tower, size)
        if cos < MIN_COSINE:
            raise ValueError(f"{path} computes features with cosine {cos:.6f} to the PyTorch forward "
                             f"(< {MIN_COSINE}); delete it to export it again")
        _SESSIONS[key], _EXPORTED[(weights_fp, size)] = fast, path
    return _SESSIONS[key]


def image_tower(model, weights_fp: str, size: int, runtime: str = "auto",
                cache_dir: str | Path | None = None):
    """The tower to encode with: ONNX Runtime for 'onnx', and for 'auto' where it is installed
    and its export checks out (else PyTorch, saying why); PyTorch for 'torch'. `cache_dir` is
    the run's cache folder (the ONNX file goes in its onnx/), None = the user cache."""
    torch_tower = TorchTower(model).eval()
    if runtime == "torch":
        return torch_tower
    why = onnx_available()
    if why is None:
        folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / "onnx"
        try:
            return _load(torch_tower, weights_fp, size, folder, torch.get_num_threads())
        except Exception as e:  # an exporter or runtime failure must not stop encoding
            why = f"{type(e).__name__}: {e}"
            log.warning("Encoding with the PyTorch image tower: ONNX Runtime failed (%s).", why)
    if runtime == "onnx":
        raise ConfigError(f"runtime=onnx was asked for but cannot be used: {why}. Use runtime=auto "
                          "or runtime=torch.")
    global _WARNED
    if why.startswith("onnxruntime is not installed") and not _WARNED:  # the slow default, said once
        _WARNED = True
        log.warning("onnxruntime is missing: the offline backbone encodes with PyTorch, ~7x slower; "
                    "pip install 'conceptlens[fast]' for the fast path (runtime=torch hides this).")
    else:
        log.info("Encoding with the PyTorch image tower (%s).", why)
    return torch_tower


def runtime_of(tower) -> str:
    """'onnx' or 'torch': part of the feature cache's identity (the two agree to float rounding
    only, which can move a table's last digit)."""
    return "onnx" if isinstance(tower, OnnxTower) else "torch"
