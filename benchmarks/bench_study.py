"""Runs per hour of the study recipe: one run at a time (torch's default threads, today's way)
against ``tools/study.py --parallel 2`` (two runs side by side, ``train.threads=1`` each), on the
same runs, in one process, alternating, and each run's mAP from both (the threads change the
order of float sums, so a seeded run's numbers move; the issue allows 0.3 mAP).

    python benchmarks/bench_study.py --data datasets/market_val_lt50 --out benchmarks/results/study_parallel.json

The runs are the learning curve's recipe (``configs/study/base_mnv2.yaml``, channels_last,
validation split at rho 50) at ``--epochs`` x 40 iterations of PK 16x4 each, for the arms named
by ``--arms`` (head overrides as in ``benchmarks/results/ir_curve/grid.yaml``). Nothing else may
run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from reid.atomic import write_json  # noqa: E402
from reid.machine import cpu_description  # noqa: E402
from reid.workflows.study import run_study, usable_cores  # noqa: E402

ARMS = {
    "softmax_learned": ["head.name=softmax", "head.weights=learned"],
    "asoftmax_ir": ["head.name=sphereface", "head.weights=centers", "head.beta_fixed=10"],
    "cosface_learned": ["head.name=cosface", "head.weights=learned"],
    "cosface_ir": ["head.name=cosface", "head.weights=centers"],
}


def write_grid(path: Path, data: str, arms: list[str], epochs: int, common: list[str]) -> None:
    spec = {
        "config": str(REPO / "configs/study/base_mnv2.yaml"),
        "data": {50: str(Path(data).resolve())},
        "seeds": [0],
        "common": [
            "train.channels_last=true",
            f"train.epochs={epochs}",
            f"optim.warmup_epochs={max(1, epochs // 6)}",
            *common,
        ],
        "arms": [{"name": a, "overrides": ARMS[a]} for a in arms],
    }
    path.write_text(json.dumps(spec))


def one_side(folder: Path, data: str, arms, epochs: int, parallel: int) -> dict:
    grid = folder / f"grid_p{parallel}.yaml"
    common = [] if parallel == 1 else [f"train.threads={usable_cores() // parallel}"]
    write_grid(grid, data, arms, epochs, common)
    start = time.perf_counter()
    table = run_study(grid, folder / f"out_p{parallel}", parallel=parallel)
    wall = time.perf_counter() - start
    return {
        "wall_s": round(wall, 1),
        "runs_per_hour": round(3600 * len(table) / wall, 2),
        "mAP": {row.arm: round(100 * row.mAP, 2) for row in table.itertuples()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="datasets/market_val_lt50")
    parser.add_argument("--arms", nargs="+", default=["softmax_learned", "asoftmax_ir"])
    parser.add_argument("--epochs", type=int, default=6, help="per run (6 = the curve's 1x)")
    parser.add_argument("--repeats", type=int, default=1, help="alternations of the two sides")
    parser.add_argument("--out", default="benchmarks/results/study_parallel.json")
    args = parser.parse_args()
    sides = {"one_at_a_time": 1, "side_by_side_2": 2}
    report = {
        "command": "python benchmarks/bench_study.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_description(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "images_per_run": args.epochs * 40 * 64,
        "arms": args.arms,
        "sides": {name: [] for name in sides},
    }
    for repeat in range(args.repeats):
        order = list(sides.items()) if repeat % 2 == 0 else list(sides.items())[::-1]
        for name, parallel in order:
            with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
                result = one_side(Path(tmp), args.data, args.arms, args.epochs, parallel)
            print(name, result, flush=True)
            report["sides"][name].append(result)
    per_hour = {
        name: sum(r["runs_per_hour"] for r in results) / len(results)
        for name, results in report["sides"].items()
    }
    report["ratio_runs_per_hour"] = round(per_hour["side_by_side_2"] / per_hour["one_at_a_time"], 3)
    first = {name: results[0]["mAP"] for name, results in report["sides"].items()}
    report["mAP_difference"] = {
        arm: round(first["side_by_side_2"][arm] - first["one_at_a_time"][arm], 2)
        for arm in args.arms
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
