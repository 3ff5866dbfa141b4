"""Train a re-ID model from a YAML config with ``section.key=value`` overrides."""

import argparse

from reid.config import load_config
from reid.engine.trainer import fit
from reid.logging_utils import tool_main


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: python tools/train.py --config configs/synthetic/demo.yaml train.epochs=4 head.name=arcface\n"
        "distributed: torchrun --nproc_per_node=2 tools/train.py --config ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file (holds only what differs from the defaults)")
    parser.add_argument("--output", help="run folder (default: output.dir of the config)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.resume:
        fit(None, args.resume, resume=True, progress=not args.no_progress)
        print(f"run folder: {args.resume}")
        return
    cfg = load_config(args.config, args.overrides)
    run_dir = args.output or cfg.output.dir
    final = fit(cfg, run_dir, progress=not args.no_progress)
    if final:
        print(
            f"run folder: {run_dir} (config.yaml, metrics.jsonl, last.pt, best.pt, summary.csv, curves.png)"
        )
        if "mAP" in final:
            print(
                f"final: R1 {final['rank1']:.2%}  mAP {final['mAP']:.2%}  mINP {final['mINP']:.2%}"
            )


if __name__ == "__main__":
    tool_main(main, get_args_parser())
