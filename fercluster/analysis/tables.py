"""The paper's Tables 1-3: test accuracy per data set and variant, mean +- std over folds.

Accuracy of a fold = test accuracy of the selected checkpoint (mean over seeds when a fold ran
several). The std is the **sample** standard deviation over folds (ddof = 1; the paper does not
say which it used); it is undefined (NaN) with a single fold. Accuracies are in percent.

Beside our rows, each data set whose (kind, classes) the paper reports on carries the prior art the
paper quotes (``PRIOR_ART``), after its own rows: ``source`` is ``"quoted"`` there (``"ours"``
otherwise), the quoted number is in ``paper`` and our columns (mean, std, folds) are empty.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fercluster.analysis.collect import JobResult, PlannedJob
from fercluster.atomic import write_text

SELECTIONS = ("best_val", "best_test", "last")  # job.json's "selections" (fercluster.train.job.selections)
STD_NOTE = "std: sample standard deviation over folds (ddof = 1)"
VARIANT_ORDER = {"none": 0, "D": 1, "A": 2, "AD": 3}

# The paper's numbers (mean, std over folds), keyed by (kind, classes, variant).
PAPER = {
    ("ckplus", 8, "none"): (78.2, 5.7),
    ("ckplus", 8, "D"): (82.3, 4.0),
    ("ckplus", 8, "A"): (94.6, 3.3),
    ("ckplus", 8, "AD"): (95.1, 3.1),
    ("ckplus", 6, "AD"): (95.7, 2.5),
    ("tfd", 7, "none"): (79.0, 1.1),
    ("tfd", 7, "D"): (81.8, 2.1),
    ("tfd", 7, "A"): (88.4, 1.7),
    ("tfd", 7, "AD"): (88.6, 1.5),
}

# Prior art as the paper quotes it (method, accuracy in percent, as printed), keyed by (kind, classes).
PRIOR_ART = {
    ("tfd", 7): (("Gabor+PCA", "80.2"), ("Deep mPoT", "82.4"), ("CDA", "85.0")),
    ("ckplus", 8): (("AURF", "92.22"), ("AUDN", "93.70")),
    ("ckplus", 6): (("CSPL", "89.89"), ("LBPSVM", "95.10"), ("BDBN", "96.70")),
}
PRINTED = {method: value for methods in PRIOR_ART.values() for method, value in methods}
QUOTED = "quoted"  # ``source`` of a prior-art row: the paper's quotation, not a run of ours
QUOTED_NOTE = "rows marked (quoted): prior art as quoted by the paper, not run here"
COLUMNS = [
    "dataset",
    "variant",
    "mean",
    "std",
    "folds_done",
    "folds_planned",
    "runs",
    "paper",
    "paper_std",
    "diff",
    "source",
]


def fold_table(results: Sequence[JobResult]) -> pd.DataFrame:
    """One row per completed job: data set, variant, fold, seed, init scale k, accuracies, selected iteration."""
    rows = [
        {
            "dataset": r.spec["dataset"],
            "kind": r.spec.get("kind", ""),
            "classes": int(r.spec.get("classes", 0)),
            "variant": r.spec["variant"],
            "fold": int(r.spec["fold"]),
            "seed": int(r.spec["seed"]),
            "k": _float(r.info.get("k")),  # the init scale the job drew (job.json)
            "job_id": r.job_id,
            "test_acc": 100.0 * _accuracy(r),
            "val_acc": 100.0 * _float(r.info.get("val_acc")),
            "selected_iteration": int(r.info.get("selected_iteration", -1)),
            **selection_accuracies(r.info),
        }
        for r in results
    ]
    columns = [
        "dataset",
        "kind",
        "classes",
        "variant",
        "fold",
        "seed",
        "k",
        "job_id",
        "test_acc",
        "val_acc",
        "selected_iteration",
        *(f"test_{name}" for name in SELECTIONS),
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return _sort(frame, ["dataset", "variant", "fold", "seed"])


def selection_accuracies(info: dict[str, Any]) -> dict[str, float]:
    """Test accuracy (%) of each checkpoint selection job.json records (NaN where a record has none)."""
    recorded = info.get("selections") if isinstance(info.get("selections"), dict) else {}
    return {f"test_{name}": 100.0 * _float((recorded.get(name) or {}).get("test_acc")) for name in SELECTIONS}


def _accuracy(r: JobResult) -> float:
    value = r.info.get("test_acc")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return float(np.mean(r.labels == r.predictions)) if len(r.labels) else float("nan")


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _sort(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    order = frame["variant"].map(VARIANT_ORDER).fillna(9)
    return frame.assign(_v=order).sort_values(["dataset", "_v", *by[2:]]).drop(columns="_v").reset_index(drop=True)


def accuracy_table(
    folds: pd.DataFrame, planned: Sequence[PlannedJob], kinds: dict[str, tuple[str, int]]
) -> pd.DataFrame:
    """Mean +- sample std over folds per data set x variant, folds done/planned, the paper beside;
    after each data set's rows, the prior art the paper quotes for its (kind, classes) (``source``
    ``"quoted"``).

    ``kinds`` maps a data set name to (kind, classes), for the paper lookup of planned-only rows.
    """
    planned_folds: dict[tuple[str, str], set[int]] = {}
    for p in planned:
        planned_folds.setdefault((p.dataset, p.variant), set()).add(p.fold)
    per_fold = folds.groupby(["dataset", "variant", "fold"], sort=False)["test_acc"].mean()
    runs = folds.groupby(["dataset", "variant"], sort=False).size()
    keys = sorted(set(planned_folds) | set(runs.index), key=lambda k: (k[0], VARIANT_ORDER.get(k[1], 9)))
    rows = []
    for i, (dataset, variant) in enumerate(keys):
        acc = per_fold.loc[(dataset, variant)].to_numpy() if (dataset, variant) in runs.index else np.array([])
        kind, classes = kinds.get(dataset, ("", 0))
        paper = PAPER.get((kind, classes, variant))
        mean = float(acc.mean()) if len(acc) else float("nan")
        rows.append(
            {
                "dataset": dataset,
                "variant": variant,
                "mean": mean,
                "std": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
                "folds_done": int(len(acc)),
                "folds_planned": len(planned_folds.get((dataset, variant), ())),
                "runs": int(runs.get((dataset, variant), 0)),
                "paper": paper[0] if paper else float("nan"),
                "paper_std": paper[1] if paper else float("nan"),
                "diff": mean - paper[0] if paper else float("nan"),
                "source": "ours",
            }
        )
        if i + 1 == len(keys) or keys[i + 1][0] != dataset:  # the data set's last row: its quoted rows follow
            rows += quoted_rows(dataset, kind, classes)
    return pd.DataFrame(rows, columns=COLUMNS)


def quoted_rows(dataset: str, kind: str, classes: int) -> list[dict[str, Any]]:
    """The prior art the paper quotes for (kind, classes), as rows of ``dataset`` (``source`` quoted)."""
    nan = float("nan")
    return [
        {
            "dataset": dataset,
            "variant": method,
            "mean": nan,
            "std": nan,
            "folds_done": 0,
            "folds_planned": 0,
            "runs": 0,
            "paper": float(value),
            "paper_std": nan,
            "diff": nan,
            "source": QUOTED,
        }
        for method, value in PRIOR_ART.get((kind, classes), ())
    ]


def own_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table without the quoted prior art: the rows of this sweep's runs."""
    return table[table["source"] != QUOTED] if "source" in table else table


def confusion_matrices(results: Sequence[JobResult]) -> dict[tuple[str, str], np.ndarray]:
    """Confusion matrices (rows = true class, columns = predicted) summed over folds."""
    groups: dict[tuple[str, str], list[JobResult]] = {}
    for r in results:
        groups.setdefault((r.spec["dataset"], r.spec["variant"]), []).append(r)
    out: dict[tuple[str, str], np.ndarray] = {}
    for key, jobs in groups.items():  # one bincount per data set x variant
        labels = np.concatenate([r.labels for r in jobs])
        preds = np.concatenate([r.predictions for r in jobs])
        c = int(jobs[0].spec.get("classes") or 0) or int(max(labels.max(initial=0), preds.max(initial=0)) + 1)
        ok = (labels >= 0) & (labels < c) & (preds >= 0) & (preds < c)
        out[key] = np.bincount(labels[ok] * c + preds[ok], minlength=c * c).reshape(c, c)
    return out


# ----------------------------------------------------------------------------- formatting


def fmt(value: float, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def display_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The accuracy table as strings: the same cells in Markdown, LaTeX, HTML and the CLI.

    A quoted prior-art row names its method with "(quoted)", leaves our columns at "-" and puts the
    paper's quotation, as printed, under "paper (%)".
    """
    rows = []
    for r in table.itertuples(index=False):
        if getattr(r, "source", "ours") == QUOTED:
            rows.append(
                {
                    "data set": r.dataset,
                    "variant": f"{r.variant} (quoted)",
                    "accuracy (%)": "-",
                    "folds": "-",
                    "paper (%)": PRINTED.get(r.variant, fmt(r.paper, 2)),
                    "difference": "-",
                }
            )
            continue
        rows.append(
            {
                "data set": r.dataset,
                "variant": r.variant,
                "accuracy (%)": f"{fmt(r.mean)} ± {fmt(r.std)}" if r.folds_done else "-",
                "folds": f"{r.folds_done}/{r.folds_planned}",
                "paper (%)": f"{fmt(r.paper)} ± {fmt(r.paper_std)}" if math.isfinite(r.paper) else "-",
                "difference": fmt(r.diff, signed=True),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_(none)_\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(r[h]).replace("|", "\\|") for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# LaTeX's ten special characters, and the ± of "mean ± std"; backslash first, as the others add some
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX))


def latex_escape(value: object) -> str:
    """``value`` as LaTeX text: every special character escaped in one pass (so an escape's own
    backslash is never escaped again)."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group(0)], str(value))


def latex_table(rows: list[dict[str, str]], caption: str) -> str:
    """A booktabs table a paper can \\input."""

    esc = latex_escape
    head = list(rows[0]) if rows else []
    body = [" & ".join(esc(r[h]) for h in head) + r" \\" for r in rows]
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\begin{tabular}{" + "l" * 2 + "r" * (len(head) - 2) + "}",
            r"\toprule",
            " & ".join(esc(h) for h in head) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\caption{" + esc(caption) + "}",
            r"\end{table}",
            "",
        ]
    )


def write_tables(out: Path, table: pd.DataFrame, folds: pd.DataFrame) -> dict[str, Path]:
    """accuracy.{csv,md,tex} and folds.{csv,md}; returns the paths written."""
    caption = f"Test accuracy, mean ± std over folds. {STD_NOTE}; paper: Khorrami et al. 2015; {QUOTED_NOTE}."
    rows = display_rows(table)
    paths = {
        "accuracy_csv": out / "accuracy.csv",
        "accuracy_md": out / "accuracy.md",
        "accuracy_tex": out / "accuracy.tex",
        "folds_csv": out / "folds.csv",
        "folds_md": out / "folds.md",
    }
    write_text(paths["accuracy_csv"], table.to_csv(index=False))
    write_text(paths["accuracy_md"], markdown_table(rows) + f"\n{caption}\n")
    write_text(paths["accuracy_tex"], latex_table(rows, caption))
    write_text(paths["folds_csv"], folds.to_csv(index=False))
    write_text(paths["folds_md"], markdown_table(fold_display_rows(folds)))
    return paths


def fold_display_rows(folds: pd.DataFrame) -> list[dict[str, str]]:
    # Column lists, not itertuples: with 10,000 jobs, iterating the Arrow-backed string columns
    # row by row costs more than the formatting.
    cols = ("dataset", "variant", "fold", "seed", "k", "test_acc", "val_acc", "selected_iteration", "job_id")
    return [
        {
            "data set": dataset,
            "variant": variant,
            "fold": str(fold),
            "seed": str(seed),
            "k": fmt(k, 3),
            "test (%)": fmt(test),
            "val (%)": fmt(val),
            "iteration": str(iteration),
            "job": job,
        }
        for dataset, variant, fold, seed, k, test, val, iteration, job in zip(
            *(folds[c].tolist() for c in cols), strict=True
        )
    ]
