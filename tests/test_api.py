"""The Python API (``reid.__all__``) beyond the README's snippet: embedding paths and PIL images
alike, evaluation of arrays and of ``FeatureSet``s alike, and an export through ``runtime``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import reid
from reid.evaluation.feature_set import FeatureSet


def test_embed_takes_paths_and_images_alike(tiny_checkpoint, synthetic_root):
    paths = sorted((synthetic_root / "query").glob("*.jpg"))[:5]
    model = reid.load_model(tiny_checkpoint)
    by_path = reid.embed(model, paths)
    by_image = reid.embed(model, [Image.open(p).convert("RGB") for p in paths])
    assert by_path.shape == (5, model.dim)
    np.testing.assert_allclose(np.linalg.norm(by_path, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(by_image, by_path, atol=1e-6)  # one embedding path


def test_evaluate_takes_arrays_or_feature_sets(synthetic_root):
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(20, 8)), rng.normal(size=(60, 8))
    qp, gp = rng.integers(0, 10, 20), rng.integers(0, 10, 60)
    qc, gc = np.zeros(20, np.int64), np.ones(60, np.int64)
    arrays = reid.evaluate(qf, gf, qp, gp, qc, gc)
    sets = reid.evaluate(FeatureSet(qf.astype(np.float32), qp, qc),
                         FeatureSet(gf.astype(np.float32), gp, gc))  # fmt: skip
    assert arrays.mAP == sets.mAP and np.array_equal(arrays.cmc, sets.cmc)
    with pytest.raises(reid.ReidError, match="query features need query_pids"):
        reid.evaluate(qf, gf)


def test_an_export_embeds_through_the_api_on_its_runtime(tiny_checkpoint, synthetic_root, tmp_path):
    from reid.workflows.export import export_models

    out = tmp_path / "m.onnx"
    export_models(str(tiny_checkpoint), [str(out)])
    paths = sorted((synthetic_root / "query").glob("*.jpg"))[:4]
    eager = reid.embed(tiny_checkpoint, paths)
    for runtime in ("onnxruntime", "openvino"):
        model = reid.load_model(out, runtime=runtime)
        assert model.embedding == {"runtime": runtime, "precision": "fp32"}
        assert np.abs(reid.embed(model, paths) - eager).max() < 1e-5
