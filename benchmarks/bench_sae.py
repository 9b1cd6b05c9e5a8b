"""SAE training speed: conceptlens.discovery.train_sae against the DN-CBM reference training loop, same
data, same width, same penalty, side by side in one run; time to the same reconstruction MSE and L0.

    .venv/bin/python benchmarks/bench_sae.py                 # full: n=50k, d=512, h=4096, 20 epochs
                                                             # (~40 min on 2 cores, mostly the reference)
    .venv/bin/python benchmarks/bench_sae.py --quick         # a ~1 minute smoke run
    .venv/bin/python benchmarks/bench_sae.py --features pool.npy   # real features (n, d)
    .venv/bin/python benchmarks/bench_sae.py --features ~/.cache/conceptlens/features/<key> --key features

The peer (``RefSAE`` + ``train_reference``) is the reference's training loop re-implemented in plain
torch from neuroexplicit-saar/Discover-then-Name @03484ba (dncbm/custom_pipeline.py,
scripts/train_sae.py) and its vendored ai-safety-foundation ``sparse_autoencoder``
(autoencoder/model.py, components/{tied_bias, linear_encoder, unit_norm_decoder}.py,
loss/{decoded_activations_l2, learned_activations_l1, reducer, abstract_loss}.py,
activation_resampler/activation_resampler.py, optimizer/adam_with_reset.py), run as the reference runs
it: parameters with the component axis (n_components=1), einsum forward, autograd, the decoder's
gradient hook, torch Adam (default implementation), ``post_backwards_hook`` renormalisation,
``DataLoader(store, batch_size, shuffle=True)`` over a per-item store, the fired-count accumulation,
and the resampler every rf epochs. Left out, in the peer's favour: wandb logging and the per-batch
train metrics (feature density, capacity, L0, neuron activity) the reference computes for it; and the
resampler's 819,200-input requirement (it would refuse a 50k pool), replaced by min(n, 819,200) as ours.
``sae-lens`` (PyPI) was not used as the peer: it trains on language-model activations through its own
runner, and the reference loop is what DN-CBM ran.

Protocol: both train from the reference initialisation (each its own seeded draw) for ``--epochs``
epochs; after every epoch, off the clock, each model is evaluated in fp32 on the same held-out rows
(MSE averaged over features, as the reference's L2 loss; L0 = mean active latents per row). The target
is the peer's final (MSE, L0); a run's time to target is its cumulative training time (resampling
included) at the first epoch where MSE <= target MSE * (1 + tol) and L0 <= target L0 * (1 + tol).
Rows: the peer; ours in fp32 at the reference batch (engineering only: analytic fused step, no
DataLoader); ours with ``precision='auto'`` (bf16 matmuls where the CPU has them) at the reference batch;
and the same with a smaller batch (more Adam steps per epoch: the "sensible batch"), which may reach
the target in fewer epochs. Writes benchmarks/results/sae.json. Timings need a quiet machine: other
processes on the same cores distort every row (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from conceptlens.discovery.sae import resolve_precision, train_sae

RESULTS = Path(__file__).resolve().parent / "results" / "sae.json"


# -- data ------------------------------------------------------------------------------------------
def clip_like(n: int, d: int, seed: int = 0, norm: float = 10.0) -> np.ndarray:
    """Rows that look like raw CLIP image embeddings: a shared offset (CLIP's narrow cone), a sparse
    non-negative mix of ~12 of 4d directions per image with heavy-tailed strengths, and anisotropic
    dense noise with a power-law spectrum; mean row norm `norm`."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=d)
    mu *= 5.0 / np.linalg.norm(mu)
    k = 4 * d
    atoms = rng.normal(size=(k, d)).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    freq = rng.dirichlet(np.full(k, 0.5)) * 12.0          # uneven concept frequencies
    X = np.empty((n, d), dtype=np.float32)
    spec = (np.arange(1, d + 1) ** -0.5).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    for s in range(0, n, 10_000):
        m = min(10_000, n - s)
        A = (rng.random((m, k)) < np.minimum(freq, 1.0)) * rng.lognormal(0.0, 0.5, size=(m, k))
        noise = (rng.normal(size=(m, d)).astype(np.float32) * spec) @ basis
        X[s:s + m] = mu + A.astype(np.float32) @ atoms * 2.0 + noise * 1.5
    return X * (norm / np.linalg.norm(X, axis=1).mean())


def load_features(path: str, key: str) -> np.ndarray:
    """(n, d) float32 from a .npy file, a .safetensors file, or a folder of safetensors shards (a
    conceptlens feature cache entry: each shard holds 'embedding' and 'features')."""
    from safetensors.numpy import load_file

    p = Path(path)
    if p.suffix == ".npy":
        return np.load(p).astype(np.float32)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    return np.concatenate([load_file(str(f))[key] for f in files]).astype(np.float32)


# -- the reference loop (peer) -----------------------------------------------------------------------
class RefSAE(torch.nn.Module):
    """sparse_autoencoder.SparseAutoencoder(n_input_features=d, n_learned_features=h, n_components=1)."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.tied_bias = torch.nn.Parameter(torch.zeros(1, d))            # geometric median unused: 0
        self.enc_w = torch.nn.Parameter(torch.empty(1, h, d))
        self.enc_b = torch.nn.Parameter(torch.zeros(1, h))
        torch.nn.init.kaiming_uniform_(self.enc_w, nonlinearity="relu")   # fan_in = h * d (3-D tensor)
        bound = 1 / math.sqrt(self.enc_w.size(1))
        torch.nn.init.uniform_(self.enc_b, -bound, bound)
        self.dec_w = torch.nn.Parameter(torch.empty(1, d, h))
        torch.nn.init.normal_(self.dec_w, mean=0, std=1)
        self.constrain_weights_unit_norm()
        self.dec_w.register_hook(self._weight_backward_hook)

    def constrain_weights_unit_norm(self):
        with torch.no_grad():
            torch.nn.functional.normalize(self.dec_w, dim=-2, out=self.dec_w)

    def _weight_backward_hook(self, grad):
        normalized = self.dec_w / torch.norm(self.dec_w, dim=-2, keepdim=True)
        scalar = torch.einsum("...li,...li->...i", grad, normalized)
        return grad - torch.einsum("...i,...li->...li", scalar, normalized)

    def forward(self, x):  # x: (B, 1, d)
        x = x - self.tied_bias
        f = torch.relu(torch.einsum("bci,cli->bcl", x, self.enc_w) + self.enc_b)
        return f, torch.einsum("bcl,cil->bci", f, self.dec_w) + self.tied_bias


def ref_itemwise_loss(x, f, x_hat, l1):
    """LossReducer(LearnedActivationsL1Loss(l1), L2ReconstructionLoss()).forward: (B, 1)."""
    l1_item = torch.abs(f).sum(dim=-1) * l1
    l2_item = torch.nn.functional.mse_loss(x, x_hat, reduction="none").mean(dim=-1)
    return torch.stack([l1_item, l2_item]).sum(dim=0)


class Store(Dataset):
    """TensorActivationStore: one (n_components, d) item per index."""

    def __init__(self, X: torch.Tensor):
        self._data = X.unsqueeze(1)

    def __len__(self):
        return self._data.shape[0]

    def __getitem__(self, index):
        return self._data[index]


def ref_resample(model, opt, store, fired_since, l1, batch, dataset_size):
    """ActivationResampler.resample_dead_neurons + Pipeline.update_parameters (one component)."""
    dead = torch.where(fired_since[0] <= 0)[0]
    if dead.numel() == 0:
        return 0
    with torch.no_grad():
        losses, inputs = [], []
        n_inputs = min(dataset_size, len(store))
        for i, b in enumerate(DataLoader(store, batch_size=batch, shuffle=True)):
            inputs.append(b)
            f, x_hat = model(b)
            losses.append(ref_itemwise_loss(b, f, x_hat, l1))
            if i >= n_inputs // batch:
                break
        loss, inputs = torch.cat(losses), torch.cat(inputs)
        p = loss.pow(2) / loss.pow(2).sum(0)
        pick = torch.multinomial(p[:, 0], num_samples=dead.numel())
        sampled = inputs[pick, 0, :]
        alive = fired_since[0] > 0
        avg = model.enc_w[0][alive].norm(dim=-1).mean()
        xn = torch.nn.functional.normalize(sampled, dim=-1)
        model.enc_w[0, dead] = xn * (avg * 0.2)
        model.enc_b[0, dead] = 0.0
        model.dec_w[0, :, dead] = xn.T
        for param, axis in ((model.enc_w, -2), (model.enc_b, -1), (model.dec_w, -1)):
            st = opt.state[param]
            if st:
                st["exp_avg"][0].index_fill_(axis, dead, 0)
                st["exp_avg_sq"][0].index_fill_(axis, dead, 0)
    return int(dead.numel())


def train_reference(X, h, l1, lr, epochs, batch, resample_every, seed, on_epoch):
    torch.manual_seed(seed)
    d = X.shape[1]
    model = RefSAE(d, h)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    store = Store(torch.from_numpy(X))
    fired_since = torch.zeros(1, h, dtype=torch.int64)
    since = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        fired = torch.zeros(1, h, dtype=torch.int64)
        for b in DataLoader(store, batch_size=batch, shuffle=True):
            opt.zero_grad()
            f, x_hat = model(b)
            loss = ref_itemwise_loss(b, f, x_hat, l1).mean(0).mean(0)
            with torch.no_grad():
                fired.add_((f > 0).sum(dim=0))
            loss.backward()
            opt.step()
            model.constrain_weights_unit_norm()
        resampled = 0
        if resample_every and epoch + resample_every < epochs - 1:
            fired_since += fired
            since += 1
            if since >= resample_every:
                resampled = ref_resample(model, opt, store, fired_since, l1, batch, 819_200)
                fired_since.zero_()
                since = 0
        seconds = time.perf_counter() - t0
        on_epoch(epoch, seconds, resampled, {
            "b_pre": model.tied_bias.detach()[0], "W_enc": model.enc_w.detach()[0],
            "b_enc": model.enc_b.detach()[0], "W_dec": model.dec_w.detach()[0]})


# -- protocol ---------------------------------------------------------------------------------------
def evaluate(params, Xev: torch.Tensor) -> tuple[float, float]:
    """Held-out reconstruction MSE (mean over rows and features) and L0, in fp32."""
    with torch.no_grad():
        f = torch.relu((Xev - params["b_pre"]) @ params["W_enc"].T + params["b_enc"])
        x_hat = f @ params["W_dec"].T + params["b_pre"]
        return float((x_hat - Xev).square().mean()), float((f > 0).sum(1).float().mean())


def recorder(Xev):
    curve, clock = [], [0.0]

    def on_epoch(epoch, seconds, resampled, params):
        clock[0] += seconds
        mse, l0 = evaluate(params, Xev)
        curve.append({"epoch": epoch, "train_seconds": round(clock[0], 3), "epoch_seconds": round(seconds, 3),
                      "eval_mse": mse, "eval_L0": l0, "resampled": resampled})
        print(f"    epoch {epoch:3d}  {seconds:7.2f}s  mse {mse:.5g}  L0 {l0:.1f}", flush=True)

    return curve, on_epoch


def time_to(curve, mse_t, l0_t, tol):
    for r in curve:
        if r["eval_mse"] <= mse_t * (1 + tol) and r["eval_L0"] <= l0_t * (1 + tol):
            return r["train_seconds"], r["epoch"]
    return None, None


def run_ours(Xtr, Xev, args, precision, batch):
    curve, on_epoch = recorder(Xev)
    t0 = time.perf_counter()
    train_sae(Xtr, expansion=args.expansion, l1=args.l1, lr=args.lr, epochs=args.epochs, batch_size=batch,
              resample_every=args.resample_every, seed=args.seed, precision=precision,
              callback=lambda e, rec, p: on_epoch(e, rec["seconds"], rec["resampled"], p))
    return curve, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", help="pool features instead of synthetic: .npy, .safetensors, or a "
                    "feature-cache folder of safetensors shards")
    ap.add_argument("--key", default="embedding", help="array name in safetensors files (embedding/features)")
    ap.add_argument("--norm", type=float, default=10.0, help="mean row norm of the synthetic features")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--n-eval", type=int, default=5_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--l1", type=float, default=3e-5)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--small-batch", type=int, default=1024)
    ap.add_argument("--resample-every", type=int, default=10)
    ap.add_argument("--tol", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="n=6000, d=128, 6 epochs, batch 1024/256")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_eval, args.d, args.epochs, args.batch, args.small_batch = 6000, 1000, 128, 6, 1024, 256
        args.resample_every = 2

    if args.features:
        X = load_features(args.features, args.key)
        rng = np.random.default_rng(args.seed)
        X = X[rng.permutation(len(X))]
        n_eval = min(args.n_eval, len(X) // 10)
        Xev, Xtr = X[:n_eval], X[n_eval:]
        source = f"features {args.features} [{args.key}]"
    else:
        X = clip_like(args.n + args.n_eval, args.d, args.seed, args.norm)
        Xev, Xtr = X[:args.n_eval], X[args.n_eval:]
        source = f"synthetic clip_like (mean norm {args.norm})"
    n, d = Xtr.shape
    h = args.expansion * d
    Xev_t = torch.from_numpy(np.ascontiguousarray(Xev))
    print(f"SAE benchmark: {source}, n={n} (+{len(Xev)} held out), d={d}, h={h}, l1={args.l1}, "
          f"lr={args.lr}, epochs={args.epochs}, torch threads={torch.get_num_threads()}", flush=True)
    load0 = os.getloadavg()

    # warm both up (allocator, oneDNN kernels, DataLoader) so that no row pays first-call costs
    warm = Xtr[:min(n, 2 * args.batch)]
    train_reference(warm, h, args.l1, args.lr, 1, args.batch, 0, args.seed, lambda *a: None)
    for prec in ("float32", "auto"):
        train_sae(warm, expansion=min(args.expansion, len(warm) // d), l1=args.l1, lr=args.lr, epochs=1,
                  batch_size=args.batch, resample_every=0, precision=prec)

    runs = {}
    print("  reference loop (peer), fp32 autograd, batch", args.batch, flush=True)
    curve, on_epoch = recorder(Xev_t)
    t0 = time.perf_counter()
    train_reference(Xtr, h, args.l1, args.lr, args.epochs, args.batch, args.resample_every, args.seed,
                    on_epoch)
    runs["reference"] = {"batch": args.batch, "precision": "float32", "curve": curve,
                         "wall_seconds": round(time.perf_counter() - t0, 2)}
    auto = resolve_precision("auto")
    for name, prec, batch in (("ours_fp32", "float32", args.batch), (f"ours_{auto}", "auto", args.batch),
                              (f"ours_{auto}_batch{args.small_batch}", "auto", args.small_batch)):
        print(f"  {name}: precision {resolve_precision(prec)}, batch {batch}", flush=True)
        curve, wall = run_ours(Xtr, Xev_t, args, prec, batch)
        runs[name] = {"batch": batch, "precision": resolve_precision(prec), "curve": curve,
                      "wall_seconds": round(wall, 2)}

    final = runs["reference"]["curve"][-1]
    target = {"eval_mse": final["eval_mse"], "eval_L0": final["eval_L0"], "tol": args.tol}
    t_ref, _ = time_to(runs["reference"]["curve"], final["eval_mse"], final["eval_L0"], args.tol)
    summary = {}
    for name, r in runs.items():
        t, ep = time_to(r["curve"], final["eval_mse"], final["eval_L0"], args.tol)
        last = r["curve"][-1]
        summary[name] = {
            "batch": r["batch"], "precision": r["precision"],
            "median_epoch_seconds": float(np.median([c["epoch_seconds"] for c in r["curve"]])),
            "seconds_to_target": t, "epoch_reached": ep,
            "speedup_vs_reference": (round(t_ref / t, 2) if t else None),
            "final_eval_mse": last["eval_mse"], "final_eval_L0": last["eval_L0"]}
    fp32, low = runs["ours_fp32"]["curve"][-1], runs[f"ours_{auto}"]["curve"][-1]
    precision_effect = {"precision": auto, "final_eval_mse_fp32": fp32["eval_mse"],
                        "final_eval_mse": low["eval_mse"], "final_eval_L0_fp32": fp32["eval_L0"],
                        "final_eval_L0": low["eval_L0"],
                        "mse_rel_diff": (low["eval_mse"] - fp32["eval_mse"]) / fp32["eval_mse"]}
    out = {
        "what": "SAE training: DN-CBM reference loop vs conceptlens train_sae, time to the reference's final "
                "held-out (MSE, L0)",
        "data": source, "n_train": n, "n_eval": len(Xev), "d": d, "h": h, "l1": args.l1, "lr": args.lr,
        "epochs": args.epochs, "resample_every": args.resample_every, "quick": args.quick,
        "target": target, "summary": summary, "precision_effect": precision_effect,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"target": target, "summary": summary, "precision_effect": precision_effect}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
