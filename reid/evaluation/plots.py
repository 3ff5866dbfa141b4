"""Evaluation figures: the CMC curve, the verification plot (ROC with operating points, score
histograms), and ranked lists (query + top-k, green = match, red = not)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: E402

from ..data.images import read_image  # noqa: E402
from .rank import RankResult  # noqa: E402
from .verification import HIST_BINS, VerificationResult  # noqa: E402


def plot_cmc(results: dict[str, RankResult], path: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, result in results.items():
        ranks = np.arange(1, len(result.cmc) + 1)
        ax.plot(
            ranks, result.cmc * 100, label=f"{name} (R1 {result.rank(1):.1%}, mAP {result.mAP:.1%})"
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title("CMC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_verification(result: VerificationResult, path: str) -> None:
    """ROC (log FPR, from the exact per-bin counts) with the operating points, and the score
    histograms of positive and negative pairs with the thresholds τ."""
    fig, (roc, hist) = plt.subplots(1, 2, figsize=(9, 3.6))
    if result.positive_hist is not None and result.num_positive_pairs:
        pos = result.positive_hist[::-1].cumsum() / max(result.num_positive_pairs, 1)
        neg = result.negative_hist[::-1].cumsum() / max(result.num_negative_pairs, 1)
        roc.plot(np.maximum(neg, 1e-7), pos * 100, color="#3a6ea5")
        centers = (HIST_BINS[1:] + HIST_BINS[:-1]) / 2
        width = HIST_BINS[1] - HIST_BINS[0]
        for counts, label, colour in (
            (result.positive_hist, "same identity", "#2a9d3a"),
            (result.negative_hist, "different identity", "#c0392b"),
        ):
            total = max(counts.sum(), 1)
            hist.bar(centers, counts / total / width, width, alpha=0.5, label=label, color=colour)
        for f, tau in result.fpr_threshold.items():
            if np.isfinite(tau):
                hist.axvline(tau, color="k", lw=0.8, ls=":")
                hist.text(tau, hist.get_ylim()[1] * 0.9, f" FPR {f:g}", fontsize=7, rotation=90)
        hist.set_xlabel("cosine score")
        hist.set_ylabel("density")
        hist.legend(fontsize=7)
        hist.set_title("pair scores")
    for f, tpr in result.tpr_at_fpr.items():
        roc.plot([f], [tpr * 100], "o", color="k")
        roc.annotate(f"{tpr:.1%} @ {f:g}", (f, tpr * 100), fontsize=7, xytext=(4, -10),
                     textcoords="offset points")  # fmt: skip
    roc.set_xscale("log")
    roc.set_xlim(1e-5, 1)
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate (%)")
    roc.set_title("verification ROC")
    roc.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _caption(tile: Image.Image, lines: list[str], colour=(0, 0, 0)) -> Image.Image:
    """``tile`` with a white band of text lines under it (PIL's built-in font, 10 px)."""
    font = ImageFont.load_default()
    band = 12 * len(lines) + 2
    out = Image.new("RGB", (tile.width, tile.height + band), (255, 255, 255))
    out.paste(tile, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((2, tile.height + 1 + 12 * i), line, fill=colour, font=font)
    return out


def ranked_list_image(
    query_path: str,
    gallery_paths: list[str],
    matches: list[bool | None],
    size=(128, 64),
    border=4,
    query_label: list[str] | None = None,
    hit_labels: list[list[str]] | None = None,
) -> Image.Image:
    """One row: the query, then its ranked hits with coloured borders (green match, red not,
    grey unknown). ``query_label`` / ``hit_labels``: text lines printed under each tile (file,
    pid, camera, AP for the query; rank, score, pid, camera for each hit)."""
    h, w = max(size[0], 128), max(size[1], 64)  # small inputs are drawn at a readable size
    tile = ImageOps.expand(read_image(query_path).resize((w, h)), border, (60, 60, 60))
    tiles = [_caption(tile, query_label) if query_label else tile]
    for i, (path, ok) in enumerate(zip(gallery_paths, matches)):
        image = read_image(path).resize((w, h))
        colour = (150, 150, 150) if ok is None else (0, 170, 0) if ok else (220, 0, 0)
        tile = ImageOps.expand(image, border, colour)
        if hit_labels:
            tile = _caption(tile, hit_labels[i], colour if ok is not None else (0, 0, 0))
        tiles.append(tile)
    th = max(t.height for t in tiles)
    strip = Image.new("RGB", (sum(t.width + 2 for t in tiles) + 6, th), (255, 255, 255))
    x = 0
    for i, tile in enumerate(tiles):
        strip.paste(tile, (x + (6 if i else 0), 0))
        x += tile.width + 2 + (6 if i == 0 else 0)
    return strip


def hit_caption(rank: int, score: float, pid: int, camid: int) -> list[str]:
    return [f"#{rank} {score:.3f}", f"id {pid} c{camid + 1}" if camid >= 0 else f"id {pid}"]


def query_caption(path: str, pid: int, camid: int, ap: float | None = None) -> list[str]:
    name = Path(path).name
    lines = [name if len(name) <= 20 else name[:9] + "…" + name[-9:], f"id {pid} c{camid + 1}"]
    return lines + ([f"AP {ap:.1%}"] if ap is not None else [])


@dataclass(frozen=True)
class Hit:
    """One ranked hit as drawn: its image, score and labels, whether it matches the query's
    identity (None: unknown), and an optional extra caption line."""

    path: str
    score: float
    pid: int
    camid: int
    match: bool | None
    note: str | None = None


@dataclass(frozen=True)
class RankedList:
    query_path: str
    pid: int
    camid: int
    hits: list[Hit]
    ap: float | None = None


def draw_ranked_lists(lists: list[RankedList], size, path: str) -> None:
    """The one ranked-list renderer (evaluation and search): a row per query, the query then
    its hits with their borders and captions, saved as one image."""
    rows = [
        ranked_list_image(
            ranked.query_path,
            [h.path for h in ranked.hits],
            [h.match for h in ranked.hits],
            size,
            query_label=query_caption(ranked.query_path, ranked.pid, ranked.camid, ranked.ap),
            hit_labels=[
                hit_caption(rank, h.score, h.pid, h.camid) + ([h.note] if h.note else [])
                for rank, h in enumerate(ranked.hits, 1)
            ],
        )
        for ranked in lists
    ]
    save_ranked_lists(rows, path)


def save_ranked_lists(rows: list[Image.Image], path: str) -> None:
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height + 4 for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 4
    sheet.save(path)
