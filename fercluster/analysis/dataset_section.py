"""The per-data-set analysis of one chosen job: FAU rankings (CK+), filter grids, agreement.

The chosen job is fold 0 of the configured variant (``analysis.jobs``, default AD); when it is not
complete or broken, the next complete job of the data set is used (and the report says so).
The shown filters are chosen by activation strength (``filters.choose_filters``), never by KL; the
KL section ranks AUs under the configured smoothing and the other reading (``kl.other_reading``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fercluster.analysis import figures, kl
from fercluster.analysis.agreement_section import agreement_section
from fercluster.analysis.collect import JobResult
from fercluster.analysis.filters import (
    FILTER_RULE,
    Activations,
    activation_matrices,
    choose_filters,
    crop_support,
    load_model,
    pad_square,
    visualise,
)
from fercluster.analysis.render import Section
from fercluster.analysis.tables import markdown_table
from fercluster.atomic import write_parquet, write_text
from fercluster.config import SweepConfig, Train
from fercluster.errors import CheckpointError, DataError

TILE = 32  # side of each tile in the filter grids (the conv3 receptive field at any image size)


@dataclass
class DatasetAnalysis:
    sections: list[Section]
    summary: dict[str, Any]
    skipped: list[dict[str, Any]] = field(default_factory=list)


def candidates(results: Sequence[JobResult], dataset: str, variant: str) -> list[JobResult]:
    """The data set's complete jobs, best first: the configured variant at fold 0, then by fold."""
    jobs = [r for r in results if r.spec["dataset"] == dataset]
    return sorted(
        jobs,
        key=lambda r: (
            r.spec["variant"] != variant,
            r.spec["variant"] != "AD",
            int(r.spec["fold"]),
            int(r.spec["seed"]),
        ),
    )


def _load_job(cfg: SweepConfig, job: JobResult):
    """(prepared set, activations, prepared rows of the activation images, model or reason)."""
    from fercluster.data.prepared import load_prepared

    prepared_dir = job.spec.get("prepared_dir") or str(cfg.prepared_dir(job.spec["dataset"]))
    prepared = load_prepared(prepared_dir)
    path = job.run_dir / "activations.parquet"
    if not path.exists():
        raise ValueError("activations.parquet is missing")
    try:
        acts = activation_matrices(pd.read_parquet(path))
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"activations.parquet is unreadable ({type(exc).__name__})") from None
    index = pd.Index(prepared.manifest["image_id"].astype(str))
    rows = index.get_indexer(acts.image_ids)
    if (rows < 0).any():
        raise ValueError(f"{int((rows < 0).sum())} activation images are not in the prepared set {prepared_dir}")
    model = load_model(job.run_dir, {"job_id": job.job_id, "spec": job.spec})
    if model.conv3.out_channels != acts.values.shape[1]:
        raise CheckpointError(f"model has {model.conv3.out_channels} conv3 filters, activations {acts.values.shape[1]}")
    return prepared, acts, rows, model


def analyse_dataset(
    cfg: SweepConfig, dataset: str, results: Sequence[JobResult], out: Path, log=print
) -> DatasetAnalysis:
    a = cfg.analysis
    variant = a.jobs.get(dataset, "AD")
    section = Section(f"Filters and action units: {dataset}")
    loaded, skipped = _first_usable(cfg, candidates(results, dataset, variant), log)
    if loaded is None:
        section.note("No complete job of this data set has usable activations and checkpoint; see Skipped jobs.")
        return DatasetAnalysis([section], {"dataset": dataset, "job_id": None}, skipped)
    job, prepared, acts, rows, model = loaded
    summary = _job_text(section, dataset, job, acts, variant)
    summary["guided_mask"] = a.guided_mask
    filters = _shown_filters(section, acts.values, a, summary)
    au = _au_labels(prepared, rows, job.spec["kind"], a.min_positive)
    kl_values = top = None
    if au is None:
        section.note("No KL section: this data set has no AU labels (TFD codes no action units).")
    else:
        kl_values, top = _rankings(acts.values, au, a, prepared.au_regions)
    log(f"{dataset}: guided backprop of {len(filters)} filters x {a.top_n} images")
    normalize = job.spec["train"].get("normalize", Train().normalize)  # a job.json without it ran the default
    views = visualise(model, prepared.images, rows, acts, filters, a.top_n, normalize, a.guided_mask)
    sections = [section]
    _grids(section, views, filters, top, dataset, out)
    if kl_values is not None:
        sections.append(_kl_section(dataset, kl_values, au[1], top, filters, prepared.au_regions, out, summary))
        if prepared.au_regions:
            counted, counted_views = _counted_filters(cfg, dataset, loaded, filters, views, normalize, log)
            sections.append(
                agreement_section(
                    cfg, dataset, acts, au, counted, counted_views, filters, prepared.au_regions, out, summary
                )
            )
        else:
            section.note("No planted ground truth (real data): agreement not measured.")
    return DatasetAnalysis(sections, summary, skipped)


def _job_text(section: Section, dataset: str, job: JobResult, acts: Activations, variant: str) -> dict[str, Any]:
    """Say which job is analysed (and why, when it is not the configured one); its summary entries."""
    spec = job.spec
    chosen = f"fold {spec['fold']} of variant {spec['variant']}, seed {spec['seed']} (job `{job.job_id}`)"
    if spec["variant"] != variant or int(spec["fold"]) != 0:
        chosen += f"; the configured fold 0 of {variant} is not available"
    section.text(
        f"Job analysed: {chosen}; {acts.values.shape[0]} training images, {acts.values.shape[1]} conv3 filters."
    )
    return {
        "dataset": dataset,
        "job_id": job.job_id,
        "fold": int(spec["fold"]),
        "variant": spec["variant"],
    }


def _counted_filters(cfg: SweepConfig, dataset: str, loaded: tuple, filters, views, normalize, log) -> tuple:
    """The filters the agreement rate counts (``analysis.agreement_filters``) and their guided-backprop views."""
    a = cfg.analysis
    if a.agreement_filters != "all":
        return filters, views
    _, prepared, acts, rows, model = loaded
    log(f"{dataset}: guided backprop of all {acts.values.shape[1]} filters for the agreement check")
    counted = list(range(acts.values.shape[1]))
    return counted, visualise(model, prepared.images, rows, acts, counted, a.top_n, normalize, a.guided_mask)


def _first_usable(cfg: SweepConfig, jobs: Sequence[JobResult], log) -> tuple[tuple | None, list[dict[str, Any]]]:
    """The first of ``jobs`` whose files load (job, prepared, activations, rows, model), and the ones skipped."""
    skipped: list[dict[str, Any]] = []
    for job in jobs:
        try:
            return (job, *_load_job(cfg, job)), skipped
        except (ValueError, OSError, CheckpointError, DataError) as exc:
            skipped.append({"job_id": job.job_id, "run_dir": str(job.run_dir), "reason": f"analysis: {exc}"})
            log(f"[yellow]skipping job {job.job_id} for the filter analysis: {exc}[/]")
    return None, skipped


def _shown_filters(section: Section, values: np.ndarray, a, summary: dict) -> list[int]:
    """The filters shown (``filters.choose_filters``: activation strength, never KL), said in the report."""
    filters = choose_filters(values, a.filters, a.n_filters, a.top_n)
    rule = FILTER_RULE.format(n=a.top_n)
    section.text(
        "Filters shown: configured (`analysis.filters`)."
        if a.filters
        else f"Filters shown: the {len(filters)} with {rule}, the same rule for every data set; no AU label or KL "
        "value enters the choice."
    )
    summary["filters"] = filters
    summary["filter_rule"] = "configured" if a.filters else rule
    return filters


def _au_labels(prepared, rows: np.ndarray, kind: str, min_positive: int):
    if kind != "ckplus" or "aus" not in prepared.manifest.columns:
        return None
    aus = prepared.manifest["aus"].to_numpy()[rows]
    matrix, numbers = kl.au_matrix([list(x) if x is not None else [] for x in aus], min_positive)
    return (matrix, numbers) if numbers else None


FIGURE1_SIDE = 5  # the paper's Figure 1: 5 filters x 5 top images


def _grids(section: Section, views, filters, top, dataset: str, out: Path) -> None:
    labels = [f"filter {f}" + (f"\nAU{int(top.loc[f, 'au'])}" if top is not None else "") for f in filters]
    gb_rows = [[pad_square(crop_support(m), TILE) for m in maps] for maps in views.projections]
    gb = figures.grid(
        gb_rows,
        labels,
        f"{dataset}: guided backprop of the top {len(gb_rows[0])} images",
        out / f"filters_{dataset}_guided.png",
        signed=True,
    )
    patches = figures.grid(
        views.patches,
        labels,
        f"{dataset}: receptive-field patches of the top images",
        out / f"filters_{dataset}_patches.png",
    )
    section.image(
        gb,
        "Guided-backprop projection of each filter's strongest unit on its top training images "
        "(one row per filter, strongest image left; cropped to the support; red positive, blue negative).",
    )
    section.image(patches, "The same images: the 32x32 receptive-field patch around the unit's argmax.")
    n = FIGURE1_SIDE
    fig1 = figures.figure1(
        [p[:n] for p in views.patches[:n]],
        [m[:n] for m in views.projection_patches[:n]],
        labels[:n],
        out / f"figure1_{dataset}.png",
    )
    section.image(
        fig1,
        f"Figure 1 laid out as the paper's: {min(n, len(filters))} filters (rows) x their top {n} training images, "
        "each patch followed by its guided-backprop map over the same 32x32 receptive field.",
    )


def _rankings(values: np.ndarray, au, a, au_regions) -> tuple[np.ndarray, pd.DataFrame]:
    """KL (F, J) under the configured reading, and every filter's top AU under it and the other reading."""
    matrix, aus = au
    reading = kl.Reading(a.kl_prior, a.kl_eps)
    other = kl.other_reading(reading)
    kl_values = kl.kl_matrix(values, matrix, a.kl_bins, reading.eps, reading.prior)
    kl_other = kl.kl_matrix(values, matrix, a.kl_bins, other.eps, other.prior)
    top = kl.with_other_reading(
        kl.top_aus(kl_values, aus, au_regions), kl.top_aus(kl_other, aus, au_regions), reading, other
    )
    return kl_values, top


def _kl_section(dataset, kl_values, aus, top, filters, au_regions, out: Path, summary: dict) -> Section:
    s = Section(f"FAU rankings by KL divergence: {dataset}")
    write_parquet(out / f"kl_{dataset}.parquet", kl.ranking(kl_values, aus))
    write_text(out / f"top_aus_{dataset}.csv", top.to_csv(index=False))
    shown = top.set_index("filter").loc[list(filters)]
    mine, other = top["reading"].iloc[0], top["other_reading"].iloc[0]
    rows = _readings_rows(shown, kl.paper_comparison(top, filters), mine, other)
    write_text(out / f"top_aus_{dataset}.md", markdown_table(rows))
    s.text(
        f"D_KL(Q||R) of the max-activation histograms with vs without each AU, for all {kl_values.shape[0]} "
        f"filters x {len(aus)} AUs (AUs with enough positive training images), under the configured smoothing "
        f"({mine}) and the other reading ({other}); {kl.LITERAL.label} is the paper's literal \"small epsilon in "
        f'every bin". All filters: `kl_{dataset}.parquet` (filter, au, kl, rank; '
        f"configured reading); top AU of every filter under both readings: `top_aus_{dataset}.csv`."
    )
    differ = [int(f) for f in shown.index[shown["readings_differ"].to_numpy()]]
    s.text(
        f"The two readings give a different top AU for {len(differ)} of the {len(filters)} shown filters"
        + (f" ({', '.join(map(str, differ))})" if differ else "")
        + f" and {int(top['readings_differ'].sum())} "
        f"of all {len(top)}. They can differ where an AU has few positive images: with a vanishing epsilon the "
        "plug-in KL grows as the positive count shrinks, so rare AUs win; the pooled prior shrinks small samples "
        'towards "no difference".'
    )
    s.table(
        rows,
        "Top AU of the shown filters under both readings, beside the paper's Table 4 (filter numbers are "
        "not comparable between trainings; compare the AUs found).",
    )
    _overlap_text(s, shown, aus, mine, other, summary)
    counts = top["au"].value_counts()
    s.table(
        [{"AU": f"AU{int(k)}", "name": kl.facs_name(int(k), au_regions), "filters": int(v)} for k, v in counts.items()],
        f"How many of all filters have each AU as their top AU ({mine}).",
    )
    for f in filters:
        s.image(
            figures.kl_bars(kl_values[f], aus, f, out / f"kl_{dataset}_filter{f}.png"),
            f"Filter {f}: KL divergence per AU ({mine}), top AU in red.",
        )
    summary["top_aus"] = {int(f): int(shown.loc[f, "au"]) for f in filters}
    summary["top_aus_other"] = {int(f): int(shown.loc[f, "other_au"]) for f in filters}
    summary["kl_readings"] = {"configured": mine, "other": other}
    return s


def _overlap_text(s: Section, shown: pd.DataFrame, aus, mine: str, other: str, summary: dict) -> None:
    """The shown filters' top AUs against the AUs of the paper's Table 4, under each reading."""
    overlaps = {
        key: {"reading": label, **kl.table4_overlap(shown[col].tolist(), aus)}
        for key, label, col in (("configured", mine, "au"), ("other", other, "other_au"))
    }
    s.text(
        "Overlap with the paper's Table 4 (the shown filters are chosen without KL, so this is not circular):\n\n"
        + "\n\n".join(kl.overlap_sentence(o, o["reading"]) for o in overlaps.values())
    )
    summary["table4_overlap"] = overlaps


def _readings_rows(shown: pd.DataFrame, paper: pd.DataFrame, mine: str, other: str) -> list[dict[str, str]]:
    """The shown filters' table: top AU and KL under each reading, whether they differ, Table 4's AU."""
    return [
        {
            "filter": str(f),
            f"top AU ({mine})": f"AU{int(r['au'])} {r['name']}",
            f"KL ({mine})": f"{r['kl']:.3f}",
            f"top AU ({other})": f"AU{int(r['other_au'])} {r['other_name']}",
            f"KL ({other})": f"{r['other_kl']:.3f}",
            "readings": "differ" if r["readings_differ"] else "agree",
            "Table 4 (same position)": f"{p['paper_au']} {p['paper_name']}".strip() or "-",
        }
        for (f, r), p in zip(shown.iterrows(), paper.to_dict("records"), strict=True)
    ]
