"""The CUDA paths in one short run: every head form (learned weights and IR centers) trained
under AMP fp16, the CUDA evaluator against the CPU one, training throughput, an NCCL init.

On one CUDA device, in about 8 minutes, with the real Market-1501 training folder::

    python benchmarks/gpu_check.py --data ../shared/datasets/market1501 --out benchmarks/results/gpu_check.json

``--dry-run`` runs the same code on the CPU at tiny sizes (synthetic data, ResNet-18,
2 iterations, fp32 where fp16 needs CUDA, gloo instead of NCCL); the test suite runs it
so that the script cannot rot between the rare sessions that have a GPU. The JSON says which
mode produced it.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid.atomic import write_json  # noqa: E402
from reid.config import load_config  # noqa: E402
from reid.data.splits import make_holdout_split  # noqa: E402
from reid.data.synthetic import SyntheticSpec, generate  # noqa: E402
from reid.engine.trainer import fit  # noqa: E402
from reid.evaluation.feature_set import FeatureSet  # noqa: E402
from reid.evaluation.rank import evaluate_rank  # noqa: E402
from reid.heads import HEADS  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_heads(data: Path, work: Path, dry: bool, device: str, iters: int) -> list[dict]:
    """Every head, learned and IR, a few iterations under AMP fp16 on CUDA (fp32 in the CPU
    rehearsal)."""
    rows = []
    for head in HEADS:
        for weights in ("learned", "centers"):
            overrides = [
                f"data.root={data}",
                f"head.name={head}",
                f"head.weights={weights}",
                f"train.device={device}",
                # CPU rehearsal in fp32: CPU bf16 autocast is machine-dependent (cosface with IR
                # centers gave NaN at step 0 on an AVX-512 Xeon, every seed, and not on AVX2),
                # and what the dry run guards is the script, not CPU bf16 numerics
                f"train.amp={'fp16' if device == 'cuda' else 'off'}",
                "train.epochs=1",
                f"train.max_iters_per_epoch={iters}",
                "eval.every=0",
                "optim.warmup_epochs=0",
                "loss.triplet=1.0",
                "data.workers=2",
            ]
            if dry:
                overrides += ["model.backbone=resnet18", "data.image_size=[32,16]",
                              "sampler.batch_size=8", "data.workers=0", "eval.batch_size=64"]  # fmt: skip
            else:
                overrides += ["model.backbone=mobilenet_v2", "data.image_size=[128,64]"]
            if head == "sphereface":
                overrides.append("head.beta_fixed=10")
            start = time.perf_counter()
            row = {"head": head, "weights": weights}
            try:
                final = fit(
                    load_config(None, overrides), work / f"{head}_{weights}", progress=False
                )
                row.update(ok=True, loss=final.get("loss"), mAP=final.get("mAP"))
                row["finite"] = bool(np.isfinite(final.get("loss", np.nan)))
            except Exception as exc:  # a failure is a finding: record it, go on
                row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
                traceback.print_exc()
            row["seconds"] = round(time.perf_counter() - start, 1)
            print(f"[gpu_check] head {head}/{weights}: {row}", flush=True)
            rows.append(row)
    return rows


def check_evaluator(device: str, dry: bool) -> dict:
    """The evaluator on ``device`` against the CPU one, same features: CMC, mAP, mINP to 1e-6."""
    rng = np.random.default_rng(0)
    q, g, ids, dim = (50, 400, 40, 64) if dry else (3368, 15913, 751, 2048)
    centers = rng.normal(size=(ids, dim))
    qp, gp = rng.integers(0, ids, q), rng.integers(0, ids, g)
    qf = (centers[qp] + rng.normal(scale=1.5, size=(q, dim))).astype(np.float32)
    gf = (centers[gp] + rng.normal(scale=1.5, size=(g, dim))).astype(np.float32)
    qc, gc = rng.integers(0, 6, q), rng.integers(0, 6, g)
    cpu = evaluate_rank(FeatureSet(qf, qp, qc), FeatureSet(gf, gp, gc), device="cpu")
    other = evaluate_rank(FeatureSet(qf, qp, qc), FeatureSet(gf, gp, gc), device=device)
    diff = {
        "cmc": float(np.abs(np.asarray(cpu.cmc) - np.asarray(other.cmc)).max()),
        "mAP": abs(cpu.mAP - other.mAP),
        "mINP": abs(cpu.mINP - other.mINP),
    }
    return {"device": device, "queries": q, "gallery": g, "max_abs_diff": diff,
            "ok": all(v <= 1e-6 for v in diff.values()), "mAP": cpu.mAP}  # fmt: skip


def throughput(device: str, dry: bool) -> list[dict]:
    """Training images/s of the model alone (ready tensors, AMP), MobileNetV2 and ResNet-50."""
    from reid.engine.build import build_losses, build_optimizer, build_training_module

    rows = []
    settings = [("resnet18", (32, 16), 8, 2)] if dry else [
        ("mobilenet_v2", (128, 64), 64, 60), ("resnet50", (256, 128), 64, 40)]  # fmt: skip
    for backbone, size, batch, steps in settings:
        cfg = load_config(None, [f"model.backbone={backbone}", f"data.image_size=[{size[0]},{size[1]}]",
                                 f"sampler.batch_size={batch}"])  # fmt: skip
        module = build_training_module(cfg, 751).to(device).to(memory_format=torch.channels_last)
        losses, optimizer = build_losses(cfg, 751), build_optimizer(cfg, module)
        dtype = torch.float16 if device == "cuda" else torch.bfloat16
        scaler = torch.amp.GradScaler(device, enabled=device == "cuda")
        images = torch.randn(batch, 3, *size, device=device).to(memory_format=torch.channels_last)
        labels = torch.arange(batch, device=device) % (batch // 4)
        module.train()
        for step in range(steps + 3):
            if step == 3:
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast(device, dtype=dtype):
                out = module(images, labels)
                loss = sum(losses(module, out, labels).values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()
        timed = time.perf_counter() - start
        rows.append({"model": backbone, "image_size": list(size), "batch": batch,
                     "images_per_s": round(batch * steps / timed, 1)})  # fmt: skip
        print(f"[gpu_check] throughput {rows[-1]}", flush=True)
    return rows


def check_distributed(device: str) -> dict:
    backend = "nccl" if device == "cuda" else "gloo"
    start = time.perf_counter()
    try:
        torch.distributed.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
        )
        value = torch.ones(4, device=device)
        torch.distributed.all_reduce(value)
        ok = bool(value.sum().item() == 4)
        torch.distributed.destroy_process_group()
        return {"backend": backend, "ok": ok, "seconds": round(time.perf_counter() - start, 2)}
    except Exception as exc:
        return {"backend": backend, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared/datasets/market1501"),
                        help="folder holding bounding_box_train/ (real run)")  # fmt: skip
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_check.json"))
    parser.add_argument("--iters", type=int, default=30, help="training iterations per head form")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (the test suite)")
    args = parser.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; use --dry-run for the CPU rehearsal")
    device = "cpu" if dry else "cuda"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        if dry:
            data = work / "synthetic"
            generate(data, SyntheticSpec(ids=6, images_per_id=6, longtail_ratio=1, distractors=1,
                                         junk=1, size=(32, 16), seed=1))  # fmt: skip
        else:
            data = work / "split"
            make_holdout_split(args.data, data, holdout_ids=150, seed=0)
        report = {
            "mode": "dry-run (CPU, tiny sizes)" if dry else "cuda",
            "device": torch.cuda.get_device_name(0) if not dry else platform.processor() or "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "heads": check_heads(data, work / "runs", dry, device, 2 if dry else args.iters),
            "evaluator": check_evaluator("cuda" if not dry else "cpu", dry),
            "throughput": throughput(device, dry),
            "distributed": check_distributed(device),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = (
        all(r["ok"] for r in report["heads"])
        and report["evaluator"]["ok"]
        and report["distributed"]["ok"]
    )
    write_json(args.out, report, indent=2)
    print(f"[gpu_check] {'OK' if report['ok'] else 'FAILED'} in {report['seconds']} s: {args.out}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
