"""The agreement section of a synthetic data set's analysis: the KL method against planted regions.

The rate, its shuffled-label baseline and the rule come from ``agreement``; this module words them
for the report, draws the plot and fills the data set's summary entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fercluster.analysis import agreement as agree_mod
from fercluster.analysis import figures
from fercluster.analysis.filters import Activations
from fercluster.analysis.render import Section
from fercluster.fmt import pct


def agreement_section(
    cfg, dataset, acts: Activations, au, counted, views, shown, au_regions, out: Path, summary: dict
) -> Section:
    a = cfg.analysis
    res = agree_mod.agreement(
        acts.values,
        au[0],
        au[1],
        counted,
        views.projections,
        au_regions,
        views.image_size,
        a.kl_bins,
        a.kl_eps,
        a.kl_prior,
        a.shuffle_seed,
        shown=shown,
    )
    s = Section(f"Agreement with the planted AU regions: {dataset}")
    s.text(_agreement_text(res, a))
    s.table(
        [
            {**d, "agrees": {True: "yes", False: "no", None: "-"}[d["agrees"]], "top_au": f"AU{d['top_au']}"}
            for d in res.details
            if d["filter"] in set(res.shown)
        ],
        "Per shown filter: share of energy in its top-AU box vs the mean over AU boxes "
        f"(all {len(res.details)} filters in summary.json).",
    )
    s.image(
        figures.agreement_plot(
            res.rate,
            res.shuffled_rates,
            np.array(res.top_fraction),
            np.array(res.shuffled_fraction),
            res.filters,
            out / f"agreement_{dataset}.png",
        ),
        "Left: agreement rate with the true labels (red line) against the rates of the label shuffles. "
        "Right: energy share in the top-AU box per filter, true vs shuffled labels (mean).",
    )
    summary.update(_agreement_summary(res, a))
    return s


def _agreement_text(res: agree_mod.Agreement, a) -> str:
    """The rates against the shuffled baseline, the rule, and what the KL smoothing does."""
    which = "all conv3 filters" if a.agreement_filters == "all" else "the shown filters"
    p_value = res.p_value if res.p_value is None else round(res.p_value, 3)
    return (
        f"**Agreement rate: {pct(res.rate, 0)}** of {res.counted} filters ({which}); **with shuffled AU labels: "
        f"{pct(res.shuffled, 0)}** (mean over {len(res.shuffled_rates)} permutations, "
        f"highest {pct(max(res.shuffled_rates, default=None), 0)}; permutation p = {p_value}). "
        f"Over the {len(res.shown)} shown filters: {pct(res.rate_shown, 0)} vs {pct(res.shuffled_shown, 0)} shuffled.\n\n"
        "Rule: a filter agrees when the share of its guided-backprop energy (squared maps summed over its top "
        f"{a.top_n} images) inside the planted box of its top-KL AU exceeds the mean share over the boxes of all "
        "candidate AUs, i.e. the KL-chosen AU points at the filter's region better than an AU drawn at random. "
        "Baseline: the AU label sets shuffled across training images, KL and top AU recomputed with the same "
        "smoothing, rule applied to the same filters and energy maps. The share favours large boxes (the "
        "jaw/mouth AUs cover up to a fifth of the crop), which is why only the comparison with the baseline is "
        "meaningful.\n\n"
        f"KL smoothing: {a.kl_eps:g} pseudo-counts per bin on average, spread "
        + (
            "like the filter's histogram over all training images (a prior centred on 'no association'), so AUs "
            "with few positive images do not win the ranking by sampling noise."
            if a.kl_prior == "pooled"
            else "evenly over the bins (the spec's 'small epsilon'); note that with few positive images this favours "
            "rare AUs, with true and shuffled labels alike."
        )
    )


def _agreement_summary(res: agree_mod.Agreement, a) -> dict[str, Any]:
    """The agreement entries of the data set's summary.json."""
    return dict(
        agreement=res.rate,
        agreement_shuffled=res.shuffled,
        agreement_shown=res.rate_shown,
        agreement_shuffled_shown=res.shuffled_shown,
        agreement_counted=res.counted,
        agreement_p_value=res.p_value,
        agreement_rule=res.rule,
        agreement_smoothing={"kl_eps": a.kl_eps, "kl_prior": a.kl_prior, "kl_bins": a.kl_bins},
        agreement_filters=res.details,
    )
