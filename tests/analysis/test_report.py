"""The report end to end on fabricated run directories (random untrained models), bad input,
the planted-truth agreement, and the HTML rendered by headless Chromium when it is installed."""

import json
import shutil
import subprocess
import sys
from html import escape
from pathlib import Path

import fabricate as fab
import numpy as np
import pytest
import yaml

from fercluster.analysis.report import aggregate
from fercluster.errors import AnalysisError
from fercluster.orchestration.submit.plan import expand

SECTIONS = [
    "Accuracy (the paper's Tables 1-3)",
    "Learning curves and confusion matrices",
    "Filters and action units",
    "FAU rankings by KL divergence",
    "Agreement with the planted AU regions",
    "What is missing",
    "Attempts",
    "How the run was made",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Five of six planned jobs complete; the report built once."""
    tmp = tmp_path_factory.mktemp("sweep")
    prep = fab.make_prepared(tmp / "prep")
    cfg = fab.make_config(tmp, prep)
    specs = expand(cfg)
    for spec in specs[:-1]:
        fab.write_run(spec, prep)
    _histories(specs)
    return cfg, specs, aggregate(cfg)


def _histories(specs) -> None:
    """Job 0 killed on node n1 and started again by SLURM, then complete; the last job stalled."""
    from fercluster.train.attempts import END, START, HistoryLine, append

    append(specs[0].run_dir, HistoryLine(START, "a", 1.0e9, slurm_id="7_0", node="n1"))
    append(specs[0].run_dir, HistoryLine(START, "b", 1.0e9 + 600, slurm_id="7_0", node="n2"))
    append(specs[0].run_dir, HistoryLine(END, "b", 1.0e9 + 900, iteration=40, ended="completed"))
    append(specs[-1].run_dir, HistoryLine(START, "c", 1.0e9, slurm_id="7_5", node="n1"))
    append(specs[-1].run_dir, HistoryLine(END, "c", 1.0e9 + 5000, iteration=20, ended="stalled", by="coordinator"))


def test_report_counts_every_attempt_and_lists_the_jobs_that_ran_again(sweep):
    cfg, specs, summary = sweep
    assert summary["attempts"] == {"attempts": 3, "jobs": 2, "completed": 1, "node failure": 1, "stalled": 1}
    md = (cfg.results_dir / "report" / "report.md").read_text()
    assert "3 attempts of 2 jobs" in md and "1 node failure" in md
    assert f"| {specs[0].job_id} | 1 | 7_0 | n1 |" in md and "| node failure | inferred |" in md
    assert f"| {specs[-1].job_id} | 1 | 7_5 | n1 |" in md and "| stalled | coordinator | - -> 20 |" in md


def _png_ok(path: Path) -> None:
    import matplotlib.image

    assert path.stat().st_size > 2000, path
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert float(pixels[..., :3].std()) > 0.02, f"{path} looks blank"


def test_report_has_every_section_and_non_blank_pngs(sweep):
    cfg, specs, summary = sweep
    out = cfg.results_dir / "report"
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for title in SECTIONS:
        assert f"## {title}" in md and escape(title) in html
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {
        "curves_ckplus.png",
        "confusion_ckplus_AD.png",
        "confusion_ckplus_none.png",
        "filters_ckplus_guided.png",
        "filters_ckplus_patches.png",
        "agreement_ckplus.png",
    } <= names
    assert len([n for n in names if n.startswith("kl_ckplus_filter")]) == cfg.analysis.n_filters
    for p in pngs:
        _png_ok(p)
        assert f"({p.name})" in md  # the Markdown twin links every PNG
    assert html.count("data:image/png;base64,") == len(pngs)  # self-contained
    assert 'src="http' not in html and "<link" not in html
    for name in ("accuracy.csv", "accuracy.md", "accuracy.tex", "folds.csv", "kl_ckplus.parquet", "top_aus_ckplus.csv"):
        assert (out / name).is_file()


def test_summary_json_and_missing_jobs(sweep):
    cfg, specs, _ = sweep
    summary = json.loads((cfg.results_dir / "report" / "summary.json").read_text())
    rows = {(r["dataset"], r["variant"]): r for r in summary["accuracy"]}
    assert rows[("ckplus", "none")]["folds_done"] == 3 and rows[("ckplus", "AD")]["folds_done"] == 2
    assert rows[("ckplus", "AD")]["folds_planned"] == 3 and rows[("ckplus", "AD")]["paper"] == 95.1
    assert set(rows[("ckplus", "none")]) >= {
        "dataset",
        "variant",
        "mean",
        "std",
        "folds_done",
        "folds_planned",
        "paper",
    }
    assert [m["job_id"] for m in summary["missing"]] == [specs[-1].job_id]
    assert summary["skipped"] == []
    assert summary["cost"]["line"].endswith(" GPU-hours, 0.0 CPU-hours, 0 requeues")  # not run on SLURM


def test_kl_parquet_holds_every_filter_and_au(sweep):
    import pandas as pd

    cfg, _, _ = sweep
    table = pd.read_parquet(cfg.results_dir / "report" / "kl_ckplus.parquet")
    assert list(table.columns) == ["filter", "au", "kl", "rank"]
    assert table["filter"].nunique() == 64 and set(table["au"]) == set(fab.REGIONS)
    assert (table.groupby("filter")["rank"].min() == 1).all()


def test_agreement_on_planted_truth_beats_shuffled_labels(sweep):
    _, _, summary = sweep
    assert summary["agreement"] is not None and summary["agreement_shuffled"] is not None
    a = summary["analysis"][0]
    assert a["agreement_counted"] == 64  # every conv3 filter, not only the shown ones
    assert summary["agreement"] >= 0.7  # all filters of an untrained model: some barely respond
    assert summary["agreement"] - summary["agreement_shuffled"] >= 0.25
    assert a["agreement_p_value"] <= 0.05  # above every one of the 20 shuffles
    # the 6 shown filters are chosen by activation strength, not by KL: their rate is one draw in
    # steps of 1/6 (about 0.8 over all filters; it was 1.0 when they were chosen by their top KL)
    assert a["agreement_shown"] > a["agreement_shuffled_shown"]
    assert set(a["filters"]) == {d["filter"] for d in a["agreement_filters"] if d["filter"] in a["filters"]}


def test_report_shows_both_kl_readings_the_table4_overlap_quoted_rows_and_k(sweep):
    import pandas as pd

    cfg, _, summary = sweep
    out = cfg.results_dir / "report"
    md = (out / "report.md").read_text()
    a = summary["analysis"][0]
    assert a["kl_readings"] == {"configured": "pooled, eps 0.5", "other": "uniform, eps 1e-06"}
    assert set(a["top_aus_other"]) == set(a["top_aus"]) == set(a["filters"])
    assert "| filter | top AU (pooled, eps 0.5) | KL (pooled, eps 0.5) | top AU (uniform, eps 1e-06) |" in md
    assert "the plug-in KL grows as the positive count shrinks, so rare AUs win" in md
    top = pd.read_csv(out / "top_aus_ckplus.csv")
    assert {"au", "kl", "other_au", "other_kl", "other_reading", "readings_differ"} <= set(top.columns)
    assert len(top) == 64 and (top["readings_differ"] == (top["au"] != top["other_au"])).all()
    overlap = a["table4_overlap"]
    for key, col in (("configured", "top_aus"), ("other", "top_aus_other")):
        found = list(a[col].values())
        assert overlap[key]["filters_with_table4_au"] == sum(au in {1, 5, 9, 12, 17, 24, 25, 27} for au in found)
        assert overlap[key]["aus_in_common"] == sorted(set(found) & {1, 5, 9, 12, 17, 24, 25, 27})
        sentence = (
            f"{overlap[key]['reading']}: {overlap[key]['filters_with_table4_au']} of our 6 shown filters "
            "have a top AU among Table 4's AUs {1, 5, 9, 12, 17, 24, 25, 27}"
        )
        assert sentence in md
    assert a["filter_rule"] == "the largest mean activation over their top 5 training images"
    # the paper's quoted prior art: in the report's table, not in summary.json's accuracy
    assert "| ckplus | AURF (quoted) | - | - | 92.22 | - |" in md
    assert [r["method"] for r in summary["accuracy_quoted"]] == ["AURF", "AUDN"]
    assert {r["variant"] for r in summary["accuracy"]} == {"none", "AD"}
    assert "| data set | variant | fold | seed | k | test (%)" in md and "| 1.000 |" in md  # job.json's k


def test_shown_filters_do_not_depend_on_au_labels(tmp_path, monkeypatch):
    """Shuffling the AU labels changes the KL rankings but not the filters shown; the agreement over
    the shown filters (analysis.agreement_filters: shown) counts exactly them."""
    from fercluster.analysis import dataset_section
    from fercluster.analysis.collect import collect

    prep = fab.make_prepared(tmp_path / "prep", subjects=20)
    cfg = fab.make_config(tmp_path, prep, folds=(0,), variants=("AD",), n_filters=4, top_n=3, agreement_filters="shown")
    fab.write_run(expand(cfg)[0], prep)
    results = collect(cfg).results
    true = dataset_section.analyse_dataset(cfg, "ckplus", results, tmp_path / "a", log=lambda *_: None).summary
    labels = dataset_section._au_labels

    def shuffled(*args):
        matrix, aus = labels(*args)
        return matrix[np.random.default_rng(0).permutation(len(matrix))], aus

    monkeypatch.setattr(dataset_section, "_au_labels", shuffled)
    other = dataset_section.analyse_dataset(cfg, "ckplus", results, tmp_path / "b", log=lambda *_: None).summary
    assert other["filters"] == true["filters"] and len(true["filters"]) == 4
    assert other["top_aus"] != true["top_aus"] or other["top_aus_other"] != true["top_aus_other"]
    assert true["agreement_counted"] <= 4 and {d["filter"] for d in true["agreement_filters"]} == set(true["filters"])


def test_corrupt_parquet_and_foreign_checkpoint_are_listed_and_skipped(tmp_path):
    prep = fab.make_prepared(tmp_path / "prep", subjects=20)
    cfg = fab.make_config(tmp_path, prep, folds=(0, 1), variants=("AD",), n_filters=2, top_n=2)
    a, b = expand(cfg)
    for spec in (a, b):
        fab.write_run(spec, prep)
    (Path(b.run_dir) / "predictions.parquet").write_bytes(b"not parquet")
    shutil.copy(Path(b.run_dir) / "model.pt", Path(a.run_dir) / "model.pt")  # a's checkpoint belongs to b
    with pytest.raises(AnalysisError, match="no completed job"):  # b broken, a's model foreign: tables still need a
        (Path(a.run_dir) / "job.json").rename(Path(a.run_dir) / "job.json.bak")
        aggregate(cfg)
    (Path(a.run_dir) / "job.json.bak").rename(Path(a.run_dir) / "job.json")
    summary = aggregate(cfg)
    reasons = {s["job_id"]: s["reason"] for s in summary["skipped"]}
    assert "predictions.parquet is unreadable" in reasons[b.job_id]
    assert "belongs to job" in reasons[a.job_id]
    assert summary["accuracy"][0]["folds_done"] == 1
    md = (cfg.results_dir / "report" / "report.md").read_text()
    assert b.job_id in md and "No complete job of this data set has usable activations" in md


def test_tfd_has_no_kl_section_and_says_so(tmp_path):
    prep = fab.make_prepared_tfd(tmp_path / "prep")
    cfg = fab.make_tfd_config(tmp_path, prep)
    for spec in expand(cfg):
        fab.write_run(spec, prep)
    summary = aggregate(cfg)
    md = (cfg.results_dir / "report" / "report.md").read_text()
    assert "No KL section" in md and "FAU rankings" not in md
    assert summary["agreement"] is None and summary["agreement_shuffled"] is None
    assert (cfg.results_dir / "report" / "filters_tfd_guided.png").is_file()


def test_cli_without_completed_jobs_exits_non_zero_with_a_clear_message(tmp_path):
    prep = fab.make_prepared(tmp_path / "prep", subjects=10)
    cfg = fab.make_config(tmp_path, prep, folds=(0,), variants=("AD",))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.run(
        [sys.executable, "-m", "fercluster.cli.main", "aggregate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "error: no completed job for sweep 'fab': 1 planned" in proc.stderr


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Chromium is not installed")
def test_html_renders_in_headless_chromium(sweep, tmp_path):
    import matplotlib.image

    cfg, _, _ = sweep
    shot = tmp_path / "report.png"
    html = (cfg.results_dir / "report" / "report.html").resolve()
    subprocess.run(
        [
            "/usr/bin/chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,2400",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=90,
    )
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1200)
    assert float(pixels[..., :3].std()) > 0.05  # text, tables and figures, not a blank page


def test_report_text_is_commonmark_with_raw_html_escaped():
    from fercluster.analysis.render import Section, to_html

    page = to_html("t", [Section("s").text("**bold** and `code`\n\n- a\n- b <script>x</script>").note("*n*")])
    assert "<strong>bold</strong>" in page and "<code>code</code>" in page and "<li>a</li>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert '<div class="note"><p><em>n</em></p>' in page
