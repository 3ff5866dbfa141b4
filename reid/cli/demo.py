"""The main job on built-in synthetic data: generate → train → evaluate → export index → search."""

import argparse

from reid.logging_utils import tool_main
from reid.workflows.demo import run_demo


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid demo --data datasets/synthetic --run runs/demo",
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
        "\n=== search: the best-ranked query, and one whose identity "
        f"{found['forgotten_pid']} was then removed from the index; top-5, other cameras ==="
    )
    print(found["table"].to_string(index=False, formatters={"score": "{:.3f}".format}))
    c = found["threshold"]
    for path in found["queries"]:
        if path in found["no_match"]:
            print(f"{path}: no match above threshold {c['threshold']:.4f} (FAR {c['far']:g})")
        else:
            hits = found["table"][(found["table"]["query_path"] == path) & found["table"]["match"]]
            print(
                f"{path}: {len(hits)} match(es) above threshold {c['threshold']:.4f} "
                f"(FAR {c['far']:g}), best: identity {int(hits.iloc[0]['pid'])}"
            )
    points = found.get("operating_points", [])
    if points:
        print("\noperating points calibrated into the index (search --far F picks one):")
        for p in points:
            dir_ = "n/a" if p["dir_at_far"] is None else f"{p['dir_at_far']:.1%}"
            chosen = "  <- this search" if p["far"] == c["far"] else ""
            print(f"  FAR {p['far']:<6g} threshold {p['threshold']:.4f}  DIR {dir_}{chosen}")
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
    tool_main(main, get_args_parser())  # python -m reid.cli.demo
