"""The one exception type for expected failures.

Every failure a user can cause and fix (a bad setting, a missing or corrupt file, an infeasible
sampler, an output folder the tool did not write) raises a subclass of :class:`ReidError` whose
message names the file or setting. The tools' common entry point (``logging_utils.tool_main``)
prints it as one ``error: …`` line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class ReidError(ValueError):
    """An expected failure; the message names the offending file or setting."""


class OutputError(ReidError):
    """An output path the tool may not write: it holds something the tool cannot prove it wrote,
    or it overlaps the tool's input; or an OS error while writing (``errno`` says which)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class CheckpointError(ReidError, FileNotFoundError):
    """A missing or unreadable checkpoint, or one whose weights do not fit its config."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), at most
    ``limit`` characters: a library's reason inside one of our error lines."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
