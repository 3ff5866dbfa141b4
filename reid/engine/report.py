"""End-of-run summary: a CSV of the per-epoch history (pandas) and loss/accuracy/mAP curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def write_report(history: list[dict], run_dir: Path) -> None:
    if not history:
        return
    table = pd.DataFrame(history)
    table.to_csv(run_dir / "summary.csv", index=False)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    loss_columns = [c for c in table.columns if c.startswith("loss")]
    table.plot(x="epoch", y=loss_columns, ax=axes[0], title="loss")
    table.plot(x="epoch", y=["acc"], ax=axes[1], title="training accuracy")
    evaluated = table.dropna(subset=["mAP"]) if "mAP" in table else table.iloc[0:0]
    if len(evaluated):
        evaluated.plot(
            x="epoch", y=["rank1", "mAP", "mINP"], ax=axes[2], marker="o", title="evaluation"
        )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)
