"""Where a file enters: one parser per file kind turns what was read into a checked object.

Every file reid reads (checkpoint, index manifest and journal, export sidecar, ownership ledger,
features file, CSV manifest, config, study grid, upload) is parsed once, where it is read, by a
schema (pydantic models, or the config schema) that checks keys, types, ranges, lengths and
cross-field consistency. Beyond that point the code trusts the parsed object. A file that fails
is one :class:`~reid.errors.ReidError` naming the file and the field; nothing else has happened
yet (no file written or deleted, no expensive work started).

A name read from a file that becomes a path is a **plain name**: one component, not ``.`` or
``..``, no separator, no NUL, not empty. It stays inside its folder whatever the file says.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .errors import ReidError

T = TypeVar("T", bound=BaseModel)


class FileFormatError(ReidError):
    """A file whose content does not fit its kind: its message names the file and the field."""


def plain_name(name: str) -> str:
    """``name`` if it is a plain file name inside its folder, else ``ValueError``."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogateescape")) > 255
    ):
        raise ValueError(f"{name!r} is not a plain file name inside its folder")
    return name


def relative_name(name: str) -> str:
    """``name`` if it is a relative path of plain names (``sub/file``) that stays inside its
    folder, else ``ValueError``."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        raise ValueError(f"{name!r} is not a relative name inside its folder")
    for part in name.split("/"):
        try:
            plain_name(part)
        except ValueError:
            raise ValueError(f"{name!r} is not a relative name inside its folder") from None
    return name


def finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]
RelativeName = Annotated[str, AfterValidator(relative_name)]
Finite = Annotated[float, AfterValidator(finite)]


class Strict(BaseModel):
    """A file section whose keys are all known: an unknown key is refused by name."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class Open(BaseModel):
    """A file section that may carry keys this version does not read (kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True, arbitrary_types_allowed=True)


def field_name(loc: tuple) -> str:
    parts = []
    for part in loc:
        if part in ("[key]",) or (isinstance(part, str) and part.startswith("function-")):
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif parts:
            parts.append(f".{part}")
        else:
            parts.append(str(part))
    return "".join(parts).replace(".[", "[") or "(top level)"


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error, as ``field NAME: what is wrong``."""
    error = exc.errors()[0]
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "missing":
        message = "missing"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif "input" in error and kind.endswith("_type"):
        message = f"{message} (got {type(error['input']).__name__})"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"field {field_name(error['loc'])}: {message}{tail}"


def parse(model: type[T], data, source: str | Path, error: type[ReidError] = FileFormatError) -> T:
    """``data`` (what was read from ``source``) as a ``model``, or one ``error`` naming the
    file and the first field that does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: {describe(exc)}") from None


def read_json(path: str | Path, error: type[ReidError] = FileFormatError, what: str = "file"):
    """The JSON value in ``path``, or one ``error`` line: missing, unreadable, not JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")
