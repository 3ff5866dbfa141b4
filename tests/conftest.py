"""Shared fixtures: tiny seeded datasets in tmp_path, the real Market-1501 folder if present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_jpeg(path: Path, seed: int = 0, size=(16, 8)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def make_jpeg():
    return write_jpeg


@pytest.fixture(scope="session")
def market_root() -> Path:
    """The real Market-1501 root: ``$REID_MARKET1501_ROOT``, else ``../shared/datasets/market1501``
    beside the checkout (where this project's machines keep it)."""
    candidates = [
        os.environ.get("REID_MARKET1501_ROOT"),
        str(REPO.parent / "shared/datasets/market1501"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "bounding_box_train").is_dir():
            return Path(candidate)
    pytest.skip(
        "real Market-1501 not found: set REID_MARKET1501_ROOT to a folder holding bounding_box_train/"
    )


#: the suite's synthetic set (also ``tests/seeded_runs.py``: its golden numbers depend on it)
SYNTHETIC_SPEC = dict(ids=40, images_per_id=12, longtail_ratio=4, distractors=20, junk=5, seed=3)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic Market-format dataset, generated once per test session."""
    from reid.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SyntheticSpec(**SYNTHETIC_SPEC))
    return root


TINY_TRAIN = [
    "model.backbone=resnet18",
    "data.image_size=[64,32]",
    "data.workers=0",
    "sampler.batch_size=16",
    "train.epochs=1",
    "train.max_iters_per_epoch=2",
    "eval.every=0",
    "optim.warmup_epochs=0",
]


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_root, tmp_path_factory) -> Path:
    """``last.pt`` of a 2-step ResNet-18 run on the synthetic set (shared by the session)."""
    from reid.config import load_config
    from reid.engine.trainer import fit

    run = tmp_path_factory.mktemp("run")
    fit(load_config(None, [f"data.root={synthetic_root}", *TINY_TRAIN]), run, progress=False)
    return run / "last.pt"


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory):
    """A real Milvus standalone server (the ``milvus`` wheel) for the session, its data in a
    temporary folder, stopped at the end. Ports are picked free by the server's launcher."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    server.start()
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def index_dir(tiny_checkpoint, synthetic_root, tmp_path_factory) -> Path:
    """A calibrated FAISS index of the synthetic gallery, exported like a user's (the service
    tests serve it; tests that write serve a copy)."""
    from reid.workflows.index import ExportOptions, export_index

    out = tmp_path_factory.mktemp("served") / "index"
    export_index(
        str(tiny_checkpoint),
        str(synthetic_root),
        str(out),
        ExportOptions(calibrate=str(synthetic_root)),
    )
    return out
