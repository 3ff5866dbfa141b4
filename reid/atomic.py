"""The one way a file reaches its final name: atomically, under a temp name that records its owner.

Every tool writes through :func:`atomic_path` (or the ``write_*`` helpers on top of it):

* the new content goes to a temp name in the target's own folder, ``.~reid.PID.XXXXXX.SUFFIX``
  (short whatever the target's name: a legal 255-character name still has room for its temp,
  and the owner's process id is in the name), is fsync'ed, renamed over the target, and the
  folder is fsync'ed: readers see the old file or the new one, never half of one;
* on any failure the temp is removed and the target is untouched; a process killed mid-write
  leaves a temp whose owner is gone, which :func:`clean_stale_temps` removes at the next start
  (temps of a live process, another export in the same parent say, are never touched);
* the target keeps its permission bits (a new file gets the umask's), and a target that is a
  symbolic link is refused: renaming over it would silently replace the link by a file;
* expected OS failures become one :class:`~reid.errors.OutputError` naming the *user's* path,
  never the temp: disk full (also when torch or FAISS report it as a ``RuntimeError``), a name
  too long, no permission, a read-only file system.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

TEMP_PREFIX = ".~reid."
_TEMP = re.compile(r"^\.~reid\.(\d+)\.")
#: OS errors a user causes and fixes: their message names the path and the reason
USER_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder",
    errno.EEXIST: "already exists",
}
#: below this many free bytes, a library's write failure is a full disk
_FULL_BYTES = 1 << 20


def temp_path(target: str | Path, tag: str = "") -> Path:
    """A fresh temp name beside ``target``: ``.~reid.PID.XXXXXX[tag][suffix]``."""
    target = Path(target)
    suffix = target.suffix if len(target.suffix) <= 16 else ""
    return target.parent / f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(3)}{tag}{suffix}"


def temp_owner(name: str) -> int | None:
    """The process id recorded in a temp name, or None for any other name."""
    match = _TEMP.match(name)
    return int(match.group(1)) if match else None


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temps in ``folder`` whose owner process is gone; returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        pid = temp_owner(path.name)
        if pid is None or process_alive(pid):
            continue
        remove_path(path)
        removed.append(path)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _fsync(path: Path, recursive: bool = False) -> None:
    """fsync a file or a folder's entry table; ``recursive``: a folder we wrote (a staged temp),
    with everything in it. Sockets, FIFOs and devices are not data and are never opened (a
    folder that holds one, like /tmp, is still synced as a folder)."""
    if recursive and path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _fsync(child, recursive=True)
    mode = path.lstat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def user_error(exc: BaseException, target: str | Path) -> OutputError | None:
    """The one-line error for an expected failure while writing ``target``, or None (a bug)."""
    parent = Path(target).absolute().parent
    if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
        return OutputError(f"{target}: cannot write ({USER_OS_ERRORS[exc.errno]})", exc.errno)
    if isinstance(exc, (RuntimeError, OSError)):
        text = str(exc).lower()
        full = "no space left" in text or "errno 28" in text
        if not full:
            try:
                stat = os.statvfs(parent)
                full = stat.f_bavail * stat.f_frsize < _FULL_BYTES
            except OSError:
                full = False
        if full:
            return OutputError(
                f"{target}: cannot write ({USER_OS_ERRORS[errno.ENOSPC]})", errno.ENOSPC
            )
    return None


def check_not_link(target: Path) -> None:
    if target.is_symlink():
        raise OutputError(
            f"{target}: is a symbolic link; writing would replace the link by a file "
            "(write to the link's target, or remove the link)"
        )


@contextmanager
def atomic_path(target: str | Path, tag: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it becomes ``target`` atomically.

    The body writes a file (or a folder) at the yielded path. See the module docstring.
    """
    target = Path(target)
    check_not_link(target)
    tmp = temp_path(target, tag)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temp of {target}")
        mode = (target.stat().st_mode & 0o7777) if target.is_file() else _umask_mode()
        if tmp.is_file():
            os.chmod(tmp, mode)
        _fsync(tmp, recursive=True)
        os.replace(tmp, target)
        _fsync(target.absolute().parent)  # the rename itself: the folder's entries, not its files
    except BaseException as exc:
        remove_path(tmp)
        error = user_error(exc, target)
        if error is not None:
            raise error from None
        raise


def write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | Path, text: str) -> Path:
    return write_bytes(target, text.encode())


def json_safe(value):
    """``value`` with every NaN/inf float replaced by None: strict JSON (jq, JavaScript, Go)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # NumPy scalars
        return json_safe(value.item())
    return value


def json_text(value, indent: int | None = 1) -> str:
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json(target: str | Path, value, indent: int | None = 1) -> Path:
    return write_text(target, json_text(value, indent) + "\n")
