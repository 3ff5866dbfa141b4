"""Build a held-out query/gallery split (and optionally a long-tail training set) from a
Market-format ``bounding_box_train``, written as a Market layout of symbolic links."""

import argparse

from reid.arguments import SEED, Float, Int
from reid.data.splits import make_holdout_split
from reid.logging_utils import tool_main


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid make-split $REID_MARKET1501_ROOT --out datasets/market_holdout "
        "--holdout-ids 150 --longtail-ratio 10 --seed 0",
    )
    parser.add_argument("source_root", help="folder holding bounding_box_train/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--holdout-ids", type=Int(1, 1_000_000), required=True)
    parser.add_argument(
        "--longtail-ratio",
        type=Float(1, 1e6),
        default=1.0,
        help="rho of the training caps (1 = as is)",
    )
    parser.add_argument("--seed", type=SEED, default=0)
    return parser


def main(args: argparse.Namespace) -> None:
    stats = make_holdout_split(
        args.source_root, args.out, args.holdout_ids, args.longtail_ratio, args.seed
    )
    print(
        f"{'split':<8} {'ids':>5} {'images':>7} {'min':>4} {'median':>7} {'max':>4} {'rho_eff':>8} {'Gini':>6}"
    )
    for name in ("train", "query", "gallery"):
        s = stats[name]
        print(
            f"{name:<8} {s['ids']:>5} {s['images']:>7} {s['min_per_id']:>4} {s['median_per_id']:>7.1f} "
            f"{s['max_per_id']:>4} {s['imbalance_ratio']:>8.2f} {s['gini']:>6.3f}"
        )
    print(f"written to {args.out} (split.json holds these numbers)")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.make_split
