"""Accuracy tables: mean, sample std, folds done/planned, the paper beside ours, confusion sums."""

import numpy as np
import pytest

from fercluster.analysis import tables
from fercluster.analysis.collect import JobResult, PlannedJob


def job(dataset, variant, fold, acc, labels=(0, 1, 1), preds=(0, 1, 0), seed=0, classes=8):
    spec = {"dataset": dataset, "kind": "ckplus", "classes": classes, "variant": variant, "fold": fold, "seed": seed}
    metrics = {k: np.zeros(1) for k in ("iteration", "val_acc", "test_acc", "wall_time")}
    return JobResult(f"{variant}{fold}{seed}", None, spec, {"test_acc": acc, "selected_iteration": 7},
                     metrics, np.array(labels), np.array(preds))


def test_mean_sample_std_folds_and_paper():
    results = [job("ck", "AD", 0, 0.90), job("ck", "AD", 1, 0.80), job("ck", "AD", 2, 0.70), job("ck", "none", 0, 0.5)]
    planned = [PlannedJob("ck", f, v, 0, None, None) for f in range(4) for v in ("none", "AD")]
    folds = tables.fold_table(results)
    table = tables.accuracy_table(folds, planned, {"ck": ("ckplus", 8)})
    ad = table[table["variant"] == "AD"].iloc[0]
    assert ad["mean"] == pytest.approx(80.0)
    assert ad["std"] == pytest.approx(10.0)  # sample std (ddof=1) of 90, 80, 70
    assert (ad["folds_done"], ad["folds_planned"]) == (3, 4)
    assert ad["paper"] == 95.1 and ad["diff"] == pytest.approx(80.0 - 95.1)
    none = table[table["variant"] == "none"].iloc[0]
    assert none["folds_done"] == 1 and np.isnan(none["std"])  # one fold: std undefined
    assert list(table["variant"]) == ["none", "AD"]  # paper order
    assert folds["selected_iteration"].tolist() == [7, 7, 7, 7]


def test_seeds_of_a_fold_are_averaged_first():
    results = [job("ck", "AD", 0, 0.9, seed=0), job("ck", "AD", 0, 0.7, seed=1), job("ck", "AD", 1, 0.6)]
    table = tables.accuracy_table(tables.fold_table(results), [], {"ck": ("ckplus", 6)})
    row = table.iloc[0]
    assert row["mean"] == pytest.approx(70.0) and row["folds_done"] == 2 and row["runs"] == 3
    assert row["paper"] == 95.7  # CK+ 6 classes AD


def test_confusion_summed_over_folds():
    results = [job("ck", "AD", 0, 0.5, classes=2), job("ck", "AD", 1, 0.5, labels=(1, 1), preds=(1, 1), classes=2)]
    m = tables.confusion_matrices(results)[("ck", "AD")]
    assert m.tolist() == [[1, 0], [1, 3]]


def test_markdown_and_latex_carry_the_same_cells(tmp_path):
    results = [job("ck", "AD", 0, 0.9), job("ck", "AD", 1, 0.8)]
    folds = tables.fold_table(results)
    table = tables.accuracy_table(folds, [], {"ck": ("ckplus", 8)})
    paths = tables.write_tables(tmp_path, table, folds)
    md, tex = paths["accuracy_md"].read_text(), paths["accuracy_tex"].read_text()
    assert "85.0 ± 7.1" in md and "95.1 ± 3.1" in md and "-10.1" in md and "ddof = 1" in md
    assert r"85.0 $\pm$ 7.1" in tex and r"\begin{tabular}" in tex and r"\bottomrule" in tex
    assert paths["accuracy_csv"].read_text().splitlines()[0].startswith("dataset,variant,mean,std,folds_done")
