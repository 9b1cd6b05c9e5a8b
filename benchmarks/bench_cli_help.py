"""`conceptlens --help` wall time (#25: under one second; it took 3.3-4.2 s when every command module
imported torch and scikit-learn at parse time). Not a unit test: a timing on a loaded machine is noise.

    python benchmarks/bench_cli_help.py [--runs 5]

Prints the best and median of fresh interpreters running `python -m conceptlens --help`, and the
heavy packages the parse imported (none expected).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "sklearn", "scipy", "pydantic", "transformers", "fastapi")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "conceptlens", "--help"], check=True, capture_output=True)
        seconds.append(time.perf_counter() - start)
    probe = ("import sys; from conceptlens.cli import build_parser; build_parser().format_help(); "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    print(f"conceptlens --help: best {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s "
          f"over {runs} runs; heavy packages imported: {heavy or 'none'}")


if __name__ == "__main__":
    main()
