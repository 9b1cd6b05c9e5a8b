"""argparse types for numeric flags: a bad value is a usage error (exit 2) naming the flag, before
any work, never numpy's or the OS's exception from deep inside (a negative seed, `nan` MiB)."""

from __future__ import annotations

import argparse
import math

MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2**32)


def finite_float(text: str) -> float:
    """A finite number: float() also reads 'nan' and 'inf', which no flag means."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def mebibytes(text: str) -> float:
    """A size in MiB: > 0 and at most 1 TiB (a larger one overflows once turned into bytes)."""
    value = positive_float(text)
    if value > 2**20:
        raise argparse.ArgumentTypeError(f"{text!r} MiB is over 1 TiB (1048576 MiB)")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r} must be a random seed, an integer in [0, {MAX_SEED}]")
    return value
