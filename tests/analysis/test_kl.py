"""KL rankings: correctness on constructed cases, binning, smoothing, speed-independent math."""

import numpy as np
import pytest

from fercluster.analysis import kl


def test_filter_that_fires_only_with_au12_ranks_au12_first():
    rng = np.random.default_rng(0)
    n = 400
    aus = [1, 5, 12, 25]
    au = rng.random((n, 4)) < 0.3
    values = rng.random((n, 3)) * 0.2  # filters 1, 2: noise
    values[:, 0] = np.where(au[:, 2], 1.0 + 0.1 * rng.random(n), 0.1 * rng.random(n))  # filter 0: AU12 only
    result = kl.kl_matrix(values, au, bins=20, eps=1e-6)
    assert result.shape == (3, 4)
    assert aus[int(np.argmax(result[0]))] == 12
    ranking = kl.ranking(result, aus)
    first = ranking[(ranking["filter"] == 0) & (ranking["rank"] == 1)]
    assert first["au"].item() == 12
    assert sorted(ranking[ranking["filter"] == 0]["rank"]) == [1, 2, 3, 4]
    top = kl.top_aus(result, aus)
    assert top.loc[0, "au"] == 12 and top.loc[0, "name"] == "Lip corner puller"


def test_matches_a_loop_over_np_histogram():
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, size=(120, 5))
    au = rng.random((120, 3)) < 0.4
    bins, eps = 7, 1e-3
    fast = kl.kl_matrix(values, au, bins, eps)
    for f in range(5):
        edges = np.linspace(values[:, f].min(), values[:, f].max(), bins + 1)
        for j in range(3):
            q = np.histogram(values[au[:, j], f], edges)[0] + eps
            r = np.histogram(values[~au[:, j], f], edges)[0] + eps
            q, r = q / q.sum(), r / r.sum()
            assert fast[f, j] == pytest.approx(np.sum(q * np.log(q / r)), rel=1e-9, abs=1e-12)


def test_binning_edges_and_constant_filter():
    values = np.array([[0.0, 3.0], [0.5, 3.0], [1.0, 3.0]])
    idx = kl.bin_indices(values, 4)
    assert idx[:, 0].tolist() == [0, 2, 3]  # the maximum falls in the last bin
    assert idx[:, 1].tolist() == [0, 0, 0]  # constant filter: one bin


def test_eps_keeps_kl_finite_and_identical_histograms_give_zero():
    values = np.tile(np.arange(10.0), 2)[:, None]
    au = np.zeros((20, 2), dtype=bool)
    au[:10, 0] = True  # same distribution with and without AU
    au[9, 1] = au[19, 1] = True  # all positives in the top bin: empty bins elsewhere
    out = kl.kl_matrix(values, au, bins=10, eps=1e-6)
    assert out[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(out[0, 1]) and out[0, 1] > 1.0
    smaller = kl.kl_matrix(values, au, bins=10, eps=1e-2)
    assert smaller[0, 1] < out[0, 1]  # more smoothing, smaller divergence


def test_au_matrix_keeps_aus_with_enough_positives():
    aus = [[1, 12], [12], [12, 25], [], [25]]
    matrix, kept = kl.au_matrix(aus, min_positive=2)
    assert kept == [12, 25]
    assert matrix.tolist() == [[True, False], [True, False], [True, True], [False, False], [False, True]]
