"""Ownership per file: a tool replaces a file only when it can prove that reid wrote it.

Every folder a tool writes into holds a ledger, ``.reid-output.json``, listing each file (or
link) reid wrote there, with the tool that wrote it and a fingerprint of what was written: size
and modification time, a SHA-256 for files up to 8 MiB, the target of a link. Before any work
a tool calls :meth:`OutputFolder.prepare` with every name it is about to write:

* a name that does not exist may be written;
* a name the ledger lists, whose file still matches its fingerprint, may be replaced;
* anything else (the user's own file under that name, or a file of ours the user has since
  edited) is refused with one line, before any expensive work;
* every other file in the folder is never touched: a ledger entry licenses its own file only,
  and there is no folder-level licence to delete.

``prepare`` also checks that the folder can be written (by creating a probe, not with
``os.access``, which says yes to root on a read-only mount) and that every name fits the file
system. Writes go through :mod:`reid.atomic`. :func:`lock_folder` keeps two writers of the same
kind (two trainings into one run folder) apart. :func:`check_no_overlap` refuses an output that
is, contains or lies inside one of the tool's inputs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field

from . import atomic
from .boundary import RelativeName, Strict, parse
from .errors import OutputError

LEDGER = ".reid-output.json"
MARKER = LEDGER  # the name earlier versions used for the folder marker
_HASH_LIMIT = 8 << 20
NAME_MAX = 255


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path) -> dict | None:
    """What identifies the file (or link) at ``path`` as the one written; None if absent."""
    if path.is_symlink():
        return {"link": os.readlink(path)}
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    if path.is_dir():
        return {"folder": True}
    entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if stat.st_size <= _HASH_LIMIT:
        entry["sha256"] = sha256(path)
    return entry


def _matches(entry: dict, current: dict | None) -> bool:
    if current is None:
        return False
    keys = [k for k in ("link", "folder", "size", "sha256") if k in entry]
    if "sha256" not in entry and "size" in entry:
        keys.append("mtime_ns")
    return bool(keys) and all(entry.get(k) == current.get(k) for k in keys)


class OutputFolder:
    """The files one tool writes into one folder (``flag`` names the setting in messages)."""

    def __init__(self, folder: str | Path, tool: str, flag: str = "--out"):
        self.folder, self.tool, self.flag = Path(folder), tool, flag

    # ------------------------------------------------------------------------- the ledger
    @property
    def ledger_path(self) -> Path:
        return self.folder / LEDGER

    def _ledger(self) -> dict:
        try:
            text = self.ledger_path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise OutputError(f"{self.ledger_path}: cannot read the ledger ({exc})") from None
        return parse_ledger(text, self.ledger_path)

    def entries(self) -> dict:
        files = self._ledger().get("files")
        return files if isinstance(files, dict) else {}

    def kind(self) -> str | None:
        """The tool that made this folder (``run``, ``split``, ``synthetic``…), if reid did."""
        return self._ledger().get("kind")

    def owned(self, name: str) -> bool:
        entry = self.entries().get(name)
        return entry is not None and _matches(entry, fingerprint(self.folder / name))

    @contextmanager
    def _locked_ledger(self) -> Iterator[dict]:
        """Read-modify-write of the ledger under an exclusive lock (concurrent writers). The
        new ledger replaces the old atomically (``atomic.write_text``): a full disk or a crash
        leaves the old ledger whole, never half of one. The lock is on the ledger file itself;
        a writer that waited on a ledger since replaced locks the current one instead."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.ledger_path, os.O_RDONLY | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(self.ledger_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        try:
            with os.fdopen(os.dup(fd), "r") as handle:
                text = handle.read()
            data = parse_ledger(text, self.ledger_path)
            data.setdefault("kind", self.tool)
            files = data.setdefault("files", {})
            yield files
            atomic.write_text(self.ledger_path, json.dumps(data, indent=1, sort_keys=True))
        finally:
            os.close(fd)

    def record(self, names: Iterable[str]) -> None:
        """List ``names`` (as they are now on disk) as written by this tool."""
        with self._locked_ledger() as files:
            for name in names:
                current = fingerprint(self.folder / name)
                if current is None:
                    files.pop(name, None)
                else:
                    files[name] = {"tool": self.tool, **current}

    def forget(self, names: Iterable[str]) -> None:
        with self._locked_ledger() as files:
            for name in names:
                files.pop(name, None)

    def foreign(self, subfolder: str) -> list[str]:
        """Entries of ``subfolder`` (relative names) that reid did not write, or that changed
        since: for outputs whose every file has meaning (a dataset's image folders), where an
        extra file would silently become data."""
        folder = self.folder / subfolder
        if not folder.is_dir():
            return []
        entries = self.entries()
        out = []
        for path in sorted(folder.iterdir()):
            name = f"{subfolder}/{path.name}"
            if atomic.temp_owner(path.name) is not None:
                continue
            entry = entries.get(name)
            if entry is None or not _matches(entry, fingerprint(path)):
                out.append(name)
        return out

    def refuse_foreign(self, subfolders: Iterable[str], what: str) -> None:
        for subfolder in subfolders:
            found = self.foreign(subfolder)
            if found:
                shown = ", ".join(found[:3]) + (
                    f", … ({len(found)} in all)" if len(found) > 3 else ""
                )
                raise OutputError(
                    f"{self.flag} {self.folder}: {shown} not written by {what}; it would become "
                    "part of the data. Move it away or choose a new or empty folder"
                )

    def owned_names(self, prefix: str = "") -> list[str]:
        """Listed names (under ``prefix``) whose files are still as reid wrote them."""
        entries = self.entries()
        return [
            name
            for name, entry in sorted(entries.items())
            if name.startswith(prefix) and _matches(entry, fingerprint(self.folder / name))
        ]

    # ------------------------------------------------------------------------- checks
    def check(self, names: Iterable[str], how: str = "move it away or choose another folder"):
        """Refuse, naming it, the first name that exists and is not provably ours."""
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.flag} {self.folder}: exists and is not a folder")
        entries = self.entries()
        for name in names:
            path = self.folder / name
            encoded = max((len(os.fsencode(part)) for part in Path(name).parts), default=0)
            if encoded > NAME_MAX:
                raise OutputError(
                    f"{self.flag} {path}: file name too long ({encoded} bytes; at most {NAME_MAX})"
                )
            current = fingerprint(path) if (path.exists() or path.is_symlink()) else None
            if current is None:
                continue
            entry = entries.get(name)
            if entry is None or not _matches(entry, current):
                why = "changed since reid wrote it" if entry is not None else "not written by reid"
                raise OutputError(
                    f"{self.flag} {self.folder}: {name} already exists ({why}); {how}"
                )

    def prepare(self, names: Iterable[str], how: str = "move it away or choose another folder"):
        """Every check before the work: names free or ours, folder creatable and writable."""
        names = list(names)
        self.check(names, how)
        probe_writable(self.folder, self.flag)
        atomic.clean_stale_temps(self.folder)
        for name in names:
            if "/" in name:
                parent = (self.folder / name).parent
                if parent.is_dir():
                    atomic.clean_stale_temps(parent)

    # ------------------------------------------------------------------------- writing
    def write(self, name: str, writer: Callable[[Path], object]) -> Path:
        """``writer(tmp)`` writes the file; it becomes ``folder/name`` atomically and is listed."""
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(target) as tmp:
            writer(tmp)
        self.record([name])
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda tmp: tmp.write_text(text))

    def write_json(self, name: str, value, indent: int | None = 1) -> Path:
        return self.write_text(name, atomic.json_text(value, indent) + "\n")

    def remove(self, names: Iterable[str]) -> list[str]:
        """Remove those of ``names`` that are provably ours; returns the ones removed."""
        entries, gone = self.entries(), []
        for name in names:
            path = self.folder / name
            entry = entries.get(name)
            if entry is not None and _matches(entry, fingerprint(path)):
                path.unlink()
                gone.append(name)
        if gone:
            self.forget(gone)
        return gone


class LedgerEntry(Strict):
    tool: str
    size: int | None = Field(default=None, ge=0)
    mtime_ns: int | None = None
    sha256: str | None = None
    link: str | None = None
    folder: bool | None = None


class Ledger(Strict):
    kind: str | None = None
    created: str | None = None  # the folder marker of earlier versions
    files: dict[RelativeName, LedgerEntry] = Field(default_factory=dict)


def parse_ledger(text: str, path: Path) -> dict:
    """A ledger's content, checked (``reid.boundary``): its names stay inside the folder. A
    ledger that does not parse is one line: it is the proof of what reid wrote there, and
    guessing would either refuse every file or license the wrong ones."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OutputError(
            f"{path}: not valid JSON ({exc}); this ledger lists the files reid wrote in its "
            "folder: restore it, or remove it (reid then treats every file there as yours)"
        ) from None
    parse(Ledger, data, path, OutputError)
    return data


#: the tool name under which the service lists the images it enrols (their folder's ledger)
ENROL_TOOL = "enrol"


def remove_owned(paths: Iterable[str | Path], tool: str) -> list[str]:
    """Delete those of ``paths`` that their folder's ledger lists as written by ``tool`` and
    unchanged since (an identity's enrolled images, when its rows leave an index: a removal
    takes effect everywhere, whoever made it). Any other file is kept. Returns what went."""
    by_folder: dict[Path, list[str]] = {}
    for path in paths:
        path = Path(path)
        by_folder.setdefault(path.parent, []).append(path.name)
    gone = []
    for folder, names in by_folder.items():
        outputs = OutputFolder(folder, tool)
        try:
            entries = outputs.entries()
        except OutputError:
            continue  # a ledger that does not parse licenses nothing
        ours = [n for n in names if entries.get(n, {}).get("tool") == tool]
        if ours:
            gone += [str(folder / n) for n in outputs.remove(ours)]
    return gone


def swap_in(staged: Path, final: Path) -> None:
    """Put the completed folder ``staged`` at ``final``; the old ``final`` (checked to hold only
    files reid wrote) goes only after the new one is in place."""
    old = None
    if final.exists():
        old = atomic.temp_path(final, ".old")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        atomic.remove_path(old)


def output_file(path: str | Path, tool: str, flag: str) -> tuple[OutputFolder, str]:
    """The folder and name of a single-file output (``--plot FILE``, ``--save-features FILE``)."""
    path = Path(path)
    return OutputFolder(path.parent if str(path.parent) else Path("."), tool, flag), path.name


def probe_writable(folder: str | Path, flag: str = "--out") -> None:
    """Create ``folder`` (and its missing parents) and a probe file in it, the only honest
    writability test, then remove what the probe created: nothing is left behind by a check."""
    folder = Path(folder)
    created = []
    try:
        for parent in [*reversed(folder.absolute().parents), folder.absolute()]:
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
        probe = atomic.temp_path(folder / "probe", ".probe")
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        reason = atomic.USER_OS_ERRORS.get(exc.errno, exc.strerror or str(exc))
        raise OutputError(f"{flag} {folder}: cannot write there ({reason})", exc.errno) from None
    finally:
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                pass


@contextmanager
def lock_folder(folder: str | Path, what: str, flag: str = "--output") -> Iterator[None]:
    """Hold ``folder`` for one writer of its kind; a second one is refused at once."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"{flag} {folder}: another {what} is writing this folder right now"
            ) from None
        yield
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a failed check leaves no empty folder behind
        raise
    finally:
        os.close(fd)


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
