"""reid: person re-identification — BNNeck ResNets, the softmax-head family with IR-Softmax,
an exact FAISS evaluator, and searchable gallery indexes."""

__version__ = "0.1.0"

from .config import load_config  # noqa: E402
from .data import ImageRecord, ReIDDataset, load_dataset  # noqa: E402
from .evaluation import RankResult, evaluate_distmat, evaluate_rank  # noqa: E402
from .heads import build_head  # noqa: E402
from .index import GalleryIndex  # noqa: E402
from .models import FeatureExtractor, ReIDModel  # noqa: E402

__all__ = [
    "__version__",
    "load_config",
    "load_dataset",
    "ImageRecord",
    "ReIDDataset",
    "evaluate_rank",
    "evaluate_distmat",
    "RankResult",
    "build_head",
    "ReIDModel",
    "FeatureExtractor",
    "GalleryIndex",
]
