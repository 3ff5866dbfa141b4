"""Per class: angle between the classifier weight (or IR center) and the class's feature center,
against its number of training images — a CSV and a scatter PNG."""

import argparse

from reid.arguments import add_device
from reid.logging_utils import tool_main
from reid.outputs import OutputFolder
from reid.workflows.diagnostics import correlation, plot_angles, weight_center_angles


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid diagnose --checkpoint runs/demo/best.pt --out runs/demo/diagnose",
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", help="training set (default: the checkpoint's)")
    parser.add_argument("--out", required=True)
    add_device(parser)
    return parser


def main(args: argparse.Namespace) -> None:
    outputs = OutputFolder(args.out, "diagnose_weights")
    outputs.prepare(["angles.csv", "angles.png"])
    table = weight_center_angles(args.checkpoint, args.data, args.device)
    out = outputs.folder
    outputs.write("angles.csv", lambda tmp: table.to_csv(tmp, index=False))
    outputs.write("angles.png", lambda tmp: plot_angles(table, str(tmp)))
    rare = table[table["images"] <= table["images"].quantile(0.25)]["angle_deg"].mean()
    common = table[table["images"] >= table["images"].quantile(0.75)]["angle_deg"].mean()
    print(
        f"mean angle: rarest quarter {rare:.1f} deg, most frequent quarter {common:.1f} deg; "
        f"Spearman(images, angle) = {correlation(table):+.2f}"
    )
    print(f"written: {out / 'angles.csv'}, {out / 'angles.png'}")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.diagnose_weights
