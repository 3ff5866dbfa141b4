"""Evaluation figures: the CMC curve and ranked lists (query + top-k, green = match, red = not)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from .rank import RankResult  # noqa: E402


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


def ranked_list_image(
    query_path: str, gallery_paths: list[str], matches: list[bool], size=(128, 64), border=4
) -> Image.Image:
    h, w = size
    tiles = [
        ImageOps.expand(Image.open(query_path).convert("RGB").resize((w, h)), border, (60, 60, 60))
    ]
    for path, ok in zip(gallery_paths, matches):
        image = Image.open(path).convert("RGB").resize((w, h))
        colour = (150, 150, 150) if ok is None else (0, 170, 0) if ok else (220, 0, 0)
        tiles.append(ImageOps.expand(image, border, colour))
    tw, th = tiles[0].size
    strip = Image.new("RGB", (len(tiles) * (tw + 2) + 6, th), (255, 255, 255))
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (tw + 2) + (6 if i else 0), 0))
    return strip


def save_ranked_lists(rows: list[Image.Image], path: str) -> None:
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height + 4 for r in rows)), (255, 255, 255))
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + 4
    sheet.save(path)
