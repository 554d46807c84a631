"""The report's pictures: learning curves, confusion matrices, KL bar charts, filter grids.

matplotlib with the Agg backend (no display needed); every PNG is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fercluster.analysis.collect import JobResult
from fercluster.analysis.tables import VARIANT_ORDER
from fercluster.atomic import write_with

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write a figure as PNG atomically and close it."""
    plt = _plt()
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def learning_curves(results: Sequence[JobResult], dataset: str, path: Path) -> Path:
    """Validation (dashed) and test (solid) accuracy against iteration; one panel per variant,
    folds overlaid (one colour per fold)."""
    plt = _plt()
    jobs = [r for r in results if r.spec["dataset"] == dataset]
    variants = sorted({r.spec["variant"] for r in jobs}, key=lambda v: VARIANT_ORDER.get(v, 9))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants), 3.2), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, variant in zip(axes[0], variants, strict=True):
        for r in sorted((j for j in jobs if j.spec["variant"] == variant), key=lambda j: j.key):
            it, colour = r.metrics["iteration"], cmap(int(r.spec["fold"]) % 10)
            ax.plot(it, 100 * r.metrics["test_acc"], color=colour, lw=1.2, label=f"fold {r.spec['fold']}")
            if np.isfinite(r.metrics["val_acc"]).any():
                ax.plot(it, 100 * r.metrics["val_acc"], color=colour, lw=1.0, ls="--")
        ax.set_title(f"{dataset} {variant}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)  solid: test, dashed: val")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return save(fig, path)


def confusion(matrix: np.ndarray, labels: Sequence[str], title: str, path: Path) -> Path:
    """A heat map of a confusion matrix (row-normalised colour, counts written in the cells)."""
    plt = _plt()
    c = matrix.shape[0]
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.4 * c + 1.8, 0.4 * c + 1.4))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.6 else "black",
            )
    names = list(labels)[:c] + [str(k) for k in range(len(labels), c)]
    ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(c), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def kl_bars(kl_row: np.ndarray, aus: Sequence[int], filt: int, path: Path) -> Path:
    """KL divergence of one filter for every AU; the top AU in red (the paper's Figure 5)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.5, 0.28 * len(aus) + 1), 2.4))
    top = int(np.argmax(kl_row))
    colours = ["#c0392b" if j == top else "#7f8c8d" for j in range(len(aus))]
    ax.bar(range(len(aus)), kl_row, color=colours)
    ax.set_xticks(range(len(aus)), [str(a) for a in aus], fontsize=7)
    ax.set_xlabel("AU")
    ax.set_ylabel("KL(Q||R)")
    ax.set_title(f"filter {filt}: top AU{aus[top]}", fontsize=9)
    return save(fig, path)


def grid(
    rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], title: str, path: Path, signed: bool = False
) -> Path:
    """Tile images one row per filter, N per row. ``signed``: diverging colours around zero
    (guided-backprop maps, each tile scaled by its own max |value|); else grey 0..255."""
    plt = _plt()
    n_rows, n_cols = len(rows), max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.9 * n_cols + 1.2, 0.9 * n_rows + 0.4), squeeze=False)
    for i, tiles in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(tiles):
                continue
            tile = tiles[j]
            if signed:
                scale = float(np.abs(tile).max()) or 1.0
                ax.imshow(tile, cmap="RdBu_r", vmin=-scale, vmax=scale)
            else:
                ax.imshow(tile, cmap="gray", vmin=0, vmax=255)
        axes[i][0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return save(fig, path)


def figure1(
    patches: Sequence[Sequence[np.ndarray]], maps: Sequence[Sequence[np.ndarray]], labels: Sequence[str], path: Path
) -> Path:
    """The paper's Figure 1: one row per filter, its top images side by side, each image's patch
    (grey) followed by its guided-backprop map over the same patch (red positive, blue negative)."""
    plt = _plt()
    n_rows, n_cols = len(patches), max((len(r) for r in patches), default=1)
    fig, axes = plt.subplots(n_rows, 2 * n_cols, figsize=(1.6 * n_cols + 1.2, 0.85 * n_rows + 0.5), squeeze=False)
    for i in range(n_rows):
        for j in range(2 * n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j // 2 >= len(patches[i]):
                continue
            if j % 2 == 0:
                ax.imshow(patches[i][j // 2], cmap="gray", vmin=0, vmax=255)
            else:
                tile = maps[i][j // 2]
                scale = float(np.abs(tile).max()) or 1.0
                ax.imshow(tile, cmap="RdBu_r", vmin=-scale, vmax=scale)
        axes[i][0].set_ylabel(labels[i], rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle("Figure 1 (as the paper): top images of 5 conv3 filters with their guided-backprop maps", fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.06)
    return save(fig, path)


def agreement_plot(
    rate: float | None,
    shuffled_rates: Sequence[float],
    real: np.ndarray,
    shuffled: np.ndarray,
    filters: Sequence[int],
    path: Path,
) -> Path:
    """Left: the agreement rate with true labels against the shuffled-label rates. Right: per filter,
    the energy fraction in its top-AU region with true vs shuffled AU labels (filters sorted by it)."""
    plt = _plt()
    fig, (ax0, ax1) = plt.subplots(
        1, 2, figsize=(min(12.0, max(6.0, 0.12 * len(filters) + 4.5)), 2.8), gridspec_kw={"width_ratios": [1, 2.5]}
    )
    if len(shuffled_rates):
        ax0.hist(shuffled_rates, bins=np.linspace(0, 1, 21), color="#bdc3c7", label="shuffled labels")
    if rate is not None:
        ax0.axvline(rate, color="#c0392b", lw=2, label="true labels")
    ax0.set_xlim(0, 1)
    ax0.set_xlabel("agreement rate")
    ax0.set_ylabel("permutations")
    ax0.legend(fontsize=7)
    order = np.argsort(-np.asarray(real), kind="stable")
    x = np.arange(len(filters))
    ax1.bar(x - 0.2, np.asarray(real)[order], width=0.4, label="true AU labels", color="#2e86c1")
    ax1.bar(x + 0.2, np.asarray(shuffled)[order], width=0.4, label="shuffled labels (mean)", color="#bdc3c7")
    if len(filters) <= 20:
        ax1.set_xticks(x, [str(filters[i]) for i in order], fontsize=7)
    else:
        ax1.set_xticks([])
    ax1.set_xlabel("filter" + (" (sorted)" if len(filters) > 20 else ""))
    ax1.set_ylabel("energy in top-AU region")
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=7)
    return save(fig, path)
