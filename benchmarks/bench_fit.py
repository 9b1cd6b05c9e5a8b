"""The demo's fit stage on a warm feature cache: time it, profile it, compare two source trees.

    .venv/bin/python benchmarks/bench_fit.py [--repeats 3] [--profile out.prof] [--out results.json]

The stages before the fit (data, encode from the warm cache, concepts) run once, exactly as
`conceptlens demo` runs them: `runs.experiment.fit_and_evaluate` is intercepted the first time
it is called, which captures its arguments; then `fit_and_evaluate` itself is timed `--repeats`
times on them (every method of the demo and VLG-CBM's NEC = 5 layer for each, what the run's
`fit` stage measures). `--per-method` also times each method's fit and NEC evaluation alone.
The per-method top-1 and NEC = 5 figures are recorded beside the times, so two trees (before /
after a change) are compared on both: run it with PYTHONPATH pointing at each tree, in turn,
and on a loaded machine interleave the runs and compare medians.

Run the demo once first (`conceptlens demo`) so the feature cache is warm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


class _Captured(Exception):
    pass


def capture_fit_inputs(cfg):
    """(methods, train, val, test, context, nec, protocol) as run_experiment would pass them."""
    from conceptlens.runs import experiment

    real = experiment.fit_and_evaluate
    box = {}

    def stub(*args, **kwargs):
        box["args"], box["kwargs"] = args, kwargs
        raise _Captured

    experiment.fit_and_evaluate = stub
    try:
        experiment.run_experiment(cfg, write=False)
    except _Captured:
        pass
    finally:
        experiment.fit_and_evaluate = real
    if "args" not in box:
        raise SystemExit("run_experiment never reached fit_and_evaluate")
    return box["args"], box["kwargs"]


def summary(results: dict) -> dict:
    keep = ("top1", "top5", "nec", "top1_at_nec", "nec_at_nec")
    if results is None:
        return {}
    return {name: {k: row.get(k) for k in keep if k in row} for name, row in results.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", help="write a cProfile of one fit stage here (after the timed repeats)")
    ap.add_argument("--per-method", action="store_true", help="also time each method alone")
    ap.add_argument("--methods", help="comma-separated subset of the demo's methods")
    ap.add_argument("--out", help="write the record (JSON) here")
    args = ap.parse_args(argv)

    import numpy as np  # noqa: F401  (imports before timing)
    import torch

    from conceptlens.demo import demo_config
    from conceptlens.runs import experiment

    cfg = demo_config(progress=False)
    if args.methods:
        cfg.methods = {k: v for k, v in cfg.methods.items() if k in args.methods.split(",")}
    t = time.perf_counter()
    fargs, fkwargs = capture_fit_inputs(cfg)
    prepare = time.perf_counter() - t
    times, results = [], None
    for _ in range(args.repeats):
        t = time.perf_counter()
        results, _ = experiment.fit_and_evaluate(*fargs, **fkwargs)
        times.append(time.perf_counter() - t)
    per_method = {}
    if args.per_method:
        methods, rest = fargs[0], fargs[1:]
        for name, params in methods.items():
            t = time.perf_counter()
            experiment.fit_and_evaluate({name: params}, *rest, **fkwargs)
            per_method[name] = time.perf_counter() - t
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        experiment.fit_and_evaluate(*fargs, **fkwargs)
        prof.disable()
        prof.dump_stats(args.profile)
    record = {"fit_seconds": times, "median_s": statistics.median(times) if times else None, "prepare_s": prepare,
              "per_method_s": per_method, "results": summary(results),
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "loadavg_at_end": list(os.getloadavg()), "python": sys.version.split()[0]}
    print(json.dumps(record, indent=1, default=float))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
