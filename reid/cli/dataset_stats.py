"""Print dataset statistics per split and save a sorted images-per-id histogram."""

import argparse
from pathlib import Path

from reid.data import LOADERS, load_dataset, verify_images
from reid.data.stats import images_per_id, plot_images_per_id, split_stats
from reid.errors import OutputError
from reid.logging_utils import tool_main
from reid.outputs import output_file


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog="example: reid stats datasets/synthetic"
    )
    parser.add_argument("root", help="Market-format root, MSMT17 root or CSV manifest")
    parser.add_argument("--kind", default="auto", choices=("auto", *LOADERS))
    parser.add_argument(
        "--plot",
        default=None,
        help="histogram PNG (default: NAME_images_per_id.png in the current folder, never inside the dataset)",
    )
    parser.add_argument(
        "--verify-images", action="store_true", help="decode every image; fail listing broken ones"
    )
    return parser


def main(args: argparse.Namespace) -> None:
    source = Path(args.root).resolve()
    name = source.stem if source.suffix == ".csv" else source.name
    plot = Path(args.plot or f"{name}_images_per_id.png")
    if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise OutputError(f"--plot {plot}: must end in .png, .pdf or .svg")
    folder, plot_name = output_file(plot, "dataset_stats", "--plot")
    folder.prepare([plot_name])  # before the (possibly long) --verify-images pass
    dataset = load_dataset(args.root, args.kind, all_splits=False)
    print(
        f"{'split':<8} {'ids':>6} {'images':>8} {'cams':>5} {'min':>5} {'median':>7} {'max':>5} {'max/min':>8} {'Gini':>6} {'distr/junk':>10}"
    )
    for name in ("train", "query", "gallery"):
        records = dataset.split(name)
        if not records:
            continue
        s = split_stats(records)
        print(
            f"{name:<8} {s.ids:>6} {s.images:>8} {s.cameras:>5} {s.min_per_id:>5} {s.median_per_id:>7.1f} "
            f"{s.max_per_id:>5} {s.imbalance_ratio:>8.2f} {s.gini:>6.3f} {s.distractors:>10}"
        )
    if args.verify_images:
        count = verify_images(dataset.train + dataset.query + dataset.gallery)
        print(f"all {count} images decode")
    counts = images_per_id(dataset.train)
    title = f"{name} ({dataset.name}, {source}): training images per identity"
    folder.write(plot_name, lambda tmp: plot_images_per_id(counts, str(tmp), title))
    print(f"histogram: {plot}")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.dataset_stats
