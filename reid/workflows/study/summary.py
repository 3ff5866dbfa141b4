"""A study's summaries: ``results.csv`` (one row per run), ``results.md`` (mean ± std per arm
and ρ, paired differences) and ``map_vs_rho.png``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...outputs import OutputFolder
from .grid import Grid

COLUMNS = [
    "arm", "head", "weights", "rho", "seed", "init_from", "rank1", "mAP", "mINP", "wall_s",
    "center_angle_rare", "center_angle_mid", "center_angle_frequent",
    "center_angle_rare_first", "epochs", "iters_per_epoch", "resumed", "parallel", "machine",
    "parent_mAP", "parent_machine",
]  # fmt: skip


STUDY_FILES = ("results.csv", "results.md", "map_vs_rho.png")


def summarise(grid: Grid, out: Path) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["parallel"] = table["parallel"].fillna(1).astype(int)  # runs from before --parallel
    table["machine"] = table["machine"].astype(object).fillna("not recorded")  # runs before it
    outputs = OutputFolder(out, "study")
    outputs.write("results.csv", lambda tmp: table.to_csv(tmp, index=False))
    if table.empty:
        return table
    order = {a.name: i for i, a in enumerate(grid.arms)}
    lines = ["| arm | ρ | seeds | R1 | mAP | mINP | rare-class center angle (first → last epoch) | wall per whole run |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (arm, rho), g in sorted(
        table.groupby(["arm", "rho"]), key=lambda kv: (kv[0][1], order.get(kv[0][0], 99))
    ):

        def ms(col, scale=100.0, g=g):
            v = g[col].astype(float) * scale
            return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"

        angle = (
            f"{g['center_angle_rare_first'].astype(float).mean():.1f}° → {g['center_angle_rare'].astype(float).mean():.1f}°"
            if g["center_angle_rare"].notna().all()
            else "—"
        )
        lines.append(
            f"| {arm} | {rho:g} | {len(g)} | {ms('rank1')} | {ms('mAP')} | {ms('mINP')} | {angle} | "
            f"{_wall_per_run(g)} |"
        )
    lines += ["", "Paired differences, IR − the learned arm the grid pairs it with (its head form, or its "
              "recipe), same ρ and seed, in mAP points:", "",
              "| IR arm | learned arm | ρ | pairs | ΔmAP per seed | mean ΔmAP | ΔR1 mean |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm in grid.arms:
        if arm.pair is None:
            continue
        for rho in sorted(table["rho"].unique()):
            at = table[table.rho == rho]
            lines += _paired_row(at, arm.name, arm.pair, rho)
    lines += _against_best_learned(table)
    lines += _against_peer_engine(table, [a.name for a in grid.arms if a.engine == "torchreid"])
    machines = table["machine"].value_counts()
    runs = {m: f"{n} run" + ("s" if n > 1 else "") for m, n in machines.items()}
    lines += ["", "Machines: " + "; ".join(f"{m} ({n})" for m, n in runs.items()) + ".",
              "", "Wall per whole run: the mean over the runs trained start to end in one go "
              "(a resumed run's time covers only its rest), on whichever machine ran each; "
              "each run's own is in results.csv with its machine."]  # fmt: skip
    outputs.write_text("results.md", "\n".join(lines) + "\n")
    outputs.write("map_vs_rho.png", lambda tmp: _plot(table, grid, tmp))
    return table


def _wall_per_run(g: pd.DataFrame) -> str:
    """Mean wall time of the runs of ``g`` that trained from start to end in one invocation: a
    resumed run's time covers only the rest."""
    whole = g[~g["resumed"].fillna(False).astype(bool)]["wall_s"].astype(float)
    if whole.empty:
        return "— (every run resumed)"
    return f"{whole.mean() / 60:.1f} min" + (
        f" ({len(whole)} of {len(g)})" if len(whole) < len(g) else ""
    )


def _paired_row(at: pd.DataFrame, ir: str, learned: str, rho: float) -> list[str]:
    """One table row: arm ``ir`` − arm ``learned`` in ``at`` (one ρ), paired by seed; no row
    when they share no seed."""
    a, b = (at[at.arm == name].set_index("seed") for name in (ir, learned))
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return []
    d = [100 * (a.loc[s, "mAP"] - b.loc[s, "mAP"]) for s in seeds]
    r = [100 * (a.loc[s, "rank1"] - b.loc[s, "rank1"]) for s in seeds]
    cells = [f"{x:+.2f}" + _parents_differ(a.loc[s], b.loc[s]) for x, s in zip(d, seeds)]
    return [
        f"| {ir} | {learned} | {rho:g} | {len(seeds)} | "
        f"{', '.join(cells)} | {np.mean(d):+.2f} | {np.mean(r):+.2f} |"
    ]


def _parents_differ(a: pd.Series, b: pd.Series) -> str:
    """A note for a pair of fine-tuning runs that started from different parents (a refit trained
    again on a machine that rounds differently): their difference is not one start's."""
    pa, pb = a.get("parent_mAP"), b.get("parent_mAP")
    if pd.isna(pa) or pd.isna(pb) or pa == pb:
        return ""
    return f" (parents {100 * pa:.2f} vs {100 * pb:.2f})"


def _against_best_learned(table: pd.DataFrame) -> list[str]:
    """The study's question: each IR arm against the *best* learned arm among the runs it is
    comparable with (highest mean mAP of the arms with learned weights, any head form, recipe or
    engine), paired by seed. Comparable: the same ρ and budget (epochs × iterations), and the same
    start: from ImageNet, or fine-tuned from a parent run (which doubles the images seen). The
    same-form table above answers a narrower question."""
    lines = ["", "IR − the best learned arm of the same ρ, budget and start (from ImageNet or "
             "fine-tuned), by mean mAP, paired by seed, in mAP points:", "",
             "| IR arm | best learned arm | ρ | pairs | ΔmAP per seed | mean ΔmAP | ΔR1 mean |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    start = table["init_from"].fillna("").astype(str) != ""
    keys = [table["rho"], table["epochs"], table["iters_per_epoch"], start]
    for (rho, *_), at in table.groupby(keys, sort=True):
        learned = at[at.weights == "learned"].groupby("arm")["mAP"].mean()
        if learned.empty:
            continue
        for arm in at[at.weights == "centers"]["arm"].unique():
            lines += _paired_row(at, arm, learned.idxmax(), rho)
    return lines


def _against_peer_engine(table: pd.DataFrame, peers: list[str]) -> list[str]:
    """The best recipe (highest mean mAP of our arms trained from ImageNet, any head or weights)
    against each peer-engine arm of the same ρ and budget, paired by seed."""
    if not peers or not table["arm"].isin(peers).any():
        return []
    lines = ["", "The best recipe (our arms from ImageNet, by mean mAP) − torchreid's engine, same ρ "
             "and budget, paired by seed, in mAP points:", "",
             "| best recipe | peer engine | ρ | pairs | ΔmAP per seed | mean ΔmAP | ΔR1 mean |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    scratch = table[table["init_from"].fillna("").astype(str) == ""]
    for (rho, *_), at in scratch.groupby(["rho", "epochs", "iters_per_epoch"], sort=True):
        ours = at[~at["arm"].isin(peers)].groupby("arm")["mAP"].mean()
        if ours.empty:
            continue
        for peer in at[at["arm"].isin(peers)]["arm"].unique():
            lines += _paired_row(at, ours.idxmax(), peer, rho)
    return lines


def _plot(table: pd.DataFrame, grid: Grid, path: Path) -> None:
    """One panel per ρ (one mAP scale for all): every arm's held-out mAP, one dot per seed and a
    bar at the mean, best arm on top; IR arms, learned arms and peer engines in their own
    colours, fine-tuned arms (twice the images) as squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    arms = {arm.name: arm for arm in grid.arms}
    rhos = sorted(table["rho"].unique())
    rows = max(table[table.rho == rho]["arm"].nunique() for rho in rhos)
    fig, axes = plt.subplots(
        1, len(rhos), figsize=(4.4 * len(rhos) + 0.6, 0.3 * rows + 1.6), dpi=100, squeeze=False
    )
    colours = {"ir": "tab:orange", "learned": "tab:blue", "peer": "tab:gray"}

    def kind(name: str, g: pd.DataFrame) -> str:
        if arms.get(name) is not None and arms[name].engine != "reid":
            return "peer"
        return "ir" if (g["weights"] == "centers").any() else "learned"

    for ax, rho in zip(axes[0], rhos):
        at = table[table.rho == rho]
        order = at.groupby("arm")["mAP"].mean().sort_values().index
        for y, name in enumerate(order):
            g = at[at.arm == name]
            colour = colours[kind(name, g)]
            marker = "s" if g["init_from"].fillna("").astype(str).ne("").any() else "o"
            ax.barh(y, 100 * g["mAP"].mean(), color=colour, alpha=0.25, height=0.6)
            ax.scatter(100 * g["mAP"], [y] * len(g), color=colour, marker=marker, s=18, zorder=3)
        ax.set_yticks(range(len(order)), list(order), fontsize=8)
        ax.set_xlim(
            max(0.0, 100 * table["mAP"].min() - 5), min(100.0, 100 * table["mAP"].max() + 3)
        )
        ax.set_xlabel("held-out mAP (%)")
        ax.set_title(f"ρ = {rho:g}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], color=c, marker="o", linestyle="", label=label)
        for label, c in (
            ("IR centers", colours["ir"]),
            ("learned weights", colours["learned"]),
            ("peer engine", colours["peer"]),
        )
    ] + [Line2D([], [], color="k", marker="s", linestyle="", label="fine-tuned (2× images)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Market-1501 held-out split: mAP per arm (dots: seeds, bars: mean)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)
