"""Train a re-ID model from a YAML config with ``section.key=value`` overrides."""

import argparse

from reid.logging_utils import tool_main
from reid.workflows.train import RESUMABLE, train


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="examples:\n  reid train --config configs/synthetic/demo.yaml train.epochs=4 head.name=arcface\n"
        "  reid train --resume runs/demo train.epochs=20   # continue, or extend\n"
        "distributed: torchrun --nproc_per_node=2 -m reid train --config ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file (holds only what differs from the defaults)")
    parser.add_argument(
        "--output",
        help="run folder (default: output.dir of the config, or DIR-2, DIR-3, … if it holds a run)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run that --output already holds"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help=f"continue the run in RUN_DIR from its last.pt (may override: {', '.join(RESUMABLE)})",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    return parser


def main(args: argparse.Namespace) -> None:
    run_dir, final = train(
        args.config,
        args.overrides,
        args.output,
        args.overwrite,
        args.resume,
        progress=not args.no_progress,
    )
    print(
        f"run folder: {run_dir} (config.yaml, metrics.jsonl, last.pt, best.pt, summary.csv, curves.png)"
    )
    if "mAP" in final:
        print(f"final: R1 {final['rank1']:.2%}  mAP {final['mAP']:.2%}  mINP {final['mINP']:.2%}")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.train
