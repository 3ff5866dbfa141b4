"""Persistent gallery indexes (FAISS) and embedding sources for export and search."""

from .gallery import GalleryIndex, IndexError_, build_faiss_index

__all__ = ["GalleryIndex", "IndexError_", "build_faiss_index"]
