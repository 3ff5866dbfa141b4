"""Output folders a tool may replace: only what it can prove it wrote.

A tool that writes a folder leaves a marker in it (``.reid-output.json``, naming the tool that
wrote it); the index format's own ``manifest.json`` is an index folder's proof. Before replacing
anything a tool calls :func:`check_replaceable`, which accepts a folder that does not exist, an
empty folder, or one carrying the tool's marker, and otherwise raises :class:`OutputError` with
one line saying what it found. :func:`check_no_overlap` refuses an output that is, contains, or
lies inside one of the tool's inputs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OutputError

MARKER = ".reid-output.json"


def write_marker(folder: str | Path, kind: str, **info) -> None:
    """Mark ``folder`` as written by the ``kind`` tool (e.g. ``synthetic``, ``split``)."""
    data = {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
    (Path(folder) / MARKER).write_text(json.dumps(data, indent=1))


def marker_kind(folder: str | Path) -> str | None:
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("kind")
    except (json.JSONDecodeError, AttributeError):
        return None


def check_replaceable(
    folder: str | Path,
    kind: str,
    how: str,
    proof: Callable[[Path], bool] | None = None,
) -> bool:
    """Raise unless ``folder`` is absent, empty, or provably written by the ``kind`` tool.

    ``proof`` may accept other evidence (e.g. an index manifest). ``how`` ends the message: what
    the user can do instead. Returns True when the folder exists and may be replaced.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return False
    if not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; {how}")
    if not any(folder.iterdir()):
        return False
    if marker_kind(folder) == kind or (proof is not None and proof(folder)):
        return True
    found = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(found[:4]) + (f", … ({len(found)} entries)" if len(found) > 4 else "")
    raise OutputError(f"{folder}: holds files this tool did not write ({shown}); {how}")


def _resolve(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_no_overlap(out: str | Path, inputs: Iterable[str | Path], flag: str = "--out") -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs``."""
    target = _resolve(out)
    for source in inputs:
        src = _resolve(source)
        if target == src or src in target.parents or target in src.parents:
            raise OutputError(
                f"{flag} {out} overlaps the input {source}: write the output to a separate folder"
            )


def check_writable_parent(out: str | Path, flag: str = "--out") -> None:
    """Create ``out``'s parent folder if needed and make sure it can be written, before any work."""
    parent = Path(out).absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {out}: cannot create {parent} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: {parent} is not writable")
