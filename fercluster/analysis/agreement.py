"""Checking the KL method on planted ground truth (synthetic sets, beyond the paper).

The synthetic generator knows which face region each AU deforms (``au_regions.json``: a box per
AU in 96x96 crop coordinates). For each filter we sum the squared guided-backprop maps of its top
images into one energy map and measure the share of that energy inside each AU's box.

Rule (documented in the report): a filter **agrees** when the energy share inside the box of its
top-KL AU exceeds the mean share over the boxes of all candidate AUs (those with enough positives
and a planted region), i.e. its KL-chosen AU points at the filter's region better than an AU drawn
uniformly at random would. Filters whose top AU has no planted region are not counted. The
agreement rate is the share of counted filters that agree.

Which filters: by default every conv3 filter (``analysis.agreement_filters: all``), not only the
ten shown: with ten filters the rate moves in steps of 0.1 and its sampling error is about 0.13,
too coarse to tell two rates apart; guided backprop of 64 filters x 10 images at 32-48 px takes a
few seconds. The rate over the shown filters is reported too (they are chosen by activation
strength, without labels, and the shuffled baseline on them is computed on the same filters).

Why the energy *share* and not a density (share / box area) or a lift (density > the image's):
the planted boxes are nested (lips inside mouth stretch inside jaw drop), and guided-backprop
energy is peaked, so a density crowns the smallest box that holds the peak whatever AU deforms
the region (on the demo jobs it scored AU27 mouth filters as disagreeing); a lift is absolute, so
every lower-face AU "agrees" with every mouth filter and real and shuffled labels score alike. The
share favours large boxes, but the comparison is with the shuffled-label rate under the same rule
on the same filters and energy maps, which carries the same layout.

Baseline: the same rate when the AU label sets are shuffled across training images (KL and top AU
recomputed with the same smoothing; the energy maps do not depend on labels), averaged over
``n_shuffles`` permutations. The method is informative when the real rate is clearly above the
shuffled one. The KL smoothing matters here: with a vanishing eps the KL favours rare AUs (see
``kl.py``), and with shuffled labels it then picks the rarest AUs, which on CK+ are lower-face
AUs; the pooled prior (the default) removes most of that small-sample bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from fercluster.analysis.kl import kl_matrix

REGION_SIZE = 96  # au_regions.json boxes are in 96x96 crop coordinates
N_SHUFFLES = 20  # label permutations of the baseline


def region_boxes(au_regions: dict, aus: Sequence[int], size: int) -> dict[int, tuple[int, int, int, int]]:
    """Boxes (y0, y1, x0, x1) of the candidate AUs that have a planted region, scaled to size x size."""
    scale = size / REGION_SIZE
    boxes = {}
    for au in aus:
        entry = au_regions.get(str(int(au)))
        if not entry or "box" not in entry:
            continue
        y0, y1, x0, x1 = (float(v) for v in entry["box"])
        boxes[int(au)] = (
            int(np.floor(y0 * scale)),
            max(int(np.ceil(y1 * scale)), int(np.floor(y0 * scale)) + 1),
            int(np.floor(x0 * scale)),
            max(int(np.ceil(x1 * scale)), int(np.floor(x0 * scale)) + 1),
        )
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


RULE = "energy share in the top-KL AU's box > mean share over all candidate AU boxes"


@dataclass
class Agreement:
    rate: float | None  # agreement rate with the true AU labels, over the counted filters
    shuffled: float | None  # mean rate over label shuffles
    shuffled_rates: list[float]
    filters: list[int]
    top_au: list[int]
    top_fraction: list[float]  # energy fraction in the top-AU box (true labels)
    shuffled_fraction: list[float]  # same, mean over shuffles
    counted: int
    rate_shown: float | None = None  # the same two rates over the shown filters only
    shuffled_shown: float | None = None
    p_value: float | None = None  # (1 + shuffles with rate >= the true rate) / (1 + shuffles)
    shown: list[int] = field(default_factory=list)
    rule: str = RULE
    details: list[dict] = field(default_factory=list)


def agreement(
    values: np.ndarray,
    au: np.ndarray,
    aus: Sequence[int],
    filters: Sequence[int],
    projections: Sequence[np.ndarray],
    au_regions: dict,
    size: int,
    bins: int,
    eps: float,
    prior: str,
    seed: int,
    n_shuffles: int = N_SHUFFLES,
    shown: Sequence[int] | None = None,
) -> Agreement:
    """Agreement of ``filters`` with the planted regions, and the shuffled-label baseline.

    ``values`` (N, F) activations, ``au`` (N, J) indicators with columns ``aus``; ``projections[i]``
    the guided-backprop maps of ``filters[i]``. ``bins``, ``eps``, ``prior``: the KL smoothing
    (``analysis.kl_*``); ``seed``: of the label shuffles (``analysis.shuffle_seed``). ``shown``: a subset of ``filters`` whose rates are
    also reported (``rate_shown``, ``shuffled_shown``).
    """
    boxes = region_boxes(au_regions, aus, size)
    region_aus = list(boxes)
    fractions = energy_fractions(projections, boxes)  # (filters, regions)
    sub = values[:, list(filters)]
    aus_arr = np.asarray(aus)

    def top_au(labels: np.ndarray) -> np.ndarray:
        """Each filter's top-KL AU under the AU indicators ``labels`` (N, J)."""
        return aus_arr[np.argmax(kl_matrix(sub, labels, bins, eps, prior), axis=1)]

    top = top_au(au)
    real = agrees(fractions, region_aus, top)
    pos = {int(f): i for i, f in enumerate(filters)}
    in_shown = np.array([pos[int(f)] for f in (shown or []) if int(f) in pos], dtype=np.int64)
    rng = np.random.default_rng(seed)
    baseline = _shuffled(top_au, au, len(filters), fractions, region_aus, in_shown, rng, n_shuffles)
    return _result(filters, top, real, fractions, region_aus, in_shown, baseline)


@dataclass
class _Baseline:
    rates: list[float]  # agreement rate of each label shuffle (over the counted filters)
    rates_shown: list[float]  # the same over the shown filters
    fraction: np.ndarray  # per filter: energy fraction in the top-AU box, mean over shuffles


def _shuffled(
    top_au: Callable[[np.ndarray], np.ndarray],
    au: np.ndarray,
    n_filters: int,
    fractions: np.ndarray,
    region_aus: list[int],
    in_shown: np.ndarray,
    rng: np.random.Generator,
    n_shuffles: int,
) -> _Baseline:
    """The rule applied ``n_shuffles`` times with the AU label sets permuted across images.

    ``top_au(labels)``: each filter's top-KL AU under the AU indicators ``labels``.
    """
    out = _Baseline([], [], np.zeros(n_filters))
    for _ in range(n_shuffles):
        top_s = top_au(au[rng.permutation(len(au))])
        a = agrees(fractions, region_aus, top_s)
        if np.isfinite(a).any():
            out.rates.append(float(np.nanmean(a)))
        if len(in_shown) and np.isfinite(a[in_shown]).any():
            out.rates_shown.append(float(np.nanmean(a[in_shown])))
        out.fraction += _fraction_of(fractions, region_aus, top_s) / n_shuffles
    return out


def _result(
    filters: Sequence[int],
    top: np.ndarray,
    real: np.ndarray,
    fractions: np.ndarray,
    region_aus: list[int],
    in_shown: np.ndarray,
    baseline: _Baseline,
) -> Agreement:
    """The ``Agreement`` record from the true-label rule (``real``) and the shuffled baseline."""
    rates = baseline.rates
    counted = int(np.isfinite(real).sum())
    real_shown = real[in_shown] if len(in_shown) else np.array([])
    return Agreement(
        rate=float(np.nanmean(real)) if counted else None,
        shuffled=float(np.mean(rates)) if rates else None,
        shuffled_rates=rates,
        filters=[int(f) for f in filters],
        top_au=[int(t) for t in top],
        top_fraction=[float(v) for v in _fraction_of(fractions, region_aus, top)],
        shuffled_fraction=[float(v) for v in baseline.fraction],
        counted=counted,
        rate_shown=float(np.nanmean(real_shown)) if np.isfinite(real_shown).any() else None,
        shuffled_shown=float(np.mean(baseline.rates_shown)) if baseline.rates_shown else None,
        shown=[int(filters[i]) for i in in_shown],
        p_value=float(1 + sum(r >= np.nanmean(real) - 1e-12 for r in rates)) / (1 + len(rates))
        if counted and rates
        else None,
        details=_details(filters, top, real, fractions, region_aus),
    )


def _details(
    filters: Sequence[int], top: np.ndarray, real: np.ndarray, fractions: np.ndarray, region_aus: list[int]
) -> list[dict]:
    """One row per filter: its top AU, energy fraction in that AU's box, mean fraction over boxes, verdict."""
    return [
        {"filter": int(f), "top_au": int(t), "fraction": _round(fr), "mean_fraction": _round(m), "agrees": _flag(a)}
        for f, t, fr, m, a in zip(
            filters,
            top,
            _fraction_of(fractions, region_aus, top),
            fractions.mean(axis=1) if len(region_aus) else np.zeros(len(filters)),
            real,
            strict=True,
        )
    ]


def _fraction_of(fractions: np.ndarray, region_aus: Sequence[int], top: Sequence[int]) -> np.ndarray:
    column = {int(a): j for j, a in enumerate(region_aus)}
    return np.array([fractions[i, column[int(a)]] if int(a) in column else 0.0 for i, a in enumerate(top)])


def _round(v: float) -> float:
    return round(float(v), 4)


def _flag(a: float) -> bool | None:
    return None if not np.isfinite(a) else bool(a)
