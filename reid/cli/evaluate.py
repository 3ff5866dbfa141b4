"""Evaluate a checkpoint on a Market-format root / CSV manifest, or saved feature files."""

import argparse

from reid.arguments import Int, add_device, add_runtime
from reid.config import add_setting_flag
from reid.logging_utils import tool_main
from reid.workflows.evaluate import Drawing, Extraction, Scoring, run_evaluation


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="examples:\n  reid evaluate --checkpoint runs/demo/best.pt --out runs/demo/eval\n"
        "  reid evaluate --features feats.npz --metric cosine --rerank",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        "--model",
        help="training checkpoint (best.pt / last.pt), run folder, or an exported model (with --data)",
    )
    source.add_argument(
        "--features", help="npz/parquet with features, pids, camids, split (paths optional)"
    )
    parser.add_argument("--data", help="dataset root or CSV manifest (default: the checkpoint's)")
    parser.add_argument("--out", default="runs/eval")
    add_setting_flag(parser, "--metric", "eval.metric")
    add_setting_flag(parser, "--ap", "eval.ap")
    parser.add_argument(
        "--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)"
    )
    parser.add_argument(
        "--aqe",
        type=Int(0, 1000),
        default=0,
        metavar="K",
        help="average query expansion with K neighbours",
    )
    parser.add_argument("--flip", action="store_true", help="average features of image and mirror")
    add_device(parser)
    add_runtime(parser)
    add_setting_flag(parser, "--batch-size", "eval.batch_size")
    add_setting_flag(parser, "--workers", "data.workers")
    parser.add_argument(
        "--ranked", type=Int(0, 1000), default=8, help="queries drawn in ranked_lists.png (0: none)"
    )
    parser.add_argument("--topk", type=Int(1, 100), default=10, help="hits per drawn query")
    parser.add_argument("--worst-first", action="store_true", help="draw the lowest-AP queries")
    parser.add_argument("--save-features", help="also write the features to this npz/parquet file")
    return parser


def main(args: argparse.Namespace) -> None:
    run = run_evaluation(
        checkpoint=args.checkpoint,
        data=args.data,
        features=args.features,
        out=args.out,
        scoring=Scoring(args.metric, args.ap, args.rerank, args.aqe),
        extraction=Extraction(args.flip, args.device, args.batch_size, args.workers, args.runtime),
        drawing=Drawing(args.ranked, args.topk, args.worst_first),
        save_feature_file=args.save_features,
    )
    result, timings = run["result"], run["result"].timings
    print(result.table())
    print(run["verification"].table())
    print(
        f"timings: feature extraction {timings.get('extract_s', 0):.2f} s, search + metrics "
        f"{timings.get('search_and_metrics_s', 0):.2f} s"
    )
    for name, path in run["files"].items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.evaluate
