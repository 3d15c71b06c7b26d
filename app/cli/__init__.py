"""The ``plangate`` command line: parsing, wiring, and the one place errors become exit codes.

Exit codes: 0 success, 1 policy or budget denial (a decision, not an error), 2 invalid input,
3 anything else went wrong (the message says what; set PLANGATE_DEBUG=1 for a traceback).
Each command group lives in its own module under ``app.cli`` and registers itself in
``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from app import __version__
from app.errors import InputError, PlangateError

__all__ = ["COMMAND_MODULES", "main"]

#: modules that define ``register(subparsers)``; each adds its commands
COMMAND_MODULES: tuple[str, ...] = (
    "app.cli.check",
    "app.cli.attest",
    "app.cli.explain",
    "app.cli.audit",
    "app.cli.serve",
    "app.cli.deliveries",
    "app.cli.propose",
    "app.cli.run",
    "app.cli.execute",
    "app.cli.queue",
)

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_INVALID = 2
EXIT_ERROR = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plangate",
        description="Plangate: reviewed, budgeted, attested operational plans.",
    )
    parser.add_argument("--version", action="version", version=f"plangate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"plangate: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_INVALID
    except PlangateError as exc:
        print(f"plangate: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("plangate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: never show a raw traceback
        if os.environ.get("PLANGATE_DEBUG"):
            raise
        print(
            f"plangate: internal error: {type(exc).__name__}: {exc}\n"
            "Set PLANGATE_DEBUG=1 to see the traceback, and please report it.",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
