"""The ``guide-unlearn`` command line: erase, apply, merge, info (and convert / download for checkpoints)."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module
from typing import Optional, Sequence

from guide_unlearn.errors import GuideUnlearnError

# The commands, imported explicitly by build_parser (an import error propagates). Each module exposes
# add_parser(subparsers); its parser sets `func(args) -> int`.
COMMAND_MODULES = ("guide_unlearn.cli.erase", "guide_unlearn.cli.patches", "guide_unlearn.cli.convert",
                   "guide_unlearn.cli.hub", "guide_unlearn.cli.audit", "guide_unlearn.cli.batch",
                   "guide_unlearn.cli.download")

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


VERBOSE_HELP = "log progress details, and print the traceback of an internal error"


def build_parser() -> argparse.ArgumentParser:
    """The top-level argument parser with every available sub-command. ``-v`` is accepted before and after the
    sub-command; ``--version`` prints the library version."""
    from guide_unlearn import __version__

    parser = argparse.ArgumentParser(
        prog="guide-unlearn",
        description="Make a pretrained face generator forget a person (GUIDE) with small LoRA forget patches.",
        epilog="Errors exit with status 2 and one line saying what to do; internal errors exit with 1 (re-run with "
               "-v for the traceback).")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"guide-unlearn {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="what to do (`COMMAND --help` for its options)")
    sub.required = True
    for name in COMMAND_MODULES:
        # Every command ships with the package: a module that fails to import is a bug and must fail loudly here,
        # never silently vanish from --help.
        import_module(name).add_parser(sub)
    for command in sub.choices.values():  # `guide-unlearn erase ... -v` works as well as `guide-unlearn -v erase`
        if not any("-v" in a.option_strings for a in command._actions):
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help=VERBOSE_HELP)
    return parser


class ProgressSafeHandler(logging.StreamHandler):
    """Log lines written through ``tqdm.write``: a warning never lands on (or is overdrawn by) a progress bar's line;
    the bars are redrawn below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script. Errors exit non-zero with one clear line on stderr. The commands import
    torch and the models only when they run, so ``--version``, ``--help`` and argument errors answer at once."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = ProgressSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        return int(args.func(args) or 0)
    except GuideUnlearnError as e:
        message = getattr(e, "cli_message", None) or str(e)
        print(f"guide-unlearn {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"guide-unlearn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: still one line, with the exception type for bug reports
        if args.verbose:
            raise
        print(f"guide-unlearn {args.command}: internal error: {type(e).__name__}: {' '.join(str(e).split())} "
              f"(re-run with -v for the traceback: guide-unlearn -v {args.command} ...)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
