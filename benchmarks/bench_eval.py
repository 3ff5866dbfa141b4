"""Evaluator benchmark: ours vs torchreid's evaluate_rank (python path) vs a bare matmul.

Market scale (3,368 × 15,913 × 2,048) runs all three in one process on the same features and
checks the metrics agree; MSMT17 scale (11,659 × 82,161 × 2,048) runs ours alone (torchreid's
dense matrix would be 3.8 GB float32 plus an int64 argsort of 7.7 GB) and reports peak RSS.
Features are synthetic with identity structure: per-identity centers, a per-camera shift and
noise tuned so that mAP lands where BoT's does on Market (~0.86); ~17 gallery images per identity
plus distractors, like Market's test split. The floor is the faster of two bare float32 GEMMs of
the same size (torch/MKL and NumPy/OpenBLAS), both reported.

    python benchmarks/bench_eval.py --scale market   # writes benchmarks/results/eval_market.json
    python benchmarks/bench_eval.py --scale msmt     # writes benchmarks/results/eval_msmt.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from reid.evaluation import evaluate_distmat, evaluate_rank

SCALES = {"market": (3368, 15913, 751, 2798), "msmt": (11659, 82161, 3060, 0)}
RESULTS = Path(__file__).parent / "results"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def make_features(num_query, num_gallery, ids, distractors, dim=2048, noise=2.5, seed=0):
    """Identity structure written chunk by chunk into preallocated float32 arrays."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids + 1, dim), dtype=np.float32)
    camera_shift = 0.6 * rng.standard_normal((6, dim), dtype=np.float32)
    query_pids = rng.integers(1, ids + 1, num_query)
    gallery_pids = np.concatenate(
        [rng.integers(1, ids + 1, num_gallery - distractors), np.zeros(distractors, np.int64)]
    )
    query_cams, gallery_cams = rng.integers(0, 6, num_query), rng.integers(0, 6, num_gallery)

    def fill(pids, cams):
        out = np.empty((len(pids), dim), np.float32)
        for start in range(0, len(pids), 4096):
            end = min(start + 4096, len(pids))
            block = noise * rng.standard_normal((end - start, dim), dtype=np.float32)
            real = pids[start:end] > 0
            block[real] += centers[pids[start:end][real]]
            block += camera_shift[cams[start:end]]
            out[start:end] = block
        return out

    return (
        fill(query_pids, query_cams),
        fill(gallery_pids, gallery_cams),
        query_pids,
        gallery_pids,
        query_cams,
        gallery_cams,
    )


class RssSampler:
    """Peak resident memory *during* a block of code (sampled every 10 ms)."""

    def __enter__(self):
        import threading

        import psutil

        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.before = self.process.memory_info().rss

        def sample():
            while self.running:
                self.peak = max(self.peak, self.process.memory_info().rss)
                time.sleep(0.01)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def best_of(function, repeats):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=list(SCALES), default="market")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    num_query, num_gallery, ids, distractors = SCALES[args.scale]
    qf, gf, qp, gp, qc, gc = make_features(num_query, num_gallery, ids, distractors)
    rss_inputs = peak_rss_gib()
    q, g = torch.from_numpy(qf), torch.from_numpy(gf)
    report = {
        "scale": args.scale,
        "queries": num_query,
        "gallery": num_gallery,
        "dim": qf.shape[1],
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "peak_rss_after_inputs_gib": round(rss_inputs, 3),
    }

    # the floor: one float32 matrix multiply of the same size (no ranking at all), two BLAS
    def torch_matmul():
        for start in range(0, num_query, 1024):
            q[start : start + 1024] @ g.T

    def numpy_matmul():
        for start in range(0, num_query, 1024):
            qf[start : start + 1024] @ gf.T

    report["matmul_torch_s"], _ = best_of(torch_matmul, args.repeats)
    report["matmul_numpy_s"], _ = best_of(numpy_matmul, args.repeats)
    report["matmul_s"] = min(report["matmul_torch_s"], report["matmul_numpy_s"])
    report["ours_s"], ours = best_of(
        lambda: evaluate_rank(qf, gf, qp, gp, qc, gc, metric="cosine"), args.repeats
    )
    with RssSampler() as rss:  # a separate run: the sampling thread would disturb the timing
        evaluate_rank(qf, gf, qp, gp, qc, gc, metric="cosine")
    report["rss_before_evaluator_gib"] = round(rss.before / 2**30, 3)
    report["rss_peak_during_evaluator_gib"] = round(rss.peak / 2**30, 3)
    report["evaluator_working_set_gib"] = round((rss.peak - rss.before) / 2**30, 3)
    report["inputs_gib"] = round((qf.nbytes + gf.nbytes) / 2**30, 3)
    report["peak_rss_gib"] = round(peak_rss_gib(), 3)
    report["ours_over_matmul"] = report["ours_s"] / report["matmul_s"]
    report.update(
        {
            "rank1": ours.rank(1),
            "mAP": ours.mAP,
            "mINP": ours.mINP,
            "valid_queries": ours.num_valid_queries,
        }
    )
    if args.scale == "market":
        from torchreid.reid.metrics import evaluate_rank as torchreid_evaluate_rank

        start = time.perf_counter()
        distmat = (
            1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
        ).numpy()
        report["torchreid_distmat_s"] = time.perf_counter() - start
        start = time.perf_counter()
        cmc, mAP = torchreid_evaluate_rank(distmat, qp, gp, qc, gc, max_rank=50, use_cython=False)
        report["torchreid_evaluate_rank_s"] = time.perf_counter() - start
        report["speedup_vs_torchreid_evaluate_rank"] = (
            report["torchreid_evaluate_rank_s"] / report["ours_s"]
        )
        report["speedup_vs_torchreid_distmat_plus_rank"] = (
            report["torchreid_evaluate_rank_s"] + report["torchreid_distmat_s"]
        ) / report["ours_s"]
        report["abs_diff_mAP"] = abs(mAP - ours.mAP)
        report["max_abs_diff_cmc"] = float(np.abs(cmc - ours.cmc).max())
        # the same metric code on torchreid's own matrix: differences above come from the GEMMs
        same = evaluate_distmat(distmat, qp, gp, qc, gc)
        report["on_torchreid_distmat_abs_diff_mAP"] = abs(mAP - same.mAP)
        report["on_torchreid_distmat_max_abs_diff_cmc"] = float(np.abs(cmc - same.cmc).max())
        # exact float32 ties between a positive and another kept item: there torchreid's
        # quicksort order is arbitrary, ours puts the lower gallery index first
        tied = 0
        for row, pid, cam in zip(distmat, qp, qc):
            keep = ~((gp == pid) & (gc == cam))
            positive = row[keep & (gp == pid)]
            tied += int(np.isin(positive, row[keep & (gp != pid)]).sum())
        report["positives_tied_with_a_negative"] = tied
    else:
        report["torchreid_theoretical_distmat_gib"] = num_query * num_gallery * 4 / 2**30
        report["torchreid_theoretical_argsort_gib"] = num_query * num_gallery * 8 / 2**30
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"eval_{args.scale}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
