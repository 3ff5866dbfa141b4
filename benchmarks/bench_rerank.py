"""k-reciprocal re-ranking benchmark: ours vs torchreid's ``re_ranking``, time, memory, distances.

In one process, on the same synthetic 2,048-d features (bench_eval's generator, ``easy``): ours
(``KReciprocalReranker``: construction, then every (block, G) re-ranked distance block, as the
evaluator consumes them) and torchreid's ``re_ranking`` on its own three cosine distance
matrices (``compute_distance_matrix``, as its engine calls it). The distances are compared over
the whole (Q, G) matrix: max |difference| and identical top-10 per query. Each side's extra memory
is measured in a separate fresh process (peak RSS above the inputs, sampled every 10 ms).
torchreid's dense (Q+G)² matrices do not fit at MSMT17 scale (the estimate is reported), so
there ours runs alone.

    python benchmarks/bench_rerank.py --scale small market   # → results/rerank.json (merged)
    python benchmarks/bench_rerank.py --scale msmt --repeats 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_eval import NOISE, RssSampler, best_of, cpu_name, make_features  # noqa: E402
from torchreid.reid.metrics import compute_distance_matrix  # noqa: E402
from torchreid.reid.utils.rerank import re_ranking  # noqa: E402

from reid.evaluation.rerank import KReciprocalReranker  # noqa: E402

SCALES = {
    "small": (1000, 5000, 300, 500),
    "market": (3368, 15913, 751, 2798),
    "msmt": (11659, 82161, 3060, 0),
    "tiny": (200, 800, 50, 50),  # a smoke run of the script
}
RESULTS = Path(__file__).parent / "results" / "rerank.json"
BLOCK = 256  # queries per block of re-ranked distances (what the evaluator asks for)


def features(scale: str):
    num_query, num_gallery, ids, distractors = SCALES[scale]
    qf, gf, *_ = make_features(num_query, num_gallery, ids, distractors, noise=NOISE["easy"][scale])
    return qf, gf


def ours(qf, gf, keep: bool):
    reranker = KReciprocalReranker(qf, gf, "cosine")
    blocks = []
    for start in range(0, len(qf), BLOCK):
        block = reranker(start, min(start + BLOCK, len(qf))).numpy()
        if keep:
            blocks.append(block)
    return np.vstack(blocks) if keep else None


def torchreid(qf, gf):
    q, g = torch.from_numpy(qf), torch.from_numpy(gf)
    return re_ranking(
        compute_distance_matrix(q, g, "cosine").numpy(),
        compute_distance_matrix(q, q, "cosine").numpy(),
        compute_distance_matrix(g, g, "cosine").numpy(),
    )


def child(scale: str, side: str) -> None:
    qf, gf = features(scale)
    with RssSampler() as rss:
        ours(qf, gf, keep=False) if side == "ours" else torchreid(qf, gf)
    print(json.dumps({"extra_gib": round((rss.peak - rss.before) / 2**30, 3)}))


def memory_of(scale: str, side: str) -> dict:
    command = [sys.executable, __file__, "--scale", scale, "--child", side]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def scale_report(scale: str, repeats: int) -> dict:
    qf, gf = features(scale)
    num = len(qf) + len(gf)
    report = {"queries": len(qf), "gallery": len(gf), "dim": qf.shape[1]}
    fits = scale != "msmt"
    report["ours_s"], mine = best_of(lambda: ours(qf, gf, keep=fits), repeats)
    print(f"[{scale}] ours {report['ours_s']:.1f} s", flush=True)
    if fits:
        report["torchreid_s"], theirs = best_of(lambda: torchreid(qf, gf), repeats)
        print(f"[{scale}] torchreid {report['torchreid_s']:.1f} s", flush=True)
        report["ours_speedup"] = round(report["torchreid_s"] / report["ours_s"], 3)
        report["max_abs_diff"] = float(np.abs(mine.astype(np.float64) - theirs).max())
        top_ours = np.argsort(mine, axis=1, kind="stable")[:, :10]
        top_theirs = np.argsort(theirs, axis=1, kind="stable")[:, :10]
        report["identical_top10_fraction"] = float((top_ours == top_theirs).all(1).mean())
        del mine, theirs
        report["torchreid_memory"] = memory_of(scale, "torchreid")
    else:
        # original_dist, V and its float32 copies, initial_rank (int64): several N × N arrays
        report["torchreid_one_dense_matrix_gib"] = round(num * num * 4 / 2**30, 1)
    report["ours_memory"] = memory_of(scale, "ours")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=list(SCALES), nargs="+", default=["small", "market"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", choices=("ours", "torchreid"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.scale[0], args.child)
    path = Path(args.out)
    report = json.loads(path.read_text()) if path.exists() else {}
    report.update(
        {
            "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            "block": BLOCK,
            "k1_k2_lambda": [20, 6, 0.3],
        }
    )
    for scale in args.scale:
        report[scale] = scale_report(scale, args.repeats)
        report[scale]["command"] = "python benchmarks/bench_rerank.py " + " ".join(sys.argv[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")  # after each scale: resumable
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
