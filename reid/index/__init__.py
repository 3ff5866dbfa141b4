"""Persistent gallery indexes (FAISS) and embedding sources for export and search."""

from .gallery import GalleryIndex, IndexFormatError, build_faiss_index

__all__ = ["GalleryIndex", "IndexFormatError", "build_faiss_index"]
