"""Persistent gallery indexes (FAISS or Milvus behind one store seam) and embedding sources for export and search."""

from .gallery import GalleryIndex, IndexFormatError
from .sources import Embedder

__all__ = ["Embedder", "GalleryIndex", "IndexFormatError"]
