"""Search a gallery index with one or more query images or folders."""

import argparse

from reid.logging_utils import tool_main
from reid.workflows.index import search


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: python tools/search.py --index runs/demo/index --checkpoint runs/demo/best.pt "
        "--topk 5 datasets/synthetic/query/0101_c1s1_000001_01.jpg",
    )
    parser.add_argument("images", nargs="+", help="query image(s) or folder(s)")
    parser.add_argument("--index", required=True)
    parser.add_argument(
        "--checkpoint", required=True, help="the model the index was built with (or its export)"
    )
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument(
        "--exclude-same-camera", action="store_true", help="drop results from the query's camera"
    )
    parser.add_argument("--out", default=None, help="folder for results.csv/json/png")
    parser.add_argument(
        "--report-recall",
        action="store_true",
        help="recall vs exact search (needs --keep-features)",
    )
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists visited")
    parser.add_argument("--device", default=None)
    return parser


def main(args: argparse.Namespace) -> None:
    result = search(
        args.index,
        args.images,
        args.checkpoint,
        args.topk,
        args.exclude_same_camera,
        args.out,
        args.device,
        args.report_recall,
        args.nprobe,
    )
    print(result["table"].to_string(index=False, formatters={"score": "{:.4f}".format}))
    if "threshold" in result:
        c = result["threshold"]
        for path in result["no_match"]:
            print(f"{path}: no match above threshold {c['threshold']:.4f} (FAR {c['far']:g})")
    if "recall" in result:
        print("recall vs exact search:", result["recall"])
    for path in result.get("files", []):
        print(f"saved: {path}")


if __name__ == "__main__":
    tool_main(main, get_args_parser())
