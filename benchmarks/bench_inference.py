"""Embedding speed of every runtime × precision, and what the reduced precisions cost on real
data.

Speed: for ResNet-18 and MobileNetV2 at 128×64 and ResNet-50 at 256×128 (random weights:
speed does not depend on them; int8 calibrated on 128 synthetic crops), img/s at batch 1 and 32
on the same preprocessed synthetic crops, every configuration in one process, interleaved
round by round (``--rounds``, each configuration timed for ``--seconds`` per round; the median
round is reported), with the ratio to torch eager fp32 of the same run.

Accuracy (``--checkpoint`` and ``--split``): the model exported by ``reid export-model`` at each
reduced precision on each runtime under ``--max-map-loss`` (int8 keeps its most sensitive nodes
in fp32 until it is within the bound), verified on the held-out split (the export's own
verification: R1 / mAP against fp32, top-10 overlap, worst cosine gap), and each verified
export's speed against the same checkpoint on torch eager, interleaved on the split's crops.

    python benchmarks/bench_inference.py --checkpoint runs/mnv2_rho1_s0/best.pt \\
        --split datasets/market_lt1        # writes benchmarks/results/inference.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid.data.synthetic import SyntheticSpec, generate  # noqa: E402
from reid.index.sources import image_folder_records  # noqa: E402
from reid.machine import cpu_description  # noqa: E402
from reid.models import FeatureExtractor, ReIDModel  # noqa: E402
from reid.models.export import NormalizedEmbedding, export_model  # noqa: E402
from reid.models.quantize import quantize_int8  # noqa: E402
from reid.models.runtime import RuntimeModule, cpu_has_bf16, open_runtime  # noqa: E402
from reid.workflows.export import Reduction, export_models  # noqa: E402

MODELS = {"resnet18": (128, 64), "mobilenet_v2": (128, 64), "resnet50": (256, 128)}
RESULTS = REPO / "benchmarks" / "results"


def crops(root: Path, size, count: int) -> np.ndarray:
    """``count`` preprocessed crops of ``root``'s gallery (the first, in name order)."""
    records = image_folder_records(root / "bounding_box_test")[:count]
    extractor = FeatureExtractor(RuntimeModule(lambda x: x), size, "cpu", 64)
    return np.concatenate([images.numpy() for images, *_ in extractor.loader(records)])


def configurations(name: str, size, work: Path, calibration: np.ndarray) -> dict:
    """(runtime, precision) → a callable on a float32 batch, for one model."""
    torch.manual_seed(0)
    model = ReIDModel(name, 1, "avg", 0, True).eval()
    wrapped = NormalizedEmbedding(model).eval()
    fp32 = work / f"{name}.onnx"
    export_model(model, fp32, size)
    int8 = work / f"{name}.int8.onnx"
    quantize_int8(fp32, int8, [calibration[i : i + 32] for i in range(0, len(calibration), 32)])
    nhwc = NormalizedEmbedding(model).eval().to(memory_format=torch.channels_last)

    def eager(module, channels_last=False):
        def run(x):
            with torch.no_grad():
                t = torch.from_numpy(x)
                if channels_last:
                    t = t.contiguous(memory_format=torch.channels_last)
                return module(t).numpy()

        return run

    runs = {
        ("torch", "fp32"): eager(wrapped),
        ("torch channels_last", "fp32"): eager(nhwc, True),
        ("onnxruntime", "fp32"): _numpy(open_runtime(fp32, "onnxruntime")),
        ("openvino", "fp32"): _numpy(open_runtime(fp32, "openvino", "fp32")),
        ("onnxruntime", "int8"): _numpy(open_runtime(int8, "onnxruntime")),
        ("openvino", "int8"): _numpy(open_runtime(int8, "openvino", "int8")),
    }
    if cpu_has_bf16():
        runs[("openvino", "bf16")] = _numpy(open_runtime(fp32, "openvino", "bf16"))
    return runs


def _numpy(run):
    return lambda x: run(torch.from_numpy(x))


def speed(runs: dict, images: np.ndarray, batch: int, rounds: int, seconds: float) -> dict:
    """img/s of each configuration: interleaved rounds, the median round."""
    batches = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
    for run in runs.values():  # warm-up: first calls compile and allocate
        run(batches[0])
        run(batches[-1])
    rates = {key: [] for key in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            done, start, i = 0, time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                run(batches[i % len(batches)])
                done, i = done + batch, i + 1
            rates[key].append(done / (time.perf_counter() - start))
    return {key: float(np.median(v)) for key, v in rates.items()}


def accuracy(checkpoint: str, split: str, work: Path, bound: float, args) -> tuple[list, list]:
    """The study model exported at each reduced precision on each runtime under ``bound`` (mAP
    points; mixed precision where int8 alone is over it), its verification, and its speed
    against the same checkpoint on torch eager, interleaved on the split's own crops."""
    from reid.errors import ReidError
    from reid.loading import load_model

    model, cfg = load_model(checkpoint)
    size = tuple(cfg.data.image_size)
    images = crops(Path(split), size, args.images)
    eager = NormalizedEmbedding(model).eval()

    def torch_run(x):
        with torch.no_grad():
            return eager(torch.from_numpy(x)).numpy()

    rows, speeds = [], []
    plans = [("int8", "onnxruntime"), ("int8", "openvino")]
    if cpu_has_bf16():
        plans.append(("bf16", "openvino"))
    for precision, runtime in plans:
        target = work / f"study.{precision}.{runtime}.onnx"
        start = time.perf_counter()
        try:
            done = export_models(checkpoint, [str(target)],
                                 Reduction(precision, split if precision == "int8" else None, 256,
                                           split, bound, runtime))[0]  # fmt: skip
        except ReidError as exc:
            rows.append({"runtime": runtime, "precision": precision, "refused": str(exc)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        v = done["verification"]
        rows.append({
            "model": "mobilenet_v2 (study recipe, 4x budget: 61,440 images)",
            "runtime": runtime, "precision": precision,
            "mAP": v["reduced"]["mAP"], "mAP_fp32": v["fp32"]["mAP"],
            "R1": v["reduced"]["rank1"], "R1_fp32": v["fp32"]["rank1"],
            "map_loss": v["map_loss"], "top10_overlap": v["top10_overlap"],
            "worst_cosine_gap": v["worst_cosine_gap"],
            "fp32_nodes": len(done.get("calibration", {}).get("fp32_nodes", [])),
            "split": f"{v['split']} ({v['queries']} queries / {v['gallery']} gallery)",
            "export_s": round(time.perf_counter() - start, 1),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        runs = {("torch", "fp32"): torch_run,
                (runtime, precision): _numpy(open_runtime(target, runtime, precision))}  # fmt: skip
        for batch in (1, 32):
            rates = speed(runs, images, batch, args.rounds, args.seconds)
            speeds.append({"model": f"mobilenet_v2 study model, verified {precision} "
                           f"({rows[-1]['fp32_nodes']} nodes fp32)", "image_size": list(size),
                           "runtime": runtime, "precision": precision, "batch": batch,
                           "img_s": round(rates[(runtime, precision)], 1),
                           "torch_img_s": round(rates[("torch", "fp32")], 1),
                           "vs_torch": round(rates[(runtime, precision)] / rates[("torch", "fp32")], 2)})  # fmt: skip
            print(json.dumps(speeds[-1]), flush=True)
    return rows, speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="*",
        default=list(MODELS),
        choices=list(MODELS),
        help="the speed rows (none: only the study model's rows)",
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--checkpoint", help="a study checkpoint for the real-data rows")
    parser.add_argument("--split", help="its held-out split (query/ + bounding_box_test/)")
    parser.add_argument(
        "--max-map-loss",
        type=float,
        default=0.5,
        help="the bound the study model's reduced exports are made under",
    )
    parser.add_argument("--out", default=str(RESULTS / "inference.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "synthetic"
        generate(data, SyntheticSpec(ids=60, seed=0))
        for name in args.models:
            size = MODELS[name]
            images = crops(data, size, args.images)
            runs = configurations(name, size, work, images[:128])
            for batch in (1, 32):
                rates = speed(runs, images, batch, args.rounds, args.seconds)
                base = rates[("torch", "fp32")]
                for (runtime, precision), rate in rates.items():
                    rows.append({"model": name, "image_size": list(size), "runtime": runtime,
                                 "precision": precision, "batch": batch,
                                 "img_s": round(rate, 1), "vs_torch": round(rate / base, 2)})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
        accuracy_rows, verified_speed = (
            accuracy(args.checkpoint, args.split, work, args.max_map_loss, args)
            if args.checkpoint
            else ([], [])
        )
    result = {
        "command": "python " + " ".join(sys.argv),
        "machine": cpu_description(),
        "threads": torch.get_num_threads(),
        "speed": rows,
        "accuracy": accuracy_rows,
        "verified_speed": verified_speed,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
