"""Accuracy tables: mean, sample std, folds done/planned, the paper beside ours, confusion sums."""

import numpy as np
import pytest

from fercluster.analysis import tables
from fercluster.analysis.collect import JobResult, PlannedJob


def job(dataset, variant, fold, acc, labels=(0, 1, 1), preds=(0, 1, 0), seed=0, classes=8):
    spec = {"dataset": dataset, "kind": "ckplus", "classes": classes, "variant": variant, "fold": fold, "seed": seed}
    metrics = {k: np.zeros(1) for k in ("iteration", "val_acc", "test_acc", "wall_time")}
    return JobResult(
        f"{variant}{fold}{seed}",
        None,
        spec,
        {"test_acc": acc, "selected_iteration": 7},
        metrics,
        np.array(labels),
        np.array(preds),
    )


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
    assert list(table["variant"]) == ["none", "AD", "AURF", "AUDN"]  # paper order, then the quoted prior art
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


def test_quoted_prior_art_follows_each_matching_data_set_and_stays_out_of_our_rows(tmp_path):
    results = [job("ck", "AD", 0, 0.9), job("ck", "AD", 1, 0.8), job("tf", "none", 0, 0.7), job("x", "AD", 0, 0.5)]
    folds = tables.fold_table(results)
    kinds = {"ck": ("ckplus", 8), "tf": ("tfd", 7), "x": ("ckplus", 7)}  # x: no prior art quoted
    table = tables.accuracy_table(folds, [], kinds)
    assert list(zip(table["dataset"], table["variant"], table["source"], strict=True)) == [
        ("ck", "AD", "ours"),
        ("ck", "AURF", "quoted"),
        ("ck", "AUDN", "quoted"),
        ("tf", "none", "ours"),
        ("tf", "Gabor+PCA", "quoted"),
        ("tf", "Deep mPoT", "quoted"),
        ("tf", "CDA", "quoted"),
        ("x", "AD", "ours"),
    ]
    quoted = table[table["source"] == "quoted"]
    assert quoted["mean"].isna().all() and quoted["std"].isna().all() and (quoted["folds_done"] == 0).all()
    assert quoted["paper"].tolist() == [92.22, 93.70, 80.2, 82.4, 85.0]
    assert tables.own_rows(table)["variant"].tolist() == ["AD", "none", "AD"]
    paths = tables.write_tables(tmp_path, table, folds)
    md = paths["accuracy_md"].read_text()
    assert "| ck | AD | 85.0 ± 7.1 | 2/0 | 95.1 ± 3.1 | -10.1 |" in md
    assert "| ck | AUDN (quoted) | - | - | 93.70 | - |" in md and "| tf | CDA (quoted) | - | - | 85.0 | - |" in md
    assert "prior art as quoted by the paper, not run here" in md
    assert r"AUDN (quoted) & - & - & 93.70 & -" in paths["accuracy_tex"].read_text()
    csv = paths["accuracy_csv"].read_text().splitlines()
    assert csv[0].endswith(",diff,source") and csv[2].startswith("ck,AURF,,,0,0,0,92.22,,,quoted")


def test_cli_table_shows_quoted_rows_unstyled():
    from fercluster.cli.aggregate import accuracy_table

    results = [job("ck", "AD", 0, 0.99), job("ck", "AD", 1, 0.98)]
    table = tables.accuracy_table(tables.fold_table(results), [], {"ck": ("ckplus", 6)})
    rich = accuracy_table(table, "s")
    assert rich.row_count == 4 and [r.style for r in rich.rows] == ["green", None, None, None]
    assert list(rich.columns[1].cells) == ["AD", "CSPL (quoted)", "LBPSVM (quoted)", "BDBN (quoted)"]


def test_fold_table_has_the_k_each_job_drew(tmp_path):
    a, b = job("ck", "AD", 0, 0.9), job("ck", "AD", 1, 0.8)
    a.info["k"] = 0.73456
    folds = tables.fold_table([a, b])
    assert folds.columns.tolist()[:7] == ["dataset", "kind", "classes", "variant", "fold", "seed", "k"]
    assert folds["k"].iloc[0] == 0.73456 and np.isnan(folds["k"].iloc[1])  # a job.json without k
    rows = tables.fold_display_rows(folds)
    assert [r["k"] for r in rows] == ["0.735", "-"]
    paths = tables.write_tables(tmp_path, tables.accuracy_table(folds, [], {}), folds)
    assert "| seed | k | test (%) |" in paths["folds_md"].read_text() and "| 0.735 |" in paths["folds_md"].read_text()
    assert paths["folds_csv"].read_text().splitlines()[0].startswith("dataset,kind,classes,variant,fold,seed,k,")


def test_latex_escapes_every_special_character_once():
    from fercluster.analysis.tables import latex_escape

    assert latex_escape("a_b & 5% $x# {y} ~^ \\ 61.4 ± 9.9") == (
        r"a\_b \& 5\% \$x\# \{y\} \textasciitilde{}\textasciicircum{} \textbackslash{} 61.4 $\pm$ 9.9"
    )
