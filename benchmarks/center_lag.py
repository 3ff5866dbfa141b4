"""Is an IR run's center angle lag or sampling noise? (the issue's 20° gate, measured honestly)

The trainer logs, per epoch, the angle between each class's center and the mean of that class's
unit features *in the batch* (K images). Even a perfect center — the class mean over all its
training images — sits some angle away from a K-image batch mean, because the features of one
identity spread. This script measures, for a finished run, with train-mode BN features of the
training set (as the centers see them), per frequency tercile:

* ``center_vs_batch``: angle between the run's center and K-image batch means (what is logged);
* ``floor``: angle between the exact class mean and K-image batch means (a lag-free center);
* ``center_vs_mean``: angle between the run's center and the exact class mean (the lag itself).

    python benchmarks/center_lag.py RUN/last.pt [RUN2/last.pt ...] --out benchmarks/results/ir_study/center_lag.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch.nn import functional as F

from reid.data import load_dataset
from reid.engine.centers import frequency_groups, train_mode_features
from reid.loading import load_model
from reid.models.checkpoint import read_checkpoint


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def measure(path: str, k: int = 4, draws: int = 8, seed: int = 0) -> dict:
    checkpoint = read_checkpoint(path)
    model, cfg = load_model(path)
    records = load_dataset(cfg.data.root).train
    features, labels = train_mode_features(
        model, records, cfg.data.image_size, torch.device("cpu"), cfg.sampler.batch_size, 2
    )
    unit = F.normalize(features, dim=1)
    num_classes = int(labels.max()) + 1
    weights = checkpoint["module"].get(
        "head.centers.weight", checkpoint["module"].get("head.weight")
    )
    groups = frequency_groups(records, num_classes)
    rng = np.random.default_rng(seed)
    rows = {"center_vs_batch": [], "floor": [], "center_vs_mean": []}
    per_class = {key: np.zeros(num_classes) for key in rows}
    for c in range(num_classes):
        members = unit[labels == c]
        mean = members.mean(0)
        batch_angles_center, batch_angles_mean = [], []
        for _ in range(draws):
            pick = rng.choice(len(members), size=min(k, len(members)), replace=False)
            batch = members[pick].mean(0)
            batch_angles_center.append(float(angle(weights[c], batch)))
            batch_angles_mean.append(float(angle(mean, batch)))
        per_class["center_vs_batch"][c] = np.mean(batch_angles_center)
        per_class["floor"][c] = np.mean(batch_angles_mean)
        per_class["center_vs_mean"][c] = float(angle(weights[c], mean))
    out = {"checkpoint": path, "head": cfg.head.name, "weights": cfg.head.weights, "k": k}
    for key, values in per_class.items():
        for g, name in enumerate(("rare", "mid", "frequent")):
            out[f"{key}_{name}"] = round(float(values[(groups == g).numpy()].mean()), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--out", default="benchmarks/results/ir_study/center_lag.json")
    args = parser.parse_args()
    results = [measure(p) for p in args.checkpoints]
    for r in results:
        print(json.dumps(r))
    with open(args.out, "w") as handle:
        json.dump(
            {
                "command": "python benchmarks/center_lag.py " + " ".join(args.checkpoints),
                "runs": results,
            },
            handle,
            indent=1,
        )


if __name__ == "__main__":
    main()
