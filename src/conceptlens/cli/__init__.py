"""Command line: a thin layer over the Python API (`conceptlens --help`)."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .._version import __version__
from ..errors import ConceptLensError, UsageError
from ..progress import set_progress
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


EPILOG = """\
output: -v/--verbose (INFO logs; -vv DEBUG; the traceback of an internal error) and -q/--quiet
(no progress bars, only errors logged; results still print) go before or after the command.
Progress bars go to stderr, only on a terminal (CONCEPTLENS_PROGRESS=1/0 forces them).

exit codes: 0 success; 1 internal error (a bug in conceptlens; -v shows the traceback);
2 usage error (a malformed command line, or a flag value the command refuses); 3 config or data
error (a config, dataset, model or missing extra: the message says what to fix); 130 interrupted.
"""

# exit codes (docs/guides/reliability.md): scripts can tell a mistyped command from bad input from a bug
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _output_flags(parser: argparse.ArgumentParser, after: bool) -> None:
    """-v/-q on `parser`: the top-level flags, or (`after`) their copies on a subcommand, stored
    apart and combined in main (so `-v CMD -v` is -vv)."""
    pre = "after_" if after else ""
    try:
        parser.add_argument("-v", "--verbose", action="count", default=0, dest=pre + "verbose",
                            help="more output: INFO logs (-vv: DEBUG) and tracebacks of internal errors")
        parser.add_argument("-q", "--quiet", action="store_true", dest=pre + "quiet",
                            help="no progress bars, only errors logged (results still print)")
    except argparse.ArgumentError:  # a command with its own -v or -q keeps it
        pass


def _subcommands(parser: argparse.ArgumentParser):
    """Every (sub)subcommand's parser below `parser`, each once."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield child
                    yield from _subcommands(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conceptlens", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"conceptlens {__version__}")
    _output_flags(parser, after=False)
    sub = parser.add_subparsers(dest="command", required=True)
    data_commands.add_commands(sub)
    concept_commands.add_commands(sub)
    model_commands.add_commands(sub)
    discover_commands.add_commands(sub)
    serve_commands.add_commands(sub)
    init_commands.add_commands(sub)
    for child in _subcommands(parser):
        _output_flags(child, after=True)
    return parser


def _output_settings(args) -> None:
    """Fold the flags given after the command into args.verbose / args.quiet."""
    args.verbose = getattr(args, "verbose", 0) + getattr(args, "after_verbose", 0)
    args.quiet = bool(getattr(args, "quiet", False) or getattr(args, "after_quiet", False))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits EXIT_USAGE (argparse's 2) here
    _output_settings(args)
    level = logging.ERROR if args.quiet else (
        logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    # the package's logger too: basicConfig leaves an already configured root (a caller's) as it is
    ours = logging.getLogger("conceptlens")
    ours_level = ours.level
    if args.quiet or args.verbose:
        ours.setLevel(level)
    forced = args.quiet or getattr(args, "no_progress", False)  # --no-progress: every bar, not only encoding's
    previous = set_progress(False) if forced else None
    try:
        return _dispatch(args)
    finally:
        ours.setLevel(ours_level)
        if forced:
            set_progress(previous)


def _dispatch(args) -> int:
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
    except BrokenPipeError:  # the reader went away (`conceptlens backbones | head -1`): not a bug
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_INTERNAL
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
