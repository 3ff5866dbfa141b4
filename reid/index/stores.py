"""The registry of vector stores (``store.py`` is their contract): a plain dict, as ``HEADS``
is. A new backend is its own file and one line here; the index, the workflows, the commands and
the service reach every store through this module and never by name.

``faiss`` (embedded, the index is a file in the index folder) is the default; ``milvus`` (a
Milvus server or cluster; the index folder holds the manifest that points to a collection).
"""

from __future__ import annotations

import argparse

from .faiss_store import FaissStore
from .milvus_store import MilvusStore
from .store import StoreError, StoreOptions, VectorStore

STORES: dict[str, type[VectorStore]] = {
    "faiss": FaissStore,
    "milvus": MilvusStore,
}
DEFAULT = "faiss"
#: what a manifest written before the store seam (no ``store`` section) holds
LEGACY = DEFAULT


def store_class(name: str) -> type[VectorStore]:
    try:
        return STORES[name]
    except KeyError:
        raise StoreError(f"--backend {name!r}: choose one of {', '.join(STORES)}") from None


def section(manifest: dict) -> dict:
    """The manifest's store section (manifests written before the seam: the legacy store)."""
    return manifest.get("store") or {"backend": LEGACY, "factory": manifest.get("factory", "Flat")}


def manifest_store(manifest: dict) -> type[VectorStore]:
    """The store class that wrote ``manifest``; an unknown backend is one line."""
    name = section(manifest)["backend"]
    if name not in STORES:
        raise StoreError(f"store backend {name!r}: not one this reid has ({', '.join(STORES)})")
    return STORES[name]


def parse_store_options(backend: str | None = None, **given) -> StoreOptions:
    """The export's backend options (``option=value``; ``None`` means not given), checked
    before any work: an option of another backend is refused with its flag's name."""
    cls = store_class(backend or DEFAULT)
    known = {flag.option: flag.flag for store in STORES.values() for flag in store.flags}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"unknown store options: {', '.join(unknown)}")
    own = {flag.option for flag in cls.flags}
    wrong = [known[o] for o, v in given.items() if v is not None and o not in own]
    if wrong:
        raise StoreError(f"{', '.join(wrong)}: does not apply to --backend {cls.name}")
    return cls.parse_options({o: v for o, v in given.items() if o in own})


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and every store's own flags, one argument group per store."""
    parser.add_argument(
        "--backend",
        dest=_dest("--backend"),
        choices=list(STORES),
        default=None,
        help=f"vector store (default {DEFAULT}): "
        + "; ".join(f"{name}: {cls.summary}" for name, cls in STORES.items()),
    )
    for name, cls in STORES.items():
        group = parser.add_argument_group(f"--backend {name}")
        for flag in cls.flags:
            group.add_argument(flag.flag, dest=_dest(flag.flag), metavar=flag.metavar or flag.option.upper(),
                               type=flag.kind, default=None, help=flag.help)  # fmt: skip


def store_arguments(args: argparse.Namespace) -> dict:
    """The store options the user gave on the command line: option → value (None: not given)."""
    return {
        flag.option: getattr(args, _dest(flag.flag))
        for cls in STORES.values()
        for flag in cls.flags
    }


def given_store_flags(args: argparse.Namespace) -> list[str]:
    flags = [f.flag for cls in STORES.values() for f in cls.flags]
    return [f for f in ["--backend", *flags] if getattr(args, _dest(f)) is not None]


def _dest(flag: str) -> str:
    return "store_" + flag.lstrip("-").replace("-", "_")
