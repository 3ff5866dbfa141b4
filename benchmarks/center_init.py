"""IR-Softmax center initialisation: eval-mode (the old path) vs train-mode BatchNorm features.

On real Market images, for an untrained or freshly attached BNNeck, computes the class centers
both ways from one pass and reports: the mean pairwise cosine between the centers of distinct
classes (≈ 1 means all centers point the same way), and the mean angle from each initial center
to its class's mean *train-mode* feature (what the first training steps see). Writes JSON.

    python benchmarks/center_init.py --data datasets/market_lt1 --out benchmarks/results/ir_study/center_init.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from torch.nn import functional as F

from reid.data import arrays, load_dataset
from reid.engine.centers import train_mode_features
from reid.models import FeatureExtractor, ReIDModel


def summarise(features: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> dict:
    classes = torch.unique(labels)
    centers = F.normalize(
        torch.stack([F.normalize(features[labels == c], dim=1).mean(0) for c in classes]), dim=1
    )
    cos = centers @ centers.T
    off = cos[~torch.eye(len(classes), dtype=torch.bool)]
    angle = torch.rad2deg(torch.acos((centers * reference).sum(1).clamp(-1, 1)))
    return {
        "mean_pairwise_cosine": float(off.mean()),
        "angle_to_train_mode_mean_deg": float(angle.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="datasets/market_lt1")
    parser.add_argument("--images", type=int, default=1024, help="training images used (seeded)")
    parser.add_argument("--size", default="128x64")
    parser.add_argument(
        "--weights",
        default=os.environ.get(
            "REID_MOBILENET_V2_WEIGHTS", "../shared/weights/mobilenet_v2_imagenet.pth"
        ),
    )
    parser.add_argument("--out", default="benchmarks/results/ir_study/center_init.json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    records = load_dataset(args.data).train
    chosen = np.random.default_rng(0).choice(len(records), size=args.images, replace=False)
    records = [records[i] for i in sorted(chosen)]
    results = {}
    for name, backbone, pretrained in (
        ("resnet18_scratch", "resnet18", None),
        ("mobilenet_v2_imagenet", "mobilenet_v2", args.weights),
    ):
        model = ReIDModel(backbone, 1, "avg", 0, True, pretrained)
        train_f, train_y = train_mode_features(model, records, size, torch.device("cpu"), 64, 1)
        classes = torch.unique(train_y)
        reference = F.normalize(
            torch.stack([F.normalize(train_f[train_y == c], dim=1).mean(0) for c in classes]), dim=1
        )
        eval_f = torch.from_numpy(
            FeatureExtractor(model, size, "cpu", 64, 1).extract_records(records)
        )
        eval_y = torch.from_numpy(arrays(records)[0])
        train_centers = summarise(train_f, train_y, reference)
        results[name] = {
            "eval_mode_bn (old)": summarise(eval_f, eval_y, reference),
            "train_mode_bn (new)": train_centers,
            "classes": len(classes),
            "images": len(records),
        }
        print(name, json.dumps(results[name], indent=1))
    with open(args.out, "w") as handle:
        json.dump(
            {
                "command": "python benchmarks/center_init.py "
                + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
                "size": args.size,
                **results,
            },
            handle,
            indent=1,
        )


if __name__ == "__main__":
    main()
