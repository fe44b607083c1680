"""Command line: ``convision segment|classify|localize|detect ...``, ``convision summary``, ``convision inspect``, ``convision demo``,
``convision serve``, ``convision style``.

One module per command; each only parses its arguments, calls :mod:`convision.tasks` and prints.
Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal error,
130 interrupted. ``--debug`` (anywhere on the line) shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from typing import Sequence

from convision import __version__
from convision.cli import (
    classify,
    common,
    demo,
    detect,
    inspect,
    localize,
    segment,
    serve,
    style,
    summary,
)
from convision.errors import ConvisionError

COMMANDS = {
    "segment": segment,
    "classify": classify,
    "localize": localize,
    "detect": detect,
    "summary": summary,
    "inspect": inspect,
    "style": style,
    "demo": demo,
    "serve": serve,
}


def build_parser() -> argparse.ArgumentParser:
    parser = common.Parser(
        prog="convision",
        description="Classic CNN vision: train, evaluate and run "
        "segmentation, classification, localization and detection models.",
    )
    parser.add_argument(
        "--version", action="version", version=f"convision {__version__}"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks on errors"
    )
    tasks = parser.add_subparsers(
        dest="task", metavar="TASK", parser_class=common.Parser
    )
    tasks.required = True
    for module in COMMANDS.values():
        module.add_parser(tasks)
    return parser


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """Warnings as one line, without the source line Python prints by default."""
    return f"convision: warning: {_one_line(message) if isinstance(message, BaseException) else message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
        common.check_runtime(args)
        return COMMANDS[args.task].run(args)
    except ConvisionError as e:
        if debug:
            traceback.print_exc()
        print(f"convision: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convision: interrupted", file=sys.stderr)
        return 130
    except (
        Exception
    ) as e:  # a bug in convision, or an error a DataLoader worker wrapped
        wrapped = _wrapped_convision_error(e)
        if debug:
            traceback.print_exc()
        if wrapped is not None:
            print(f"convision: error: {wrapped}", file=sys.stderr)
            return 2
        hint = "" if debug else " (run with --debug for the traceback)"
        print(
            f"convision: internal error: {type(e).__name__}: {_one_line(e)}{hint}",
            file=sys.stderr,
        )
        return 1


def _one_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _wrapped_convision_error(e: BaseException) -> str | None:
    """DataLoader workers re-raise errors with the worker's traceback in the message."""
    text = str(e)
    for line in reversed(text.strip().splitlines()):
        for name in ("DataError", "ConfigError", "CheckpointError", "ConvisionError"):
            marker = f"convision.errors.{name}: "
            if line.startswith(marker):
                return line[len(marker) :]
    return None
