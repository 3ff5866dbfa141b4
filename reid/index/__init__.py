"""Persistent gallery indexes (FAISS) and embedding sources for export and search."""

from .gallery import GalleryIndex, IndexFormatError, build_faiss_index
from .sources import Embedder

__all__ = ["Embedder", "GalleryIndex", "IndexFormatError", "build_faiss_index"]
