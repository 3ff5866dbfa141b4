"""Search a gallery index with one or more query images or folders."""

import argparse

from reid.arguments import RATE, SCORE, TOPK, Int, add_device, add_runtime
from reid.index.store import SearchOptions
from reid.logging_utils import tool_main
from reid.workflows.index import NoMatch, Runs, search


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid search --index runs/demo/index --checkpoint runs/demo/best.pt "
        "--topk 5 datasets/synthetic/query/0101_c1s1_000001_01.jpg",
    )
    parser.add_argument("images", nargs="+", help="query image(s) or folder(s)")
    parser.add_argument("--index", required=True)
    parser.add_argument(
        "--checkpoint",
        "--model",
        required=True,
        help="the model the index was built with (a checkpoint, or an export of it)",
    )
    parser.add_argument("--topk", type=TOPK, default=10)
    parser.add_argument(
        "--exclude-same-camera", action="store_true", help="drop results from the query's camera"
    )
    parser.add_argument("--out", default=None, help="folder for results.csv/json/png")
    parser.add_argument(
        "--report-recall",
        action="store_true",
        help="recall vs exact search (needs --keep-features)",
    )
    parser.add_argument(
        "--nprobe", type=Int(1, 1 << 20), default=None, help="IVF lists visited (IVF indexes)"
    )
    parser.add_argument(
        "--ef", type=Int(1, 1 << 20), default=None, help="HNSW search breadth (HNSW indexes)"
    )
    point = parser.add_mutually_exclusive_group()
    point.add_argument(
        "--far",
        type=RATE,
        default=None,
        help="operating point: one of the false-alarm rates calibrated into the index "
        "(default: the one chosen at export)",
    )
    point.add_argument(
        "--threshold", type=SCORE, default=None, help="explicit no-match threshold (cosine)"
    )
    point.add_argument(
        "--no-threshold", action="store_true", help="rank only: no match / no-match decision"
    )
    add_device(parser)
    add_runtime(parser)
    return parser


def main(args: argparse.Namespace) -> None:
    result = search(
        args.index,
        args.images,
        args.checkpoint,
        args.topk,
        args.exclude_same_camera,
        args.out,
        Runs(args.device, args.runtime),
        args.report_recall,
        SearchOptions(args.nprobe, args.ef),
        NoMatch(args.far, args.threshold, args.no_threshold),
    )
    print(result["table"].to_string(index=False, formatters={"score": "{:.4f}".format}))
    if result["embedding"].get("note"):
        print(f"note: {result['embedding']['note']}")
    if "threshold" in result:
        c = result["threshold"]
        rate = f"FAR {c['far']:g}" if c.get("far") is not None else "explicit --threshold"
        for path in result["no_match"]:
            print(f"{path}: no match above threshold {c['threshold']:.4f} ({rate})")
    if "recall" in result:
        print("recall vs exact search:", result["recall"])
    for path in result.get("files", []):
        print(f"saved: {path}")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.search
