"""Weight/center diagnostics against a known answer: centers set from the very features measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.config import load_config, to_dict
from reid.data import arrays, load_dataset
from reid.engine.build import build_training_module
from reid.engine.checkpoint import atomic_save
from reid.models import FeatureExtractor
from reid.workflows.diagnostics import correlation, weight_center_angles


def test_angles_are_zero_when_centers_are_the_feature_centers(synthetic_root, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.root={synthetic_root}",
            "model.backbone=resnet18",
            "data.image_size=[64,32]",
            "head.weights=centers",
            "head.name=cosface",
        ],
    )
    dataset = load_dataset(synthetic_root)
    module = build_training_module(cfg, dataset.num_train_pids).eval()
    features = FeatureExtractor(module.model, (64, 32), "cpu", 64, 0).extract_records(dataset.train)
    pids, _ = arrays(dataset.train)
    module.head.centers.init_from_features(torch.from_numpy(features), torch.from_numpy(pids))
    atomic_save(
        {
            "module": module.state_dict(),
            "config": to_dict(cfg),
            "num_classes": dataset.num_train_pids,
        },
        tmp_path / "ckpt.pt",
    )
    table = weight_center_angles(str(tmp_path / "ckpt.pt"), device="cpu", workers=0)
    assert len(table) == dataset.num_train_pids
    np.testing.assert_allclose(table["angle_deg"], 0.0, atol=0.05)
    assert (table["images"].to_numpy() == np.bincount(pids)).all()
    # learned random weights: angles near 90°, unrelated to the counts
    cfg2 = load_config(
        None, [f"data.root={synthetic_root}", "model.backbone=resnet18", "data.image_size=[64,32]"]
    )
    module2 = build_training_module(cfg2, dataset.num_train_pids)
    module2.model.load_state_dict(module.model.state_dict())
    atomic_save(
        {
            "module": module2.state_dict(),
            "config": to_dict(cfg2),
            "num_classes": dataset.num_train_pids,
        },
        tmp_path / "learned.pt",
    )
    learned = weight_center_angles(str(tmp_path / "learned.pt"), device="cpu", workers=0)
    assert 60 < learned["angle_deg"].mean() < 120
    from scipy.stats import spearmanr

    expected = spearmanr(learned["images"], learned["angle_deg"]).statistic
    assert correlation(learned) == pytest.approx(expected, abs=1e-12)
