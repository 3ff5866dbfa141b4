"""Run a declared grid of training arms on real data, resumably; summarise it as CSV, table, plot."""

import argparse

from reid.arguments import Int
from reid.logging_utils import tool_main
from reid.workflows.study import run_study


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid study benchmarks/results/ir_study/grid.yaml "
        "--out benchmarks/results/ir_study\n(rerun the same command to continue: finished runs are skipped)",
    )
    parser.add_argument("grid", help="grid YAML (config, data per rho, seeds, arms)")
    parser.add_argument("--out", required=True, help="study folder: runs/, results.csv/md, PNG")
    parser.add_argument("--only", nargs="*", help="run only these arms")
    parser.add_argument(
        "--parallel",
        type=Int(1, 64),
        default=1,
        help="train this many runs side by side, each in its own process (default 1); the runs "
        "must pin train.threads so that PARALLEL x threads fit the cores. Whether it pays depends "
        "on the machine (2 cores: 1.17-1.22x on an AVX2 EPYC, 0.99x on an AVX-512 EPYC; "
        "benchmarks/results/study_parallel.json)",
    )
    parser.add_argument(
        "--refit-parents",
        action="store_true",
        help="a fine-tuning run whose parent is done but has no checkpoint here (checkpoints are "
        "not committed with results): train the parent again under OUT/refit and start from it",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    table = run_study(args.grid, args.out, args.only, args.parallel, args.refit_parents)
    print(f"{len(table)} runs done; {args.out}/results.md, results.csv, map_vs_rho.png")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.study
