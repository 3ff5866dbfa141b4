"""What users do, in a few typed calls (``import reid``; each name is in ``reid.__all__``).

The same code paths as the ``reid`` command, with the same checks and one-line errors
(:class:`reid.ReidError`): train from a config, load a model, embed images, evaluate features,
build / open / append to / search / remove from a gallery index (calibrated at build time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from PIL import Image

from .config import config_from_dict, load_config
from .data.records import NO_CAMERA
from .errors import ReidError
from .evaluation.feature_set import FeatureSet
from .evaluation.pipeline import evaluate_features
from .evaluation.rank import RankResult
from .index.gallery import GalleryIndex
from .index.sources import Embedder
from .index.stores import parse_store_options
from .workflows import index as _index
from .workflows.train import train_config

ImageLike = str | Path | Image.Image


def train(
    config: str | Path | dict | None = None,
    overrides: Sequence[str] = (),
    output: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Train a model from a config file (a path, or a packaged name such as
    ``"synthetic/demo.yaml"``), a dict of sections, or the defaults, with ``section.key=value``
    overrides; returns the run folder (``last.pt``, ``best.pt``, ``metrics.jsonl``)."""
    if isinstance(config, dict):
        merged = OmegaConf.merge(OmegaConf.create(config), OmegaConf.from_dotlist(list(overrides)))
        cfg = config_from_dict(OmegaConf.to_container(merged), "the config dict")
    else:
        cfg = load_config(config, list(overrides))
    return train_config(cfg, None if output is None else str(output), overwrite, progress=False)[0]


def load_model(path: str | Path, device: str | None = None, batch_size: int = 64,
               runtime: str | None = None) -> Embedder:  # fmt: skip
    """A reid checkpoint (``.pt`` or a run folder) or an exported model (``.pt2``, ``.onnx``
    with its sidecar, fp32, bf16 or int8), ready to embed images; ``runtime``: what runs an
    export (``torch``, ``onnxruntime``, ``openvino``; default: the one it was verified with)."""
    path = Path(path)
    if path.is_dir():
        path = path / ("best.pt" if (path / "best.pt").is_file() else "last.pt")
    return Embedder.open(path, device, batch_size, runtime)


def embed(model: Embedder | str | Path, images: Sequence[ImageLike]) -> np.ndarray:
    """Unit embeddings ``(N, D)`` of image paths or PIL images."""
    model = model if isinstance(model, Embedder) else load_model(model)
    if all(isinstance(x, (str, Path)) for x in images):
        return model([str(x) for x in images])
    return model.extractor(list(images))


def evaluate(
    query: FeatureSet | np.ndarray,
    gallery: FeatureSet | np.ndarray,
    query_pids=None,
    gallery_pids=None,
    query_camids=None,
    gallery_camids=None,
    **options,
) -> RankResult:
    """Exact CMC, mAP and mINP of query against gallery: two ``FeatureSet``s, or arrays with
    their identities (and cameras: without them every pair counts as cross-camera). ``options``:
    those of ``evaluate_features`` (``metric``, ``ap``, ``rerank``, ``query_expansion``…)."""

    def as_set(x, pids, camids, side):
        if isinstance(x, FeatureSet):
            return x
        if pids is None:
            raise ReidError(f"evaluate: {side} features need {side}_pids")
        n = len(pids)
        cams = np.full(n, NO_CAMERA, np.int64) if camids is None else np.asarray(camids, np.int64)
        return FeatureSet(np.asarray(x, np.float32), np.asarray(pids, np.int64), cams)

    q = as_set(query, query_pids, query_camids, "query")
    g = as_set(gallery, gallery_pids, gallery_camids, "gallery")
    return evaluate_features(q, g, **options)


def build_index(
    model: str | Path,
    gallery: str | Path,
    out: str | Path,
    *,
    factory: str = "Flat",
    calibrate: str | Path | None = None,
    far: float = 1e-3,
    keep_features: bool = False,
    runtime: str | None = None,
) -> GalleryIndex:
    """Embed ``gallery`` (a Market-format root, an image folder or a CSV manifest) into a new
    index at ``out``; ``calibrate``: a labelled split whose no-match thresholds are stored."""
    options = _index.ExportOptions(
        store=parse_store_options(factory=factory), keep_features=keep_features,
        calibrate=None if calibrate is None else str(calibrate), far=far, runtime=runtime,
    )  # fmt: skip
    _index.export_index(str(model), str(gallery), str(out), options)
    return open_index(out)


def open_index(path: str | Path) -> GalleryIndex:
    """An index folder, verified (manifest, checksums, counts)."""
    return GalleryIndex.load(path)


def append_to_index(model: str | Path, images: str | Path, index: str | Path) -> dict:
    """Embed the images (a folder, a Market-format root or a CSV manifest) into the index."""
    return _index.export_index(str(model), str(images), str(index), append=True)


def search(
    index: str | Path,
    images: Sequence[str | Path],
    model: str | Path,
    topk: int = 10,
    far: float | None = None,
    threshold: float | None = None,
    runtime: str | None = None,
) -> pd.DataFrame:
    """The top-``topk`` hits of each query image (or folder of them): a table (query,
    query_path, rank, score, row, path, pid, camid, and ``match`` when a threshold applies:
    the index's calibrated one by default, ``far`` another calibrated rate, or ``threshold``)."""
    found = _index.search(str(index), [str(x) for x in images], str(model), topk,
                          runs=_index.Runs(runtime=runtime),
                          no_match=_index.NoMatch(far, threshold))  # fmt: skip
    return found["table"]


def remove_from_index(index: str | Path, pids: Sequence[int] = (), paths_file=None) -> dict:
    """Forget identities (and/or the images a file lists): gone from the index and, for
    images the service enrolled, from disk."""
    return _index.remove_from_index(
        str(index), pids, None if paths_file is None else str(paths_file)
    )
