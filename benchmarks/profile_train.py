"""Where a study run's time goes, on this machine: the study recipe (``configs/study/base_mnv2.yaml``:
MobileNetV2, 128×64, PK 16×4, channels_last, Adam), measured in stages, one at a time.

* ``data``: the DataLoader alone (decode, augment, collate in the worker processes), img/s;
* ``model``: one step on a ready batch, split into forward + loss, backward, optimizer, and the
  IR center update (``head.weights=centers``), ms;
* ``loop``: ``train_one_epoch`` itself (data + model + the per-step bookkeeping: accuracy, the
  center-angle tracker), img/s, for several thread layouts (intra-op threads × loader workers)
  on this machine's cores.

    python benchmarks/profile_train.py --data datasets/market_lt50 --out benchmarks/results/profile_train.json

Nothing else may run meanwhile (two heavy jobs on 2 cores distort every figure).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid.atomic import write_json  # noqa: E402
from reid.config import load_config  # noqa: E402
from reid.data import arrays, load_dataset  # noqa: E402
from reid.engine.build import (  # noqa: E402
    LoopSettings,  # noqa: E402
    build_losses,
    build_optimizer,
    build_sampler,
    build_scheduler,
    build_train_loader,
    build_training_module,
    center_settings,
    feature_pass,
)
from reid.engine.centers import CenterLifecycle  # noqa: E402
from reid.engine.trainer import Optimization, train_one_epoch  # noqa: E402


def setup(data: str, weights: str, workers: int, extra=()):
    cfg = load_config(
        REPO / "configs/study/base_mnv2.yaml",
        [f"data.root={data}", "train.channels_last=true", f"head.weights={weights}",
         f"data.workers={workers}", *extra],
    )  # fmt: skip
    dataset = load_dataset(cfg.data.root, cfg.data.kind)
    pids, camids = arrays(dataset.train)
    sampler = build_sampler(cfg, pids, camids, 0, 1)
    loader = build_train_loader(cfg, dataset.train, sampler, torch.device("cpu"))
    module = build_training_module(cfg, dataset.num_train_pids).to(
        memory_format=torch.channels_last
    )
    return cfg, dataset, sampler, loader, module


def data_only(loader, batches: int) -> dict:
    it = iter(loader)
    next(it)  # worker start-up excluded
    start = time.perf_counter()
    n = 0
    for images, *_ in itertools.islice(it, batches):
        n += len(images)
    return {"images_per_s": round(n / (time.perf_counter() - start), 1)}


def model_only(cfg, dataset, loader, module, steps: int) -> dict:
    losses = build_losses(cfg, dataset.num_train_pids)
    optimizer = build_optimizer(cfg, module)
    images, labels, *_ = next(iter(loader))
    images = images.contiguous(memory_format=torch.channels_last)
    module.train()
    times = {"forward_loss": 0.0, "backward": 0.0, "optimizer": 0.0, "center_update": 0.0}
    for step in range(steps + 2):
        t0 = time.perf_counter()
        out = module(images, labels)
        loss = sum(losses(module, out, labels).values())
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        module.head.on_train_step(out["bn"].detach(), labels)
        t4 = time.perf_counter()
        if step >= 2:
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key] += value
    per_step = {k: round(1000 * v / steps, 1) for k, v in times.items()}
    total = sum(per_step.values())
    return {"ms_per_step": per_step, "images_per_s": round(len(images) * 1000 / total, 1)}


def loop(cfg, dataset, sampler, loader, module, iters: int) -> dict:
    losses = build_losses(cfg, dataset.num_train_pids)
    optimizer = build_optimizer(cfg, module)
    scheduler = build_scheduler(cfg, optimizer, iters)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = train_one_epoch(
        module, losses, loader, Optimization(optimizer, scheduler, scaler), torch.device("cpu"),
        loop=LoopSettings(epochs=1, channels_last=True, max_iters=iters), progress=False,
        centers=CenterLifecycle(module, dataset.train, center_settings(cfg), feature_pass(cfg),
                                torch.device("cpu")),
    )  # fmt: skip
    return {"images_per_s": round(stats["images_per_s"], 1)}


def compiled_loop(data: str, iters: int) -> dict:
    """``train.compile`` (inductor, the backbone in training steps), the loop otherwise as is:
    compile time reported."""
    cfg, dataset, sampler, loader, module = setup(data, "learned", 0)
    start = time.perf_counter()
    module.model.compile_for_training()
    images, labels, *_ = next(iter(loader))
    module.train()
    module(images.contiguous(memory_format=torch.channels_last), labels)["bn"].sum().backward()
    compile_s = time.perf_counter() - start
    return {"compile_s": round(compile_s, 1), **loop(cfg, dataset, sampler, loader, module, iters)}


def cached(data: str, iters: int, repeats: int = 2) -> dict:
    """``data.cache=memory`` (decoded images, the transforms in the training process, no loader
    workers) against the image path with 2 workers, interleaved ``repeats`` times in this
    process (the box is noisy: a ratio of neighbours, not of runs minutes apart)."""
    rows = {"files_2_workers": [], "cache": []}
    decode_s = None
    for _ in range(repeats):
        cfg, dataset, sampler, loader, module = setup(data, "learned", 2)
        rows["files_2_workers"].append(
            loop(cfg, dataset, sampler, loader, module, iters)["images_per_s"]
        )
        start = time.perf_counter()
        cfg, dataset, sampler, loader, module = setup(data, "learned", 2, ["data.cache=memory"])
        decode_s = round(time.perf_counter() - start, 1)
        rows["cache"].append(loop(cfg, dataset, sampler, loader, module, iters)["images_per_s"])
    ratio = sum(rows["cache"]) / sum(rows["files_2_workers"])
    return {**rows, "decode_and_build_s": decode_s, "images": len(dataset.train),
            "ratio_cache_over_files": round(ratio, 3)}  # fmt: skip


def pair(data: str, iters: int, workers: int, extra=()) -> dict:
    """Two runs side by side, one intra-op thread each: their summed img/s (the study's
    runs-per-hour if it ran two runs at once)."""
    import subprocess

    code = (
        "import sys, torch; sys.path.insert(0, %r); torch.set_num_threads(1);"
        "from benchmarks.profile_train import setup, loop;"
        "s = setup(%r, 'learned', %d, %r); print(loop(*s[:5], %d)['images_per_s'])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code % (str(REPO), data, workers, list(extra), iters)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        for _ in range(2)
    ]  # fmt: skip
    rates = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return {"threads_each": 1, "workers_each": workers, "overrides": list(extra), "each": rates,
            "images_per_s": round(sum(rates), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="datasets/market_lt50")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/profile_train.json"))
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument(
        "--candidates", nargs="*", default=["pair", "compile", "cache", "cache_pair"]
    )
    parser.add_argument("--only", action="store_true", help="the candidates alone, no stages")
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    report = {"cpu": platform.processor() or platform.machine(), "cores": cores,
              "torch": torch.__version__, "recipe": "configs/study/base_mnv2.yaml, channels_last",
              "iters": args.iters, "command": " ".join(["python", *sys.argv])}  # fmt: skip
    torch.set_num_threads(cores)
    if not args.only:
        stages(args, report, cores)
    torch.set_num_threads(cores)
    candidates(args, report)
    write_json(args.out, report, indent=2)
    print(f"written: {args.out}")


def stages(args, report: dict, cores: int) -> None:
    cfg, dataset, sampler, loader, module = setup(args.data, "learned", 2)
    report["data_2_workers"] = data_only(loader, args.iters)
    report["model_learned"] = model_only(cfg, dataset, loader, module, args.iters // 2)
    cfg, dataset, sampler, loader, module = setup(args.data, "centers", 2)
    report["model_ir"] = model_only(cfg, dataset, loader, module, args.iters // 2)
    print(json.dumps(report, indent=1), flush=True)
    layouts = []
    for threads, workers in ((cores, 2), (cores, 1), (cores, 0), (1, 1)):
        torch.set_num_threads(threads)
        cfg, dataset, sampler, loader, module = setup(args.data, "learned", workers)
        row = {"threads": threads, "workers": workers,
               **loop(cfg, dataset, sampler, loader, module, args.iters)}  # fmt: skip
        print(row, flush=True)
        layouts.append(row)
    report["loop_layouts"] = layouts


def candidates(args, report: dict) -> None:
    if "pair" in args.candidates:
        report["pair_side_by_side"] = pair(args.data, args.iters, 0)
        print(report["pair_side_by_side"], flush=True)
    if "cache" in args.candidates:
        report["cache"] = cached(args.data, args.iters)
        print(report["cache"], flush=True)
    if "cache_pair" in args.candidates:
        report["pair_side_by_side_cache"] = pair(args.data, args.iters, 0, ["data.cache=memory"])
        print(report["pair_side_by_side_cache"], flush=True)
    if "compile" in args.candidates:
        report["compiled"] = compiled_loop(args.data, args.iters)
        print(report["compiled"], flush=True)


if __name__ == "__main__":
    main()
