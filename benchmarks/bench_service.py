"""Load test of `conceptlens serve` on loopback, beside the same work called in-process.

    .venv/bin/python benchmarks/bench_service.py [--model runs/demo/models/label_free]
        [--backbone offline] [--images FOLDER] [--requests 200] [--concurrency 1 4 16]

The service runs in a child process (uvicorn on 127.0.0.1, a free port), so its memory is its
own. For each endpoint and each number of concurrent clients (threads, one keep-alive HTTP
connection each) it sends a bounded number of requests and records requests/s, p50/p99
latency and errors; then it does the same work in-process (ModelService, the object behind
the endpoints) with as many threads. The difference is the service's overhead.
- `predict`: POST /predict of Fashion-MNIST test images (PNG bytes) or --images; the service's
  image cache is off, so every request decodes and runs the backbone, as a new image would.
- `intervene`: POST /intervene with one concept set, on images already sent (the head only:
  mostly HTTP and JSON).
The service's resident memory (RSS) is read before the first level and after each one: flat
means no leak under load. Writes benchmarks/results/service.json and service.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_images(folder: str | None, n: int) -> list[bytes]:
    if folder:
        from conceptlens.service.explorer import find_images

        return [p.read_bytes() for p in find_images(Path(folder))[:n]]
    from PIL import Image

    from conceptlens.data import load_fashion_mnist

    data = load_fashion_mnist(split="test")
    out = []
    for i in np.random.default_rng(0).permutation(len(data))[:n]:
        buffer = io.BytesIO()
        Image.fromarray(data.images.decode(int(i), data.images.read(int(i)))).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def child(args) -> None:
    """The service process: serve, print the URL, run until stdin closes."""
    from conceptlens.service.app import ModelService, ServerThread, create_app

    service = ModelService(args.model, args.backbone, cache_dir=args.cache_dir)
    app = create_app(args.model, service=service)

    @app.post("/_bench/image-cache/{size}", include_in_schema=False)
    def set_cache(size: int) -> dict:  # the load test turns the image cache off for /predict
        service.image_cache = size
        service._cache.clear()  # a smaller size only evicts on the next insert: start empty
        return {"image_cache": size}

    with ServerThread(app) as url:
        print(url, flush=True)
        sys.stdin.read()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    a = np.asarray(latencies) * 1000
    return (float(np.percentile(a, 50)), float(np.percentile(a, 99))) if len(a) else (float("nan"),) * 2


def run_level(call, n_requests: int, concurrency: int, make_state) -> dict:
    """`call(state, i)` -> ok (bool); `concurrency` threads share a counter up to n_requests."""
    lock = threading.Lock()
    counter = iter(range(n_requests))
    latencies: list[float] = []
    errors = [0]

    def worker():
        state = make_state()
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    ok = call(state, i)
                except Exception:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok
        finally:
            if hasattr(state, "close"):
                state.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    p50, p99 = percentiles(latencies)
    return {"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / wall,
            "p50_ms": p50, "p99_ms": p99, "seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/demo/models/label_free")
    ap.add_argument("--backbone", default="offline")
    ap.add_argument("--cache-dir")
    ap.add_argument("--images", help="a folder of images (default: Fashion-MNIST test images)")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--requests", type=int, default=200, help="requests per level (at least 8 per client)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--out", default="benchmarks/results/service.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import httpx

    from conceptlens.service.app import ModelService

    images = load_images(args.images, args.n_images)
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--backbone", args.backbone]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"the service did not start (got {url!r})")
        service = ModelService(args.model, args.backbone, cache_dir=args.cache_dir)
        concept = service.model.concepts_[0]

        # warm both sides (models loaded, first-call costs paid) and register the images for /intervene
        with httpx.Client(base_url=url, timeout=120) as c:
            ids = [c.post("/predict", content=im).json()["image_id"] for im in images]
            c.post("/_bench/image-cache/0")
        for im in images:
            service.predict(im)
        service.image_cache = 0  # as in the service: /predict encodes every image
        service._cache.clear()  # the warm-up's entries would otherwise answer every request
        rss_before = rss_mb(proc.pid)
        rss_in_process_before = rss_mb(os.getpid())

        rows, rss_trace = [], [{"after": "warm-up", "service_mb": rss_before}]
        for endpoint in ("predict", "intervene"):
            for conc in args.concurrency:
                n = max(args.requests, 8 * conc)
                if endpoint == "predict":
                    def http_call(client, i):
                        return client.post("/predict", content=images[i % len(images)]).status_code == 200

                    def local_call(_, i):
                        return bool(service.predict(images[i % len(images)]))
                else:
                    # the images encoded once, so /intervene finds them (the cache back on)
                    with httpx.Client(base_url=url, timeout=120) as c:
                        c.post(f"/_bench/image-cache/{len(images)}")
                        ids = [c.post("/predict", content=im).json()["image_id"] for im in images]
                    service.image_cache = len(images)
                    local_ids = [service.predict(im)["image_id"] for im in images]

                    def http_call(client, i, ids=ids):
                        body = {"image_id": ids[i % len(ids)], "values": {concept: 0.0}}
                        return client.post("/intervene", json=body).status_code == 200

                    def local_call(_, i, local_ids=local_ids):
                        return bool(service.intervene(local_ids[i % len(local_ids)], {concept: 0.0}))

                http = run_level(http_call, n, conc, lambda: httpx.Client(base_url=url, timeout=120))
                local = run_level(local_call, n, conc, lambda: None)
                for mode, r in (("http", http), ("in-process", local)):
                    rows.append({"endpoint": endpoint, "mode": mode, "concurrency": conc, **r})
                rss_trace.append({"after": f"{endpoint} x{conc}", "service_mb": rss_mb(proc.pid)})
                print(f"{endpoint:9s} c={conc:2d}  http {http['rps']:7.1f} req/s p50 "
                      f"{http['p50_ms']:7.1f} ms p99 {http['p99_ms']:7.1f} ms err {http['errors']}  |  "
                      f"in-process {local['rps']:7.1f} req/s p50 {local['p50_ms']:7.1f} ms", flush=True)
    finally:
        proc.stdin.close()
        proc.wait(30)

    out = {"model": args.model, "method": service.model.name, "backbone_id": service.model.backbone_id_,
           "images": len(images), "requests_per_level": args.requests, "levels": rows,
           "rss": rss_trace, "rss_service_growth_mb": rss_trace[-1]["service_mb"] - rss_before,
           "rss_in_process_mb": {"before": rss_in_process_before, "after": rss_mb(os.getpid())},
           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()}}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text(markdown(out))
    print(f"-> {path}, {path.with_suffix('.md')}")


def markdown(out: dict) -> str:
    lines = [f"Service load test: {out['method']} ({out['model']}), {out['images']} images, "
             f"{out['requests_per_level']} requests per level, loopback, {out['machine']['cpu_count']} CPUs.",
             "", "| endpoint | clients | HTTP req/s | HTTP p50 / p99 ms | errors | in-process req/s | "
                 "in-process p50 / p99 ms | overhead p50 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    levels = out["levels"]
    for r in levels:
        if r["mode"] != "http":
            continue
        local = next(x for x in levels if x["mode"] == "in-process" and x["endpoint"] == r["endpoint"]
                     and x["concurrency"] == r["concurrency"])
        lines.append(f"| {r['endpoint']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.1f} / "
                     f"{r['p99_ms']:.1f} | {r['errors']} | {local['rps']:.1f} | {local['p50_ms']:.1f} / "
                     f"{local['p99_ms']:.1f} | {r['p50_ms'] - local['p50_ms']:+.1f} |")
    trace = ", ".join(f"{t['after']} {t['service_mb']:.0f}" for t in out["rss"])
    lines += ["", f"Service RSS (MB): {trace}; growth {out['rss_service_growth_mb']:+.1f} MB."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
