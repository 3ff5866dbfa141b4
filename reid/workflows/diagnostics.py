"""Classifier weight vs. class feature center, per class (the IR-Softmax paper's motivating plot).

For each training class k: the feature center ``m_k = normalize(mean_i x̂_i)`` of its BNNeck
features (eval transforms, one pass), its classifier weight ``w_k`` (or IR center ``c_k``), and the
angle ``∠(w_k, m_k)`` in degrees, against the number of images ``n_k``. Under imbalance the learned
weights of rare classes drift away from their centers (Zhu et al., ACCV 2020, Fig. 1); IR-Softmax
centers should not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import arrays, load_dataset
from ..errors import CheckpointError, ReidError
from ..loading import load_model
from ..models import FeatureExtractor
from ..models.checkpoint import read_checkpoint


def class_weights(checkpoint: dict, source: str) -> np.ndarray:
    """The head's class weights of a checkpoint: learned ``head.weight`` or IR ``head.centers.weight``."""
    module = checkpoint["module"]
    for key in ("head.weight", "head.centers.weight"):
        if key in module:
            return module[key].double().numpy()
    raise CheckpointError(f"{source}: no head weights in the checkpoint")


def weight_center_angles(
    checkpoint: str, data: str | None = None, device: str | None = None, workers: int = 2
) -> pd.DataFrame:
    state = read_checkpoint(checkpoint)
    model, cfg = load_model(checkpoint)
    weights = class_weights(state, checkpoint)
    # the run's own data is read the way the run read it (its data.kind)
    records = load_dataset(data or cfg.data.root, "auto" if data else cfg.data.kind).train
    pids, _ = arrays(records)
    if pids.max() + 1 != state["num_classes"]:
        raise ReidError(
            f"{data or cfg.data.root}: {pids.max() + 1} training classes, the checkpoint has {state['num_classes']}"
        )
    features = FeatureExtractor(
        model, tuple(cfg.data.image_size), device, 128, workers
    ).extract_records(records)
    sums = np.zeros((state["num_classes"], features.shape[1]))
    np.add.at(sums, pids, features)
    centers = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(min=1e-12)
    weights = weights / np.linalg.norm(weights, axis=1, keepdims=True).clip(min=1e-12)
    cos = np.clip((weights * centers).sum(1), -1, 1)
    counts = np.bincount(pids, minlength=state["num_classes"])
    return pd.DataFrame(
        {
            "class": np.arange(len(counts)),
            "images": counts,
            "angle_deg": np.degrees(np.arccos(cos)),
            "weights": cfg.head.weights,
            "head": cfg.head.name,
        }
    )


def plot_angles(table: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(table["images"], table["angle_deg"], s=10, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("angle(weight, feature center) [deg]")
    ax.set_title(f"{table['head'].iat[0]} ({table['weights'].iat[0]} weights)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def correlation(table: pd.DataFrame) -> float:
    """Spearman rank correlation between image count and angle (negative: rare classes drift)."""
    return float(table["images"].rank().corr(table["angle_deg"].rank()))


__all__ = ["weight_center_angles", "plot_angles", "correlation"]
