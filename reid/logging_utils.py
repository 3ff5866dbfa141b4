"""One logging set-up call for the tools, and their common entry point ``tool_main``.

The library only uses ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import sys

from .atomic import TEMP_PREFIX, USER_OS_ERRORS, user_error
from .errors import ReidError


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def error_line(exc: BaseException) -> str:
    """The text shown for an expected failure: the whole message (a reason that lists files
    keeps its list), the user's path and the reason for an OS error.

    A DataLoader worker re-raises its exception in the main process with the worker's whole
    traceback as the message; only its last line (the original message) is shown.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        name = type(exc).__name__
        text = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    elif isinstance(exc, OSError) and not isinstance(exc, ReidError):
        reason = USER_OS_ERRORS.get(exc.errno, exc.strerror or text)
        name = str(exc.filename) if exc.filename else ""
        if TEMP_PREFIX in name:  # never a temp name: the folder the user chose instead
            name = name.split(TEMP_PREFIX)[0].rstrip("/") or "."
        text = f"{name}: {reason}" if name else reason
    return text.strip() or type(exc).__name__


def expected_error(exc: BaseException) -> BaseException | None:
    """``exc`` as the expected failure to show, or None for a bug (a full disk that torch or
    FAISS report as ``RuntimeError`` becomes its one-line ``OutputError``)."""
    if isinstance(exc, ReidError) or (isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS):
        return exc
    return user_error(exc, ".") if isinstance(exc, RuntimeError) else None


def one_line_parse_errors(parser) -> None:
    """argparse's own errors (a bad flag or value) as one ``error: …`` line, exit status 2."""

    def error(message: str):
        print(f"error: {message} (see {parser.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error


def tool_main(main, parser) -> None:
    """Run a tool's ``main(args)``: an expected failure becomes one ``error: …`` line, exit 2
    (an interruption: exit 130, saying what was kept); anything else is a bug, with traceback."""
    setup_logging()
    one_line_parse_errors(parser)
    try:  # overrides (positionals) may come after flags: train --output DIR a.b=c
        args = parser.parse_intermixed_args()
    except TypeError:  # a parser intermixed parsing cannot handle
        args = parser.parse_args()
    try:
        main(args)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing after the last completed write was kept",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None
    except Exception as exc:
        shown = expected_error(exc)
        if shown is None:
            raise
        print(f"error: {error_line(shown)}", file=sys.stderr)
        raise SystemExit(getattr(shown, "exit_code", 2)) from None
