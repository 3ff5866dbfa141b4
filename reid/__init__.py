"""reid: person re-identification — BNNeck backbones, the softmax-head family with IR-Softmax,
an exact FAISS evaluator, and searchable gallery indexes.

The public names below are imported lazily (PEP 562), so that importing one layer
(``reid.data``, say) loads that layer only.
"""

from importlib import import_module
from importlib.metadata import version as _version

__version__ = _version("reid")

_PUBLIC = {
    # what users do (reid/api.py)
    "train": "reid.api",
    "load_model": "reid.api",
    "embed": "reid.api",
    "evaluate": "reid.api",
    "build_index": "reid.api",
    "open_index": "reid.api",
    "append_to_index": "reid.api",
    "search": "reid.api",
    "remove_from_index": "reid.api",
    "FeatureSet": "reid.evaluation.feature_set",
    # the building blocks
    "load_config": "reid.config",
    "load_dataset": "reid.data",
    "ImageRecord": "reid.data",
    "ReIDDataset": "reid.data",
    "evaluate_rank": "reid.evaluation",
    "evaluate_distmat": "reid.evaluation",
    "RankResult": "reid.evaluation",
    "build_head": "reid.heads",
    "ReIDModel": "reid.models",
    "FeatureExtractor": "reid.models",
    "GalleryIndex": "reid.index",
    "Embedder": "reid.index",
    "ReidError": "reid.errors",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'reid' has no attribute {name!r}")


__all__ = ["__version__", *_PUBLIC]
