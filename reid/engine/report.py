"""End-of-run summary: a CSV of the per-epoch history (pandas) and loss/accuracy/mAP curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def write_report(history: list[dict], outputs) -> None:
    """``summary.csv`` and ``curves.png`` into the run's ``OutputFolder``."""
    if not history:
        return
    table = pd.DataFrame(history)
    outputs.write("summary.csv", lambda tmp: table.to_csv(tmp, index=False))
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
    outputs.write("curves.png", lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
