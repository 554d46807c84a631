"""The report's section on the Ray Tune search over k: accuracy against k, best k, ASHA's budget.

Reads what the search wrote (``results/<sweep>/tune/trials.parquet`` and ``best.json``); draws
three PNGs into ``<out>/tune/`` and returns the report ``Section`` (summary lines, the best-k table,
the three figures).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercluster.analysis.figures import _plt, save
from fercluster.analysis.render import Section
from fercluster.config import SweepConfig
from fercluster.fmt import pct
from fercluster.orchestration.store.vocabulary import from_ray

TITLE = "Init-scale search (Ray Tune)"


def tune_section(cfg: SweepConfig, out_dir: Path) -> Section | None:
    """The section, or None when the sweep has no ``tune:`` section or no trial has reported."""
    if cfg.tune is None:
        return None
    folder = Path(cfg.results_dir) / "tune"
    if not (folder / "trials.parquet").exists():
        return None
    rows = pd.read_parquet(folder / "trials.parquet")
    if rows.empty:
        return None
    best = json.loads((folder / "best.json").read_text()) if (folder / "best.json").exists() else {}
    trials = per_trial(rows)
    figs = Path(out_dir) / "tune"
    iterations = {name: int(cfg.train_for(name).iterations) for name in trials["dataset"].unique()}
    figures = [
        (
            k_scatter(trials, figs / "accuracy_vs_k.png"),
            "Validation accuracy against k: best over the trial's evaluations (filled) and at its last "
            "evaluation (open); grey: stopped by ASHA",
        ),
        (
            curves(rows, figs / "curves_by_k.png"),
            "Validation accuracy against iteration, one line per trial, colour = k",
        ),
        (
            budget(trials, iterations, cfg.tune.grace_period, cfg.tune.reduction_factor, figs / "asha_budget.png"),
            "Iterations each trial trained before it completed or ASHA stopped it; dotted lines: ASHA's rungs",
        ),
    ]
    section = Section(TITLE)
    for line in summary_lines(trials, iterations):
        section.text(line)
    best_rows = best_table(trials, best)
    if best_rows:
        section.text("Best k per data set (the grid reads it with `k: from_tune <this sweep>`):")
        section.table(best_rows)
    for path, caption in figures:
        section.image(path, caption)
    return section


def per_trial(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: k, best and final validation accuracy, iterations trained, stopped."""
    rows = rows.sort_values(["dataset", "trial_id", "iteration"])
    groups = rows.groupby(["dataset", "trial_id"], sort=False)
    out = groups.agg(
        k=("k", "first"),
        best_val=("val_acc", "max"),
        final_val=("val_acc", "last"),
        final_test=("test_acc", "last"),
        iterations=("iteration", "max"),
        stopped=("stopped_by_asha", "first"),
        state=("state", "first"),
    ).reset_index()
    # one vocabulary: files of earlier versions say TERMINATED and ERROR
    out["state"] = [from_ray(s, bool(x)) for s, x in zip(out["state"], out["stopped"], strict=True)]
    return out


def summary_lines(trials: pd.DataFrame, iterations: dict[str, int]) -> list[str]:
    lines = []
    for name, group in trials.groupby("dataset"):
        full = iterations[name] * len(group)
        spent = int(group["iterations"].sum())
        stopped = int(group["stopped"].sum())
        rho = rank_correlation(group["k"].to_numpy(), group["best_val"].to_numpy())
        lines.append(
            f"{name}: {len(group)} trials, {len(group) - stopped} trained to the end, {stopped} stopped by ASHA; "
            f"they trained {spent:,} of the {full:,} iterations that running every trial to the end would take "
            f"({100 * spent / full:.0f}%). Rank correlation of k with the best validation accuracy: "
            + ("n/a" if rho is None else f"{rho:+.2f}")
            + "."
        )
    return lines


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho over the pairs without NaN; None with fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return None
    return float(spearmanr(x[ok], y[ok]).statistic)


def best_table(trials: pd.DataFrame, best: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for name, b in (best.get("per_dataset") or {}).items():
        out.append(
            {
                "data set": name,
                "best k": f"{b['k']:.3f}",
                "validation accuracy": pct(b.get("val_acc")),
                "test accuracy (same checkpoint)": pct(b.get("test_acc")),
                "at iteration": str(b.get("iteration")),
                "trial": str(b.get("trial_id")),
                "trials": str(int((trials["dataset"] == name).sum())),
            }
        )
    return out


# -- figures --------------------------------------------------------------------------------------
def k_scatter(trials: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    names = sorted(trials["dataset"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        group = trials[trials["dataset"] == name]
        colour = np.where(group["stopped"], "0.6", "C0")
        ax.scatter(group["k"], 100 * group["best_val"], c=colour, marker="o", label="best")
        ax.scatter(
            group["k"], 100 * group["final_val"], facecolors="none", edgecolors=colour, marker="o", s=70, label="final"
        )
        ax.set(title=name, xlabel="k (init scale)", ylabel="validation accuracy (%)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    return save(fig, path)


def curves(rows: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    names = sorted(rows["dataset"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    lo, hi = float(rows["k"].min()), float(rows["k"].max())
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes[0], names, strict=True):
        for _, trial in rows[rows["dataset"] == name].groupby("trial_id"):
            trial = trial.sort_values("iteration")
            shade = (float(trial["k"].iloc[0]) - lo) / (hi - lo) if hi > lo else 0.5
            ax.plot(trial["iteration"], 100 * trial["val_acc"], color=cmap(shade), alpha=0.8)
        ax.set(title=name, xlabel="iteration", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(mappable, ax=list(axes[0]), label="k")
    return save(fig, path)


def budget(trials: pd.DataFrame, iterations: dict[str, int], grace: int, factor: int, path: Path) -> Path:
    plt = _plt()
    names = sorted(trials["dataset"].unique())
    fig, axes = plt.subplots(
        1, len(names), figsize=(5 * len(names), 0.9 + 0.3 * trials.groupby("dataset").size().max()), squeeze=False
    )
    for ax, name in zip(axes[0], names, strict=True):
        group = trials[trials["dataset"] == name].sort_values("k")
        labels = [f"k={k:.2f}" for k in group["k"]]
        colour = np.where(group["stopped"], "0.6", "C0")
        ax.barh(labels, group["iterations"], color=colour)
        rung = grace
        while rung < iterations[name]:
            ax.axvline(rung, color="k", linestyle=":", linewidth=0.8)
            rung *= factor
        ax.set(title=name, xlabel="iterations trained", xlim=(0, iterations[name] * 1.02))
    return save(fig, path)
