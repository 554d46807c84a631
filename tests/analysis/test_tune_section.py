"""The report's Ray Tune section on fabricated search results (no Ray): numbers, table, figures."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fercluster.analysis.render import to_html, to_markdown
from fercluster.analysis.report import aggregate
from fercluster.analysis.tune_section import TITLE, rank_correlation, tune_section
from fercluster.config import parse_config

KS = [0.2, 0.5, 0.8, 1.1]


def _config(tmp: Path):
    return parse_config({
        "name": "ktune-fab",
        "paths": {"jobs": str(tmp / "jobs"), "results": str(tmp / "results"), "data": str(tmp / "data")},
        "datasets": {"ckplus": {"kind": "ckplus", "root": str(tmp / "raw"), "classes": 8, "crop": "landmarks"}},
        "train": {"iterations": 40, "eval_every": 10, "width": 0.125, "image_size": 32},
        "tune": {"datasets": ["ckplus"], "folds": [0], "variant": "none",
                 "space": {"k": {"type": "uniform", "low": 0.2, "high": 1.2}}, "search": "random",
                 "num_samples": 4, "grace_period": 10, "reduction_factor": 2},
    })  # fmt: skip


def _write_search(cfg) -> None:
    """Four trials: k 0.2 and 0.5 stopped by ASHA at 10 and 20 iterations, the others trained to 40."""
    rows = []
    for t, (k, last) in enumerate(zip(KS, [10, 20, 40, 40], strict=True)):
        for it in range(10, last + 1, 10):
            rows.append({"dataset": "ckplus", "trial_id": f"t{t}", "iteration": it, "k": k,
                         "val_acc": 0.3 + 0.2 * t + it / 1000, "test_acc": 0.25 + 0.2 * t,
                         "stopped_by_asha": last < 40, "state": "TERMINATED"})  # fmt: skip
    folder = cfg.results_dir / "tune"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    best = {"trial_id": "t3", "k": 1.1, "val_acc": 0.94, "test_acc": 0.85, "iteration": 40}
    (folder / "best.json").write_text(json.dumps({"k": 1.1, "per_dataset": {"ckplus": best}}))


def test_tune_section_is_a_section_with_the_numbers_table_and_figures(tmp_path):
    cfg = _config(tmp_path)
    _write_search(cfg)
    section = tune_section(cfg, tmp_path / "report")
    assert section.title == TITLE
    images = [block[1] for block in section.blocks if block[0] == "image"]
    assert [p.name for p in images] == ["accuracy_vs_k.png", "curves_by_k.png", "asha_budget.png"]
    assert all(p.stat().st_size > 0 for p in images)
    md = to_markdown("r", [section], tmp_path / "report")
    assert (
        "ckplus: 4 trials, 2 trained to the end, 2 stopped by ASHA; they trained 110 of the 160 iterations "
        "that running every trial to the end would take (69%). Rank correlation of k with the best "
        "validation accuracy: +1.00."
    ) in md
    assert "| ckplus | 1.100 | 94.0% | 85.0% | 40 | t3 | 4 |" in md
    assert "`k: from_tune <this sweep>`" in md and "_Iterations each trial trained" in md
    html = to_html("r", [section])
    assert "<code>k: from_tune &lt;this sweep&gt;</code>" in html and "<td>94.0%</td>" in html
    assert html.count("data:image/png;base64,") == 3


def test_a_pure_tune_sweep_reports_its_search(tmp_path):
    cfg = _config(tmp_path)
    _write_search(cfg)
    aggregate(cfg)
    md = (cfg.results_dir / "report" / "report.md").read_text()
    assert f"## {TITLE}" in md and "| ckplus | 1.100 |" in md and "(tune/asha_budget.png)" in md


def test_no_tune_results_no_section(tmp_path):
    assert tune_section(_config(tmp_path), tmp_path) is None


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ([1, 2, 3, 4], [10, 30, 20, 40], 0.8),
        ([1, 2, 2, 3], [1, 3, 2, 4], 0.9486832980505138),  # ties get their average rank
        ([1, 2, np.nan, 3, 4], [4, 3, 0, 2, 1], -1.0),  # pairs with a NaN are left out
        ([1, 2], [1, 2], None),  # fewer than 3 pairs
        ([1, 1, 1], [1, 2, 3], None),  # constant k
        ([1, 2, 3], [0.5, 0.5, 0.5], None),  # constant accuracy
    ],
)
def test_rank_correlation(x, y, expected):
    rho = rank_correlation(np.array(x, dtype=float), np.array(y, dtype=float))
    assert rho == (None if expected is None else pytest.approx(expected))
