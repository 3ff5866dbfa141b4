"""Export a searchable gallery index (a vector store + metadata + manifest) from a model and a gallery."""

import argparse

from reid.arguments import BATCH, PID, RATE, add_device, add_runtime
from reid.errors import ReidError
from reid.index.stores import (
    add_store_arguments,
    given_store_flags,
    parse_store_options,
    store_arguments,
)
from reid.logging_utils import tool_main
from reid.workflows.index import ExportOptions, export_index, remove_from_index


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="examples:\n  reid export-index --checkpoint runs/demo/best.pt --gallery datasets/synthetic "
        "--out runs/demo/index\n  reid export-index --checkpoint model.onnx --gallery photos/ "
        "--out idx --index IVF256,PQ32 --report-recall",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", "--model",
                        help="training checkpoint, or an exported model (.onnx, .pt2) with its sidecar")  # fmt: skip
    parser.add_argument("--gallery", help="Market-format root, image folder, or CSV manifest")
    parser.add_argument(
        "--out",
        required=True,
        help="index directory: new, empty, or an index to replace (any other folder is refused)",
    )
    add_store_arguments(parser)
    parser.add_argument(
        "--append",
        action="store_true",
        help="add the images to an existing index (images already in it are skipped)",
    )
    parser.add_argument(
        "--keep-features", action="store_true", help="store exact vectors (recall reports)"
    )
    parser.add_argument(
        "--report-recall", action="store_true", help="recall@1/10 vs exact search, in the manifest"
    )
    parser.add_argument(
        "--calibrate",
        metavar="SPLIT",
        help="labelled query/gallery (Market-format root or CSV) to calibrate the no-match threshold on",
    )
    parser.add_argument(
        "--far",
        type=RATE,
        default=1e-3,
        help="false-alarm rate of the default operating point (thresholds at 1e-1…1e-4 are "
        "stored too; search --far picks one)",
    )
    parser.add_argument(
        "--remove-pids", nargs="+", type=PID, default=(), help="remove these identities from --out"
    )
    parser.add_argument(
        "--remove-paths", metavar="FILE", help="remove the images listed (one path per line)"
    )
    add_device(parser)
    add_runtime(parser)
    parser.add_argument("--batch-size", type=BATCH, default=64)
    return parser


def main(args: argparse.Namespace) -> None:
    given = given_store_flags(args)
    if (args.append or args.remove_pids or args.remove_paths) and given:
        raise ReidError(f"{', '.join(given)}: an existing index keeps its own backend and options")
    if args.remove_pids or args.remove_paths:
        if args.gallery or args.append:
            raise ReidError("--remove-pids/--remove-paths edit an existing index: no --gallery")
        done = remove_from_index(args.out, args.remove_pids, args.remove_paths)
        print(f"index: {args.out}: removed {done['removed']} vectors, {done['count']} left")
        if done["deleted_images"]:
            print(f"deleted {len(done['deleted_images'])} enrolled images of the removed rows")
        if done["unknown_pids"] or done["missing_paths"]:
            print(
                f"not in the index: pids {done['unknown_pids']}, "
                f"{len(done['missing_paths'])} listed paths"
            )
        return
    if not args.checkpoint or not args.gallery:
        raise ReidError("--checkpoint and --gallery are needed to export an index")
    store = None
    if not args.append:
        store = parse_store_options(args.store_backend, **store_arguments(args))
    options = ExportOptions(store, args.keep_features, args.report_recall, args.calibrate, args.far,
                            args.runtime)  # fmt: skip
    info = export_index(args.checkpoint, args.gallery, args.out, options, args.append,
                        args.device, args.batch_size)  # fmt: skip
    print(
        f"index: {args.out} ({info['count']} vectors, {info['added']} added, {info['manifest']['factory']}, "
        f"{info['manifest']['dim']}-d; gallery paths stored absolute)"
    )
    if info["skipped"]:
        print(f"skipped {info['skipped']} images already in the index (same absolute path)")
    if "calibration" in info["manifest"]:
        c = info["manifest"]["calibration"]
        print(
            f"calibrated: threshold {c['threshold']:.4f} at FAR {c['far']:g} "
            f"(measured {c['measured_far']:.4g} on {c['queries']} queries; DIR {c['dir_at_far']:.2%})"
        )
    if "recall" in info["manifest"]:
        print("recall vs exact search:", info["manifest"]["recall"])


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.export_index
