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
    result = kl.kl_matrix(values, au, bins=20, eps=1e-6, prior="uniform")
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
    fast = kl.kl_matrix(values, au, bins, eps, "uniform")
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
    out = kl.kl_matrix(values, au, bins=10, eps=1e-6, prior="uniform")
    assert out[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(out[0, 1]) and out[0, 1] > 1.0
    smaller = kl.kl_matrix(values, au, bins=10, eps=1e-2, prior="uniform")
    assert smaller[0, 1] < out[0, 1]  # more smoothing, smaller divergence


def test_au_matrix_keeps_aus_with_enough_positives():
    aus = [[1, 12], [12], [12, 25], [], [25]]
    matrix, kept = kl.au_matrix(aus, min_positive=2)
    assert kept == [12, 25]
    assert matrix.tolist() == [[True, False], [True, False], [True, True], [False, False], [False, True]]


def _rare_au_case():
    """Filter 0: weakly tied to a common AU (12, 40% of images), a rare AU (9, 5 images) pure noise;
    filter 1: strongly tied to AU12. Seeded, so the ranks below are fixed."""
    rng = np.random.default_rng(0)
    n = 300
    common = rng.random(n) < 0.4
    rare = np.zeros(n, dtype=bool)
    rare[rng.choice(n, 5, replace=False)] = True
    values = np.stack([rng.standard_normal(n) + 0.5 * common, rng.standard_normal(n) + 4.0 * common], axis=1)
    return values, np.stack([rare, common], axis=1), [9, 12]


def test_a_rare_au_wins_under_the_literal_reading_but_not_under_the_pooled_one():
    values, au, aus = _rare_au_case()
    literal = kl.kl_matrix(values, au, 20, kl.LITERAL.eps, kl.LITERAL.prior)
    pooled = kl.kl_matrix(values, au, 20, kl.POOLED.eps, kl.POOLED.prior)
    assert [aus[i] for i in literal.argmax(axis=1)] == [9, 12]
    assert [aus[i] for i in pooled.argmax(axis=1)] == [12, 12]
    assert (kl.LITERAL, kl.POOLED) == (kl.Reading("uniform", 1e-6), kl.Reading("pooled", 0.5))
    assert kl.other_reading(kl.Reading("uniform", 0.01)) == kl.POOLED
    assert kl.other_reading(kl.Reading("pooled", 2.0)) == kl.LITERAL


def test_kl_section_shows_both_readings_and_flags_where_they_differ(tmp_path):
    from fercluster.analysis.dataset_section import _kl_section, _rankings
    from fercluster.analysis.render import to_markdown
    from fercluster.config import Analysis

    values, au, aus = _rare_au_case()
    kl_values, top = _rankings(values, (au, aus), Analysis(kl_prior="uniform", kl_eps=1e-6), None)
    summary = {}
    md = to_markdown("r", [_kl_section("ck", kl_values, aus, top, [0, 1], None, tmp_path, summary)], tmp_path)
    head = "| filter | top AU (uniform, eps 1e-06) | KL (uniform, eps 1e-06) | top AU (pooled, eps 0.5) |"
    assert head in md
    assert "| 0 | AU9 Nose wrinkler |" in md and "| AU12 Lip corner puller |" in md
    rows = [line for line in md.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert "| differ |" in rows[0] and "| agree |" in rows[1]
    assert "different top AU for 1 of the 2 shown filters (0)" in md
    assert summary["top_aus"] == {0: 9, 1: 12} and summary["top_aus_other"] == {0: 12, 1: 12}
    assert summary["table4_overlap"]["configured"]["aus_in_common"] == [9, 12]
    assert summary["table4_overlap"]["other"]["aus_in_common"] == [12]
    assert "2 of our 2 shown filters have a top AU among Table 4's AUs" in md
    import pandas as pd

    csv = pd.read_csv(tmp_path / "top_aus_ck.csv")
    assert csv.columns.tolist()[-6:] == [
        "reading",
        "other_reading",
        "other_au",
        "other_name",
        "other_kl",
        "readings_differ",
    ]
    assert csv[["au", "other_au", "readings_differ"]].values.tolist() == [[9, 12, True], [12, 12, False]]


def test_table4_overlap_counts_filters_and_distinct_aus():
    out = kl.table4_overlap([25, 25, 4, 12, 6], candidate_aus=[4, 6, 12, 25, 43])
    assert out["filters_with_table4_au"] == 3 and out["shown"] == 5
    assert out["aus_in_common"] == [12, 25] and out["candidate_aus_in_table4"] == 2
    assert out["table4_aus"] == [1, 5, 9, 12, 17, 24, 25, 27]
