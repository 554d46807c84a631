import math

import numpy as np
import pandas as pd
from scipy import stats

from fercluster.analysis.compare import consistency_sentences, gain_rows, selection_rows, t_interval, welch_difference


def _folds(values: dict[str, list[float]], dataset="ckplus") -> pd.DataFrame:
    rows = []
    for variant, accs in values.items():
        for fold, acc in enumerate(accs):
            rows.append({"dataset": dataset, "variant": variant, "fold": fold, "test_best_val": acc - 1.0,
                         "test_best_test": acc, "test_last": acc - 2.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_t_interval_is_scipys():
    x = np.array([80.0, 84.0, 90.0, 78.0, 88.0])
    lo, hi = t_interval(x)
    ref = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert math.isclose(lo, ref[0]) and math.isclose(hi, ref[1])


def test_welch_difference_matches_scipy_ttest_from_stats():
    x = np.array([80.0, 84.0, 90.0, 78.0, 88.0])
    diff, lo, hi = welch_difference(x, 79.0, 1.1, 5)
    assert math.isclose(diff, x.mean() - 79.0)
    # at either end of the interval Welch's test (scipy) has p = 0.05 exactly
    for edge in (lo, hi):
        res = stats.ttest_ind_from_stats(x.mean(), x.std(ddof=1), 5, 79.0 + edge, 1.1, 5, equal_var=False)
        assert math.isclose(res.pvalue, 0.05, rel_tol=1e-6)


def test_tables_name_the_papers_selection_and_judge_from_the_interval():
    folds = _folds({"none": [77.0, 80.0, 79.0, 76.0], "A": [94.0, 95.0, 96.0, 93.0]})
    rows = selection_rows(folds, {"ckplus": ("ckplus", 8)})
    assert [r["selection"] for r in rows[:3]] == ["best validation (2017)", "best test (2015) = paper's", "last"]
    paper_rows = [r for r in rows if r["_paper_selection"]]
    assert [r["consistent"] for r in paper_rows] == ["yes", "yes"]  # 78.0 vs 78.2, 94.5 vs 94.6
    assert consistency_sentences(rows) == [
        "**ckplus** at the paper's selection (best test (2015)): our result is consistent with the paper: "
        "every 95% interval of the difference contains 0."
    ]
    far = selection_rows(_folds({"none": [50.0, 51.0, 52.0]}), {"ckplus": ("ckplus", 8)})
    assert "differs from the paper for none" in consistency_sentences(far)[0]


def test_gains_are_paired_by_fold_beside_the_papers():
    folds = _folds({"none": [70.0, 80.0, 75.0], "A": [86.0, 97.0, 91.0]}, dataset="tfd")
    (row,) = gain_rows(folds, {"tfd": ("tfd", 7)})
    assert row["gain"] == "A - none" and row["paper (points)"] == "+9.4" and row["ours (points)"] == "+16.3"
    assert row["consistent"] == "no"  # paired differences 16, 17, 16: a narrow interval far from +9.4
