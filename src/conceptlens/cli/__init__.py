"""Command line: a thin layer over the Python API (`conceptlens --help`)."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from ..errors import ConceptLensError, UsageError
from . import (
    concept_commands,
    data_commands,
    discover_commands,
    init_commands,
    model_commands,
    serve_commands,
)

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.


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


# exit codes (docs/guides/reliability.md): scripts can tell a mistyped command from bad input from a bug
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits EXIT_USAGE (argparse's 2) here
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")
    try:
        if getattr(args, "cache_dir", None):  # before any work: a read-only cache fails at the end
            from ..runs.record import check_writable_dir

            check_writable_dir(args.cache_dir, "--cache-dir")
        return args.func(args)
    except UsageError as e:
        print(f"conceptlens: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ConceptLensError as e:  # a config or data error: the message says what to fix
        print(f"conceptlens: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("conceptlens: interrupted; finished work is cached and a rerun resumes.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        print(f"conceptlens: internal error: {type(e).__name__}: {e}\nThis is a bug in conceptlens, not in "
              "your input; please report it with the command that caused it"
              + (":" if args.verbose else " (rerun with -v to include the traceback)."), file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return EXIT_INTERNAL
