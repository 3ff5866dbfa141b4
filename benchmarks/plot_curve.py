"""The IR study's learning curve: validation mAP against images seen, one line per arm.

Reads the study folder's ``results.csv`` (arms named ``ARM_bK``: budget K× of the 1× study
budget) and writes ``curve.csv`` (arm, budget, images seen, R1, mAP, mINP, change of mAP from
the previous budget) and ``curve.png`` beside it::

    python benchmarks/plot_curve.py benchmarks/results/ir_curve
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid.outputs import OutputFolder  # noqa: E402

BATCH = 64  # PK 16×4, the study recipe's batch


def curve(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in results.itertuples():
        match = re.fullmatch(r"(.+)_b(\d+)", row.arm)
        if not match:
            continue
        rows.append(
            {
                "arm": match.group(1),
                "budget": int(match.group(2)),
                "images": int(row.epochs * row.iters_per_epoch * BATCH),
                "seed": row.seed,
                "rank1": 100 * row.rank1,
                "mAP": 100 * row.mAP,
                "mINP": 100 * row.mINP,
            }
        )
    table = pd.DataFrame(rows).sort_values(["arm", "budget"]).reset_index(drop=True)
    if not table.empty:
        table["mAP_gain_vs_half"] = table.groupby("arm")["mAP"].diff().round(2)
    return table


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for arm, group in table.groupby("arm"):
        ax.plot(group["images"], group["mAP"], marker="o", label=arm,
                linestyle="--" if "_ir" in arm else "-")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("images seen (log 2)")
    ax.set_ylabel("validation mAP (%)")
    ax.set_title("Market-1501 validation split, rho 50: mAP vs training budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="study folder holding results.csv")
    args = parser.parse_args()
    folder = Path(args.study)
    table = curve(pd.read_csv(folder / "results.csv"))
    outputs = OutputFolder(folder, "plot_curve", "study")
    outputs.prepare(["curve.csv", "curve.png"])
    outputs.write("curve.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.2f"))
    outputs.write("curve.png", lambda tmp: plot(table, tmp))
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
