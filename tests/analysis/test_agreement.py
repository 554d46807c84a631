"""Planted-truth agreement without a model: constructed activations and energy maps, so the rule,
the shuffled-label baseline and the KL smoothing are checked in milliseconds."""

import numpy as np

from fercluster.analysis import kl
from fercluster.analysis.agreement import agreement

# Non-overlapping boxes (y0, y1, x0, x1) in 96x96 crop coordinates, like au_regions.json.
BOXES = {1: [6, 30, 6, 42], 5: [6, 30, 54, 90], 9: [36, 60, 30, 66], 12: [66, 90, 6, 42], 25: [66, 90, 54, 90]}
REGIONS = {str(a): {"name": f"AU{a}", "box": b} for a, b in BOXES.items()}
SIZE = 32


def _labels(rng, sequences=60):
    """CK+-like labels: per sequence one neutral frame and three peak frames sharing 1-2 AUs."""
    aus = list(BOXES)
    rows = []
    for _ in range(sequences):
        chosen = rng.choice(aus, size=int(rng.integers(1, 3)), replace=False)
        rows += [[]] + [sorted(int(a) for a in chosen)] * 3
    return kl.au_matrix(rows, min_positive=5)


def _blob(box, rng, n=5):
    """n guided-backprop-like maps (SIZE x SIZE) with their energy inside ``box`` (96-px coords)."""
    y0, y1, x0, x1 = (int(v * SIZE / 96) for v in box)
    maps = 0.01 * rng.standard_normal((n, SIZE, SIZE))
    maps[:, y0:y1, x0:x1] += rng.standard_normal((n, y1 - y0, x1 - x0))
    return maps


def test_filters_tied_to_their_region_beat_shuffled_labels():
    rng = np.random.default_rng(0)
    au, aus = _labels(rng)
    n, per_au = len(au), 4
    values, maps = [], []
    for j, a in enumerate(aus):  # 4 filters per AU: fire when the AU is present, look at its box
        for _ in range(per_au):
            values.append(np.where(au[:, j], 1.0, 0.2) + 0.15 * rng.standard_normal(n))
            maps.append(_blob(BOXES[a], rng))
    values = np.stack(values, axis=1)
    filters = list(range(values.shape[1]))
    res = agreement(
        values,
        au,
        aus,
        filters,
        maps,
        REGIONS,
        SIZE,
        bins=20,
        eps=0.5,
        prior="pooled",
        n_shuffles=20,
        seed=0,
        shown=filters[:5],
    )
    assert res.counted == len(filters)
    assert res.rate >= 0.9
    assert res.shuffled <= 0.6 and res.rate - res.shuffled >= 0.3
    assert res.p_value <= 0.05 and max(res.shuffled_rates) < res.rate
    assert res.shown == filters[:5] and res.rate_shown is not None and res.shuffled_shown is not None
    assert [d["top_au"] for d in res.details] == [a for a in aus for _ in range(per_au)]


def test_filters_unrelated_to_aus_do_not_beat_shuffled_labels():
    for seed in range(3):  # the true-label rate is one draw (sd about 0.07 here): no p-value test
        rng = np.random.default_rng(seed)
        au, aus = _labels(rng)
        values = rng.gamma(2.0, size=(len(au), 60))  # activations carry no AU information
        maps = [_blob(BOXES[aus[i % len(aus)]], rng) for i in range(60)]
        res = agreement(
            values,
            au,
            aus,
            list(range(60)),
            maps,
            REGIONS,
            SIZE,
            bins=20,
            eps=0.5,
            prior="pooled",
            n_shuffles=20,
            seed=0,
        )
        assert abs(res.rate - res.shuffled) <= 0.2, seed


def test_pooled_prior_removes_the_pull_of_rare_aus():
    """Noise filters: a vanishing uniform eps ranks the rarest AU (4 sequences = 12 images) first for
    all of them, and 0.5 uniform pseudo-counts barely help; pseudo-counts shaped like the pooled
    histogram reduce the pull (they do not remove it: the uniform share would be 1/5)."""
    rng = np.random.default_rng(2)
    n_seq = 100
    seq_aus = [[1, 9]] * 4 + [[int(rng.choice([5, 12, 25])), 1] for _ in range(n_seq - 4)]  # AU9: 4 sequences
    rows = []
    for s in seq_aus:
        rows += [[]] + [s] * 3
    au, aus = kl.au_matrix(rows, min_positive=5)
    frames = rng.gamma(2.0, size=(n_seq, 80))
    values = np.repeat(frames, 4, axis=0) + 0.01 * rng.standard_normal((4 * n_seq, 80))  # near-identical frames
    rare = aus.index(9)
    share = {
        (eps, prior): np.mean(kl.kl_matrix(values, au, 20, eps, prior).argmax(axis=1) == rare)
        for eps, prior in ((1e-6, "uniform"), (0.5, "uniform"), (0.5, "pooled"))
    }
    assert share[1e-6, "uniform"] >= 0.9 and share[0.5, "uniform"] >= 0.8
    assert share[0.5, "pooled"] <= 0.75


def test_pooled_prior_is_zero_for_identical_histograms_and_finite_with_empty_bins():
    values = np.tile(np.arange(10.0), 2)[:, None]
    au = np.zeros((20, 2), dtype=bool)
    au[:10, 0] = True
    au[9, 1] = au[19, 1] = True
    out = kl.kl_matrix(values, au, bins=20, eps=0.5, prior="pooled")  # 20 bins, 10 occupied
    assert abs(out[0, 0]) < 1e-12
    assert np.isfinite(out).all() and out[0, 1] > 0
