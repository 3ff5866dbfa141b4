"""The main job on built-in synthetic data: generate → train → evaluate → export index → search."""

import argparse

from reid.logging_utils import tool_main
from reid.workflows.demo import run_demo


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: python tools/demo.py --data datasets/synthetic --run runs/demo",
    )
    parser.add_argument("--data", default="datasets/synthetic")
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--config", default="configs/synthetic/demo.yaml")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run an earlier demo left in --run"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value for the training config")
    return parser


def main(args: argparse.Namespace) -> None:
    out = run_demo(args.data, args.run, args.config, args.overrides, args.overwrite)
    evaluation, timings = out["evaluation"], out["timings"]
    print("\n=== evaluation of best.pt on the synthetic query/gallery ===")
    print(evaluation["result"].table())
    print(evaluation["verification"].table())
    found = out["search"]
    print(
        f"\n=== search: 3 queries, top-5, other cameras only; identity {found['forgotten_pid']} "
        "removed from the index (the third query) ==="
    )
    print(found["table"].to_string(index=False, formatters={"score": "{:.3f}".format}))
    c = found["threshold"]
    for path in found["no_match"]:
        print(f"{path}: no match above threshold {c['threshold']:.4f} (FAR {c['far']:g})")
    print("\n=== where things are ===")
    print(f"data + contact sheet : {args.data}/contact_sheet.png")
    print(
        f"run folder           : {args.run} (config.yaml, metrics.jsonl, best.pt, curves.png, summary.csv)"
    )
    for name, path in evaluation["files"].items():
        print(f"evaluation {name:<10}: {path}")
    print(f"gallery index        : {args.run}/index")
    print(f"search results       : {args.run}/search (results.csv/json/png)")
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


if __name__ == "__main__":
    tool_main(main, get_args_parser())
