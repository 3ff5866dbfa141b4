"""Generate a synthetic pedestrian dataset in the Market-1501 layout."""

import argparse
import time

from reid.arguments import SEED, Float, Int
from reid.data.stats import split_stats
from reid.data.synthetic import SyntheticSpec, contact_sheet, generate
from reid.logging_utils import tool_main
from reid.outputs import OutputFolder


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 128x64, got {text!r}") from None
    if not (16 <= height <= 1024 and 8 <= width <= 1024):
        raise argparse.ArgumentTypeError(f"size must be between 16x8 and 1024x1024, got {text!r}")
    return height, width


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid make-synthetic --out datasets/synthetic --ids 200 --longtail-ratio 8",
    )
    parser.add_argument(
        "--out", required=True, help="output root (bounding_box_train/, query/, bounding_box_test/)"
    )
    parser.add_argument(
        "--ids", type=Int(4, 100_000), default=200, help="identities; half train, half test"
    )
    parser.add_argument("--cams", type=Int(2, 9), default=6, help="cameras (Market names: 1-9)")
    parser.add_argument(
        "--images-per-id", type=Int(2, 10_000), default=24, help="n_max of the long-tail profile"
    )
    parser.add_argument(
        "--longtail-ratio",
        type=Float(1, 1e6),
        default=8.0,
        help="rho = n_max / n_min (1 = balanced)",
    )
    parser.add_argument("--size", type=parse_size, default=(128, 64), help="HxW")
    parser.add_argument("--distractors", type=Int(0, 1_000_000), default=100)
    parser.add_argument("--junk", type=Int(0, 1_000_000), default=30)
    parser.add_argument("--seed", type=SEED, default=0)
    return parser


def main(args: argparse.Namespace) -> None:
    spec = SyntheticSpec(
        args.ids,
        args.cams,
        args.images_per_id,
        args.longtail_ratio,
        args.size,
        args.distractors,
        args.junk,
        args.seed,
    )
    # every output name checked before the generation: the contact sheet too
    OutputFolder(args.out, "synthetic").check(["contact_sheet.png"])
    start = time.perf_counter()
    counts = generate(args.out, spec)
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    print(
        f"wrote {total} images to {args.out} in {seconds:.1f} s ({total / seconds * 60:.0f} images/min): {counts}"
    )
    from reid.data import load_market_format

    train = load_market_format(args.out, "synthetic", splits=("train",)).train
    stats = split_stats(train)
    print(
        f"train: {stats.ids} ids, {stats.images} images, imbalance {stats.imbalance_ratio:.1f}, Gini {stats.gini:.3f}"
    )
    contact_sheet(args.out, f"{args.out}/contact_sheet.png")
    print(f"contact sheet: {args.out}/contact_sheet.png")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.make_synthetic
