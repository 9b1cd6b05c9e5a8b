"""Command line: a thin layer over the Python API (`conceptlens --help`)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import ConceptLensError
from . import (
    concept_commands,
    data_commands,
    discover_commands,
    init_commands,
    model_commands,
    serve_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conceptlens", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    data_commands.add_commands(sub)
    concept_commands.add_commands(sub)
    model_commands.add_commands(sub)
    discover_commands.add_commands(sub)
    serve_commands.add_commands(sub)
    init_commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except ConceptLensError as e:
        print(f"conceptlens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("conceptlens: interrupted; finished work is cached and a rerun resumes.",
              file=sys.stderr)
        return 130
