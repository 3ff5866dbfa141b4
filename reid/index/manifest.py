"""The index manifest (``manifest.json``) and the save journal, parsed where they are read.

A manifest names the files of its index (``files``: name → SHA-256, ``roles``: role → name);
``load`` opens them, ``save`` deletes the previous generation's by those names, and a killed
save's journal names files to clean up. So every such name must be a **plain name** inside the
index folder (``reid.boundary.PlainName``): a manifest that says ``"../victim.txt"`` is refused
with one line before anything is opened or deleted. Every other field is typed too: a manifest
without ``dim``, without ``files``, with a count below zero or a role whose file it does not
list is one line naming the field, never a ``KeyError`` later or a search with no checksum
verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ..boundary import Finite, Open, PlainName, Strict, parse, read_json
from ..errors import ReidError
from .store import IndexFormatError

MANIFEST = "manifest.json"
READABLE_VERSIONS = (1, 2)
#: each role's file: ``ROLE.GEN.SUFFIX`` in format 2, ``ROLE.SUFFIX`` in format 1 (whose
#: indexes all predate the store seam: their ``index`` file is the legacy store's)
SUFFIXES = {"index": ".faiss", "metadata": ".parquet", "features": ".npy"}


def _sha256(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{value!r} is not a SHA-256 (64 lower-case hex digits)")
    return value


Sha256 = Annotated[str, AfterValidator(_sha256)]
#: a data file's role: metadata, features, or one of the store's (``Capabilities.files``)
Role = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class StoreSection(Open):
    """The store's description: its backend names the store (``index/stores.py``), whose
    ``open`` checks the rest of the section (its own keys are the store's business)."""

    backend: Annotated[str, Field(min_length=1, max_length=64)]


class OperatingPoint(Open):
    far: Finite | None
    threshold: Finite


class Calibration(Open):
    far: Finite
    threshold: Finite
    model_hash: str
    operating_points: list[OperatingPoint] | None = None


class Preprocessing(Open):
    image_size: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None, min_length=2, max_length=2
    )


class Embedding(Strict):
    """What embedded the index's vectors (indexes before runtimes: torch, fp32)."""

    runtime: Literal["torch", "onnxruntime", "openvino"] = "torch"
    precision: Literal["fp32", "bf16", "int8"] = "fp32"


class Manifest(Strict):
    format_version: Literal[1, 2]
    dim: int = Field(ge=1, le=65536)
    metric: Literal["cosine"]
    normalized: bool = True
    factory: str = "Flat"
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    model_hash: str = ""
    paths: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    count: int = Field(ge=0)
    store: StoreSection | None = None
    created: str | None = None
    roles: dict[Role, PlainName] | None = None
    files: dict[PlainName, Sha256]
    ids_sha256: str | None = None
    next_row: int | None = Field(default=None, ge=0)
    removed: int | None = Field(default=None, ge=0)
    calibration: Calibration | None = None
    embedding: Embedding | None = None
    recall: dict[str, Finite] | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.format_version == 2 and self.roles is None:
            raise ValueError("format 2 lists its data files under roles")
        for role, name in (self.roles or {}).items():
            if name not in self.files:
                raise ValueError(f"roles.{role}: {name!r} is not listed in files")
        if "metadata" not in self.role_files():
            raise ValueError("lists no metadata file")
        return self

    def role_files(self) -> dict:
        """role → file name (format 1 used fixed names: ``ROLE.SUFFIX``)."""
        if self.roles is not None:
            return dict(self.roles)
        return {
            role: role + suffix for role, suffix in SUFFIXES.items() if role + suffix in self.files
        }


class Journal(Strict):
    """A save's journal: the data files it is about to write (a killed save's are removed)."""

    files: list[PlainName]


def is_manifest_shaped(data) -> bool:
    """Whether ``data`` claims to be an index manifest at all (a user's own manifest.json
    does not), before it is checked field by field."""
    return isinstance(data, dict) and "format_version" in data


def parse_manifest(data, source: str | Path) -> Manifest:
    """``data`` (read from ``source``) as a manifest of a version this reid reads."""
    if isinstance(data, dict) and data.get("format_version") not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"{source}: format version {data.get('format_version')!r}, this reid reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    return parse(Manifest, data, source, IndexFormatError)


def read_manifest_file(path: str | Path) -> tuple[Manifest, dict]:
    """The manifest at ``path``, read once: parsed (or one :class:`IndexFormatError` line
    naming the field) and as the dict it was written as."""
    data = read_json(path, IndexFormatError, "index manifest")
    return parse_manifest(data, path), data


def read_journal(path: str | Path) -> list[str]:
    """The names a save journal lists, or none when it cannot be parsed (a journal is ours:
    an unreadable one licenses no deletion)."""
    try:
        return parse(Journal, read_json(path), path).files
    except ReidError:
        return []
