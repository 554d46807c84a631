"""Checking the KL method on planted ground truth (synthetic sets, beyond the paper).

The synthetic generator knows which face region each AU deforms (``au_regions.json``: a box per
AU in 96x96 crop coordinates). For each shown filter we sum the squared guided-backprop maps of
its top images into one energy map and measure the fraction of that energy inside each AU's box.

Rule (documented in the report): a filter **agrees** when the energy fraction inside the box of
its top-KL AU exceeds the mean fraction over the boxes of all candidate AUs (those with enough
positives and a planted region), i.e. its KL-chosen AU points at the filter's region better than
an AU drawn uniformly at random would. Filters whose top AU has no planted region are not counted.
The agreement rate is the share of counted filters that agree.

Baseline: the same rate when the AU label sets are shuffled across training images (KL and top AU
recomputed; the energy maps do not depend on labels), averaged over ``n_shuffles`` permutations.
The method is informative when the real rate is clearly above the shuffled one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fercluster.analysis.kl import kl_matrix

REGION_SIZE = 96  # au_regions.json boxes are in 96x96 crop coordinates


def region_boxes(au_regions: dict, aus: Sequence[int], size: int) -> dict[int, tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of the candidate AUs that have a planted region, scaled to size x size."""
    scale = size / REGION_SIZE
    boxes = {}
    for au in aus:
        entry = au_regions.get(str(int(au)))
        if not entry or "box" not in entry:
            continue
        y0, y1, x0, x1 = (float(v) for v in entry["box"])
        boxes[int(au)] = (int(np.floor(y0 * scale)), max(int(np.ceil(y1 * scale)), int(np.floor(y0 * scale)) + 1),
                          int(np.floor(x0 * scale)), max(int(np.ceil(x1 * scale)), int(np.floor(x0 * scale)) + 1))
    return boxes


def energy_fractions(projections: Sequence[np.ndarray], boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """(filters, regions) fraction of each filter's guided-backprop energy inside each box.

    ``projections[i]``: (n, S, S) maps of filter i's top images; energy = sum of squares over them.
    """
    out = np.zeros((len(projections), len(boxes)))
    for i, maps in enumerate(projections):
        energy = np.square(np.asarray(maps, dtype=np.float64)).sum(axis=0)
        total = energy.sum()
        if total <= 0:
            continue
        for j, (y0, y1, x0, x1) in enumerate(boxes.values()):
            out[i, j] = energy[y0:y1, x0:x1].sum() / total
    return out


def agrees(fractions: np.ndarray, region_aus: Sequence[int], top_au: Sequence[int]) -> np.ndarray:
    """Per filter: 1.0 agrees, 0.0 does not, NaN not counted (its top AU has no region)."""
    column = {int(a): j for j, a in enumerate(region_aus)}
    mean = fractions.mean(axis=1) if fractions.shape[1] else np.zeros(len(fractions))
    out = np.full(len(top_au), np.nan)
    for i, au in enumerate(top_au):
        j = column.get(int(au))
        if j is not None:
            out[i] = float(fractions[i, j] > mean[i])
    return out


@dataclass
class Agreement:
    rate: float | None  # agreement rate with the true AU labels
    shuffled: float | None  # mean rate over label shuffles
    shuffled_rates: list[float]
    filters: list[int]
    top_au: list[int]
    top_fraction: list[float]  # energy fraction in the top-AU box (true labels)
    shuffled_fraction: list[float]  # same, mean over shuffles
    counted: int
    rule: str = "energy fraction in the top-KL AU's box > mean fraction over all candidate AU boxes"
    details: list[dict] = field(default_factory=list)


def agreement(values: np.ndarray, au: np.ndarray, aus: Sequence[int], filters: Sequence[int],
              projections: Sequence[np.ndarray], au_regions: dict, size: int, bins: int, eps: float,
              n_shuffles: int = 20, seed: int = 0) -> Agreement:
    """Agreement of the shown filters with the planted regions, and the shuffled-label baseline.

    ``values`` (N, F) activations, ``au`` (N, J) indicators with columns ``aus``.
    """
    boxes = region_boxes(au_regions, aus, size)
    region_aus = list(boxes)
    fractions = energy_fractions(projections, boxes)  # (shown, regions)
    shown = values[:, list(filters)]
    aus_arr = np.asarray(aus)
    top = aus_arr[np.argmax(kl_matrix(shown, au, bins, eps), axis=1)]
    real = agrees(fractions, region_aus, top)
    rng = np.random.default_rng(seed)
    rates, shuffled_frac = [], np.zeros(len(filters))
    for _ in range(n_shuffles):
        top_s = aus_arr[np.argmax(kl_matrix(shown, au[rng.permutation(len(au))], bins, eps), axis=1)]
        a = agrees(fractions, region_aus, top_s)
        if np.isfinite(a).any():
            rates.append(float(np.nanmean(a)))
        shuffled_frac += _fraction_of(fractions, region_aus, top_s) / n_shuffles
    details = [
        {"filter": int(f), "top_au": int(t), "fraction": _round(fr), "mean_fraction": _round(m), "agrees": _flag(a)}
        for f, t, fr, m, a in zip(filters, top, _fraction_of(fractions, region_aus, top),
                                  fractions.mean(axis=1) if len(region_aus) else np.zeros(len(filters)), real)
    ]
    counted = int(np.isfinite(real).sum())
    return Agreement(
        rate=float(np.nanmean(real)) if counted else None,
        shuffled=float(np.mean(rates)) if rates else None,
        shuffled_rates=rates,
        filters=[int(f) for f in filters],
        top_au=[int(t) for t in top],
        top_fraction=[float(v) for v in _fraction_of(fractions, region_aus, top)],
        shuffled_fraction=[float(v) for v in shuffled_frac],
        counted=counted,
        details=details,
    )


def _fraction_of(fractions: np.ndarray, region_aus: Sequence[int], top: Sequence[int]) -> np.ndarray:
    column = {int(a): j for j, a in enumerate(region_aus)}
    return np.array([fractions[i, column[int(a)]] if int(a) in column else 0.0 for i, a in enumerate(top)])


def _round(v: float) -> float:
    return round(float(v), 4)


def _flag(a: float) -> bool | None:
    return None if not np.isfinite(a) else bool(a)
