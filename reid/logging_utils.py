"""One logging set-up call for the tools, and their common entry point ``tool_main``.

The library only uses ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import errno
import logging
import sys

from .errors import ReidError

#: OS errors a user causes and fixes (full disk, read-only or forbidden path): one line, not a bug.
USER_OS_ERRORS = (
    errno.ENOSPC,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EDQUOT,
    errno.ENOENT,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def error_line(exc: BaseException) -> str:
    """The one line shown for an expected failure.

    A DataLoader worker re-raises its exception in the main process with the worker's whole
    traceback as the message; only its last line (the original message) is shown.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        name = type(exc).__name__
        text = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    if isinstance(exc, OSError) and not isinstance(exc, ReidError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def is_expected(exc: BaseException) -> bool:
    if isinstance(exc, ReidError):
        return True
    return isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS


def tool_main(main, parser) -> None:
    """Run a tool's ``main(args)``; an expected failure becomes one ``error: …`` line, exit 2."""
    setup_logging()
    args = parser.parse_args()
    try:
        main(args)
    except Exception as exc:
        if not is_expected(exc):
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
