"""``aggregate(cfg)``: the sweep's report from whatever is complete.

Writes under ``results/<sweep>/report/``: accuracy and per-fold tables (CSV, Markdown, LaTeX),
learning curves, confusion matrices, filter grids, KL rankings and bar charts, the planted-truth
agreement, ``report.html`` (self-contained), ``report.md`` (its twin) and ``summary.json``.
An unfinished sweep is reported as such; only a sweep with no complete job is an error.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fercluster.analysis import figures, tables
from fercluster.analysis.collect import Collection, collect
from fercluster.analysis.compare import comparison_section
from fercluster.analysis.dataset_section import analyse_dataset
from fercluster.analysis.render import Section, to_html, to_markdown
from fercluster.analysis.tune_section import TITLE as TUNE_TITLE
from fercluster.analysis.tune_section import tune_section
from fercluster.atomic import write_json, write_text
from fercluster.config import SweepConfig
from fercluster.errors import AnalysisError, FerclusterError


def aggregate(cfg: SweepConfig, console: Any = None) -> dict[str, Any]:
    """Build the report of ``cfg``'s sweep; returns summary.json's content (plus ``paths``)."""
    start = time.time()
    log = console.print if console is not None else (lambda *a, **k: None)
    out = cfg.results_dir / "report"
    col = collect(cfg)
    tune = _tune_section(cfg, out)
    if not col.results and tune is None:
        raise AnalysisError(_nothing_message(cfg, col))  # before any log line: the error is all stderr shows
    log(
        f"{len(col.results)} complete jobs of {len(col.planned)} planned; {len(col.missing)} missing, "
        f"{len(col.skipped)} failed (broken files)"
    )
    sections: list[Section] = []
    acc = pd.DataFrame()
    paths: dict[str, Path] = {}
    analyses: list[dict] = []
    skipped = list(col.skipped)
    if col.results:  # a pure Ray Tune sweep has no grid jobs: its report is the tune section
        folds = tables.fold_table(col.results)
        kinds = {n: (d.kind, d.classes) for n, d in cfg.datasets.items()}
        acc = tables.accuracy_table(folds, col.planned, kinds)
        paths = tables.write_tables(out, acc, folds)
        sections += [_accuracy_section(acc, folds), comparison_section(folds, kinds), _curves_section(cfg, col, out)]
    for dataset in sorted({r.spec["dataset"] for r in col.results}):
        log(f"analysing {dataset}")
        result = analyse_dataset(cfg, dataset, col.results, out, log)
        sections += result.sections
        analyses.append(result.summary)
        skipped += result.skipped
    if tune is not None:
        sections.append(tune)
    spent = _cost(cfg)
    attempts, attempt_counts = _attempts_section(cfg, col)
    sections += [_missing_section(col, skipped), attempts, _provenance_section(cfg, col, time.time() - start, spent)]
    summary = _summary(cfg, acc, analyses, col, skipped)
    summary["cost"], summary["attempts"] = spent, attempt_counts
    title = f"fercluster report: sweep {cfg.name}"
    write_text(out / "report.md", to_markdown(title, sections, out))
    write_text(out / "report.html", to_html(title, sections))
    write_json(out / "summary.json", summary)
    summary["paths"] = {
        "report_html": str(out / "report.html"),
        "report_md": str(out / "report.md"),
        "summary": str(out / "summary.json"),
        **{k: str(v) for k, v in paths.items()},
    }
    summary["table"] = acc
    log(f"report written to {out / 'report.html'}")
    return summary


def _nothing_message(cfg: SweepConfig, col: Collection) -> str:
    runs = cfg.results_dir / "runs"
    msg = (
        f"no completed job for sweep {cfg.name!r}: {len(col.planned)} planned, none with a readable job.json "
        f"under {runs}"
    )
    if col.skipped:
        msg += f"; {len(col.skipped)} broken: " + "; ".join(f"{s['job_id']}: {s['reason']}" for s in col.skipped[:5])
    return msg + f". Run the sweep first (fercluster sweep CONFIG) or check paths.results ({cfg.paths.results})."


def _accuracy_section(acc, folds) -> Section:
    s = Section("Accuracy (the paper's Tables 1-3)")
    s.table(
        tables.display_rows(acc),
        f"Test accuracy of the selected checkpoint, mean ± std over folds; "
        f"{tables.STD_NOTE}. Paper: Khorrami et al., ICCVW 2015; {tables.QUOTED_NOTE} "
        "(their number under 'paper').",
    )
    s.text(
        "Files: `accuracy.csv` (column `source`: ours or quoted), `accuracy.md`, `accuracy.tex` (LaTeX), `folds.csv`."
    )
    s.table(
        tables.fold_display_rows(folds),
        "Per fold: the init scale k the job drew, test and validation accuracy at the selected iteration.",
    )
    return s


def _curves_section(cfg: SweepConfig, col: Collection, out: Path) -> Section:
    s = Section("Learning curves and confusion matrices")
    for dataset in sorted({r.spec["dataset"] for r in col.results}):
        s.image(
            figures.learning_curves(col.results, dataset, out / f"curves_{dataset}.png"),
            f"{dataset}: test (solid) and validation (dashed) accuracy against iteration, folds overlaid.",
        )
    names = _label_names(cfg)
    for (dataset, variant), matrix in sorted(
        tables.confusion_matrices(col.results).items(), key=lambda kv: (kv[0][0], tables.VARIANT_ORDER.get(kv[0][1], 9))
    ):
        s.image(
            figures.confusion(
                matrix,
                names.get(dataset, []),
                f"{dataset} {variant} (summed over folds)",
                out / f"confusion_{dataset}_{variant}.png",
            ),
            f"{dataset} {variant}: confusion matrix summed over folds (rows: true class).",
        )
    return s


def _label_names(cfg: SweepConfig) -> dict[str, list[str]]:
    import json

    names = {}
    for dataset in cfg.datasets:
        try:
            names[dataset] = json.loads((Path(cfg.prepared_dir(dataset)) / "info.json").read_text())["label_names"]
        except (OSError, ValueError, KeyError):
            names[dataset] = []
    return names


def _tune_section(cfg: SweepConfig, out: Path) -> Section | None:
    """The Ray Tune search's section, when the sweep has one with results."""
    try:
        return tune_section(cfg, out)
    except (FerclusterError, OSError, ValueError) as exc:
        return Section(TUNE_TITLE).note(f"The tune section could not be built: {exc}")


def _missing_section(col: Collection, skipped: list[dict]) -> Section:
    s = Section("What is missing")
    if not col.missing and not skipped:
        s.text(f"Nothing: all {len(col.planned)} planned jobs are complete.")
    if col.missing:
        s.text(
            f"{len(col.missing)} of {len(col.planned)} planned jobs have no job.json (not complete); "
            "their numbers are not in the tables."
        )
        s.table([{k: ("-" if v is None else v) for k, v in m.items()} for m in col.missing])
    if skipped:
        s.text(
            "Failed jobs, left out because their files are broken (a job.json that does not parse or lacks "
            "fields, a corrupt table); `fercluster sweep --retry-failed` reruns them:"
        )
        s.table(skipped)
    if col.extra:
        s.text(
            f"{len(col.extra)} complete run directories are not in this sweep's plan (ignored): "
            + ", ".join(col.extra[:20])
            + (" ..." if len(col.extra) > 20 else "")
        )
    return s


def _attempts_section(cfg: SweepConfig, col: Collection, shown: int = 50) -> tuple[Section, dict[str, Any]]:
    """Every job's attempts (``orchestration.watch.attempts``): how they ended, counted, and the
    attempts of the jobs that ran more than once or did not complete at the first go."""
    from fercluster.orchestration.watch.attempts import sweep_attempts

    done = {r.job_id for r in col.results}
    jobs = ((p.job_id, str(p.run_dir), "COMPLETED" if p.job_id in done else "") for p in col.planned)
    found = sweep_attempts(cfg.jobs_dir, cfg.name, cfg.results_dir, jobs)
    endings = Counter(a.ended or "running or not known" for atts in found.values() for a in atts)
    counts = {"attempts": sum(endings.values()), "jobs": sum(1 for a in found.values() if a), **endings}
    s = Section("Attempts")
    s.text(
        f"{counts['attempts']} attempts of {counts['jobs']} jobs (each start of a job on SLURM or here); how they "
        "ended: " + (", ".join(f"{n} {word}" for word, n in endings.most_common()) or "none recorded") + "."
    )
    rows = [
        _attempt_row(job_id, a)
        for job_id, atts in found.items()
        if len(atts) > 1 or any(a.ended not in ("", "completed") for a in atts)
        for a in atts
    ]
    if rows:
        more = f" (the first {shown} attempts of {len(rows)})" if len(rows) > shown else ""
        s.table(rows[:shown], f"Jobs that ran more than once or did not complete at the first go{more}.")
    return s, counts


def _attempt_row(job_id: str, a: Any) -> dict[str, Any]:
    def it(value: int | None) -> str:
        return "-" if value is None else str(value)

    return {
        "job": job_id,
        "attempt": a.number,
        "SLURM id": a.slurm_id or "-",
        "node": a.node or "-",
        "start": _when(a.start),
        "end": _when(a.end),
        "ended": a.ended or "-",
        "by": a.ended_by or "-",
        "iterations": f"{it(a.from_iteration)} -> {it(a.iteration)}",
    }


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _cost(cfg: SweepConfig) -> dict[str, Any]:
    """What the sweep cost on SLURM: asked of sacct (one query) inside a SLURM job (the aggregation
    job), else as the last ``fercluster status`` recorded it."""
    from fercluster.orchestration.watch.cost import sweep_cost

    backend = None
    if os.environ.get("SLURM_JOB_ID") and shutil.which("sacct"):
        from fercluster.orchestration.backends import backend_for

        backend = backend_for(cfg, query_timeout_s=60)  # inside the aggregation job, within its time
    try:
        return sweep_cost(cfg, backend)
    except FerclusterError:
        return sweep_cost(cfg)


def _provenance_section(cfg: SweepConfig, col: Collection, seconds: float, spent: dict[str, Any]) -> Section:
    s = Section("How the run was made")
    infos = [r.info for r in col.results]
    versions = Counter(str(i.get("code_version", "unknown")) for i in infos)
    devices = Counter(str(i.get("device", "unknown")) for i in infos)
    total = sum(_total_seconds(r) for r in col.results)
    s.table([{"code version": k, "jobs": v} for k, v in versions.most_common()])
    s.table([{"device": k, "jobs": v} for k, v in devices.most_common()])
    packages = next((i.get("packages") for i in infos if isinstance(i.get("packages"), dict)), None)
    if packages:
        s.table([{"package": k, "version": str(v)} for k, v in sorted(packages.items())], "Packages of the first job.")
    s.text(
        f"Training time: {total / 3600:.2f} h over {len(col.results)} complete jobs "
        f"({total / max(1, len(col.results)):.0f} s per job on average). Aggregation took {seconds:.1f} s."
    )
    s.text(f"Cost on SLURM (every run, retries and requeues included): {spent['line']}.")
    s.code(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return s


def _total_seconds(r) -> float:
    timings = r.info.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("total_s"), (int, float)):
        return float(timings["total_s"])
    wall = r.metrics.get("wall_time") if isinstance(r.metrics, dict) else None
    return float(wall[-1]) if wall is not None and len(wall) else 0.0


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _summary(cfg, acc, analyses: list[dict], col: Collection, skipped: list[dict]) -> dict[str, Any]:
    planted = [a for a in analyses if a.get("agreement") is not None or a.get("agreement_shuffled") is not None]
    records = acc.to_dict("records") if len(acc) else []
    return {
        "sweep": cfg.name,
        "std": "sample (ddof=1) over folds",
        "accuracy": [  # this sweep's runs only
            {
                k: _clean(r[k])
                for k in ("dataset", "variant", "mean", "std", "folds_done", "folds_planned", "paper", "diff")
            }
            for r in records
            if r["source"] != tables.QUOTED
        ],
        "accuracy_quoted": [  # prior art as the paper quotes it, under each matching data set; not ours
            {"dataset": r["dataset"], "method": r["variant"], "accuracy": r["paper"], "source": tables.QUOTED}
            for r in records
            if r["source"] == tables.QUOTED
        ],
        "agreement": planted[0]["agreement"] if planted else None,
        "agreement_shuffled": planted[0]["agreement_shuffled"] if planted else None,
        "analysis": analyses,
        "missing": col.missing,
        "skipped": skipped,
        "complete": len(col.results),
        "planned": len(col.planned),
    }
