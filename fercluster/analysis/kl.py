"""FAU rankings (the paper's Figure 5 and Table 4): KL divergence between the max-activation
histograms of each conv3 filter over training images with and without each action unit.

For filter i and AU j: Q_ij = histogram of F_i(x) over images with AU j, R_ij = the same over
images without it, both on the filter's shared equal-width bins (over all training images),
smoothed with pseudo-counts before normalising; D_KL(Q_ij || R_ij). Everything is vectorised:
one matrix product gives the positive counts of every (filter, bin, AU).

Smoothing (open in the paper; ``analysis.kl_eps`` and ``analysis.kl_prior``): ``eps`` pseudo-counts
per bin on average (``eps * bins`` in all) are added to the positive and to the negative counts.
``prior="uniform"`` spreads them evenly (``eps`` in every bin: the spec's literal "add a small epsilon
to every bin"); ``prior="pooled"`` spreads them like the filter's histogram over all training images,
i.e. a Dirichlet prior centred on "the AU makes no difference". Why it matters: AUs with few
positive images (CK+ codes a sequence's AUs on its three near-identical peak frames, so 12 positives
can be 4 faces) give spiky Q histograms; with a vanishing eps every occupied bin where R is thin adds
a large term, so the plug-in KL grows as the positive count shrinks, whatever the filter does, and the
rarest AU wins the ranking for noise filters. Uniform pseudo-counts do not cure it (they pull a small
Q towards flat, far from a skewed R); pooled ones pull it towards R, so a small sample with no
association scores near 0 while a large sample keeps its evidence.

Two readings (``Reading``): ``LITERAL`` (uniform, eps 1e-6: the paper's words) and ``POOLED``
(pooled, the config's default eps). The report ranks AUs under the configured reading and under the
other one (``other_reading``) side by side, so a reader sees where the smoothing decides the AU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fercluster.config import Analysis

# FACS names of the action units (Ekman & Friesen); the ones CK+ codes.
FACS_NAMES = {
    1: "Inner brow raiser",
    2: "Outer brow raiser",
    4: "Brow lowerer",
    5: "Upper lid raiser",
    6: "Cheek raiser",
    7: "Lid tightener",
    9: "Nose wrinkler",
    10: "Upper lip raiser",
    11: "Nasolabial deepener",
    12: "Lip corner puller",
    13: "Cheek puffer",
    14: "Dimpler",
    15: "Lip corner depressor",
    16: "Lower lip depressor",
    17: "Chin raiser",
    18: "Lip puckerer",
    20: "Lip stretcher",
    21: "Neck tightener",
    22: "Lip funneler",
    23: "Lip tightener",
    24: "Lip pressor",
    25: "Lips part",
    26: "Jaw drop",
    27: "Mouth stretch",
    28: "Lip suck",
    29: "Jaw thrust",
    30: "Jaw sideways",
    31: "Jaw clencher",
    34: "Cheek puff",
    38: "Nostril dilator",
    39: "Nostril compressor",
    43: "Eyes closed",
    45: "Blink",
    54: "Head down",
    61: "Eyes turn left",
    62: "Eyes turn right",
    63: "Eyes up",
    64: "Eyes down",
}

# The paper's Table 4: the top AU of CK+ filters 1-10 (their filter numbering, not ours).
PAPER_TABLE4 = [25, 12, 9, 5, 17, 12, 24, 27, 12, 1]


def facs_name(au: int, au_regions: dict | None = None) -> str:
    """The FACS name of ``au`` (the synthetic set's own name when it has one)."""
    if au_regions and str(au) in au_regions and au_regions[str(au)].get("name"):
        return str(au_regions[str(au)]["name"])
    return FACS_NAMES.get(int(au), f"AU{au}")


def au_matrix(aus: Sequence[Sequence[int]], min_positive: int) -> tuple[np.ndarray, list[int]]:
    """Indicator matrix (N images, J AUs) of the AUs with at least ``min_positive`` positives.

    ``aus`` holds one list of AU numbers per image (empty for neutral frames); ``min_positive``:
    ``analysis.min_positive``. Returns the boolean matrix and the AU numbers of its columns, ascending.
    """
    counts: dict[int, int] = {}
    for row in aus:
        for au in set(int(a) for a in row):
            counts[au] = counts.get(au, 0) + 1
    kept = sorted(au for au, c in counts.items() if c >= min_positive)
    column = {au: j for j, au in enumerate(kept)}
    matrix = np.zeros((len(aus), len(kept)), dtype=bool)
    for i, row in enumerate(aus):
        for au in row:
            j = column.get(int(au))
            if j is not None:
                matrix[i, j] = True
    return matrix, kept


def bin_indices(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index (N, F) of each value on its filter's equal-width bins spanning min..max.

    The maximum falls in the last bin; a constant filter puts everything in bin 0.
    """
    lo = values.min(axis=0, keepdims=True)
    width = values.max(axis=0, keepdims=True) - lo
    scaled = np.divide(values - lo, width, out=np.zeros_like(values, dtype=np.float64), where=width > 0)
    return np.clip((scaled * bins).astype(np.int64), 0, bins - 1)


PRIORS = ("uniform", "pooled")


@dataclass(frozen=True)
class Reading:
    """One way to smooth the histograms: ``prior`` and ``eps`` as in ``kl_matrix``."""

    prior: str
    eps: float

    @property
    def label(self) -> str:
        return f"{self.prior}, eps {self.eps:g}"


LITERAL = Reading("uniform", 1e-6)  # the paper's "add a small epsilon to every bin", taken literally
POOLED = Reading("pooled", Analysis().kl_eps)  # the config's default pseudo-counts, spread like the pooled histogram


def other_reading(configured: Reading) -> Reading:
    """The reading shown beside the configured one: the pooled default beside any uniform reading,
    the literal one beside any pooled reading."""
    return POOLED if configured.prior == "uniform" else LITERAL


def kl_matrix(values: np.ndarray, au: np.ndarray, bins: int, eps: float, prior: str) -> np.ndarray:
    """D_KL(Q || R) for every filter and AU: an (F, J) array.

    ``values``: (N, F) max activation of each filter on each training image; ``au``: (N, J)
    boolean indicators. Images without AU j form R_ij, images with it Q_ij. ``eps``: pseudo-counts
    per bin on average, spread evenly (``prior="uniform"``) or like the filter's pooled histogram
    (``prior="pooled"``); see the module docstring. ``bins``, ``eps`` and ``prior`` are the config's
    ``analysis.kl_bins``, ``kl_eps`` and ``kl_prior`` (``fercluster.config.Analysis``), where their
    defaults live.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior: got {prior!r}; valid: {list(PRIORS)}")
    values = np.asarray(values, dtype=np.float64)
    n, f = values.shape
    au = np.asarray(au, dtype=np.float32)
    if au.shape[0] != n:
        raise ValueError(f"values has {n} images but the AU matrix has {au.shape[0]}")
    idx = bin_indices(values, bins)  # (N, F)
    onehot = np.zeros((n, f * bins), dtype=np.float32)  # (N, F*bins): image n falls in bin b of filter f
    onehot[np.arange(n)[:, None], np.arange(f)[None, :] * bins + idx] = 1.0
    pos = (onehot.T @ au).reshape(f, bins, -1)  # (F, bins, J) counts of images with the AU
    total = onehot.sum(axis=0).reshape(f, bins, 1)  # (F, bins, 1) counts of all images
    neg = total - pos
    if prior == "uniform":
        pseudo = np.full((f, bins, 1), float(eps))
    else:  # eps * bins pseudo-counts in all, shaped like the pooled histogram
        pseudo = eps * bins * total.astype(np.float64) / max(n, 1)
    q = pos.astype(np.float64) + pseudo
    r = neg.astype(np.float64) + pseudo
    q /= q.sum(axis=1, keepdims=True)
    r /= r.sum(axis=1, keepdims=True)
    # pooled prior: bins no image falls in stay empty in both (0 log 0 = 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q / r), 0.0)
    return terms.sum(axis=1)  # (F, J)


def ranking(kl: np.ndarray, aus: Sequence[int], filters: Sequence[int] | None = None) -> pd.DataFrame:
    """Long table (filter, au, kl, rank): rank 1 is the filter's AU (largest KL)."""
    f, j = kl.shape
    filters = np.arange(f) if filters is None else np.asarray(filters)
    order = np.argsort(-kl, axis=1, kind="stable")
    ranks = np.empty_like(order)
    ranks[np.arange(f)[:, None], order] = np.arange(1, j + 1)[None, :]
    return pd.DataFrame(
        {
            "filter": np.repeat(filters, j).astype(np.int64),
            "au": np.tile(np.asarray(aus, dtype=np.int64), f),
            "kl": kl.reshape(-1),
            "rank": ranks.reshape(-1).astype(np.int64),
        }
    )


def top_aus(kl: np.ndarray, aus: Sequence[int], au_regions: dict | None = None) -> pd.DataFrame:
    """One row per filter: its top AU, the FACS name, the KL value and the runner-up AU."""
    order = np.argsort(-kl, axis=1, kind="stable")
    aus = np.asarray(aus)
    second = order[:, 1] if kl.shape[1] > 1 else order[:, 0]
    return pd.DataFrame(
        {
            "filter": np.arange(kl.shape[0]),
            "au": aus[order[:, 0]],
            "name": [facs_name(a, au_regions) for a in aus[order[:, 0]]],
            "kl": kl[np.arange(kl.shape[0]), order[:, 0]],
            "second_au": aus[second],
            "second_kl": kl[np.arange(kl.shape[0]), second],
        }
    )


def paper_comparison(top: pd.DataFrame, shown: Sequence[int]) -> pd.DataFrame:
    """Our shown filters' top AUs beside the paper's Table 4 (position by position).

    The paper numbers its filters 1-10 in the order it shows them; filter identities are not
    comparable across trainings, so the useful comparison is the set of AUs found.
    """
    rows = []
    for pos, filt in enumerate(shown):
        row = top[top["filter"] == filt].iloc[0]
        paper = PAPER_TABLE4[pos] if pos < len(PAPER_TABLE4) else None
        rows.append(
            {
                "position": pos + 1,
                "filter": int(filt),
                "au": f"AU{int(row['au'])}",
                "name": row["name"],
                "kl": float(row["kl"]),
                "paper_au": f"AU{paper}" if paper is not None else "",
                "paper_name": FACS_NAMES.get(paper, "") if paper is not None else "",
            }
        )
    return pd.DataFrame(rows)


def with_other_reading(
    top: pd.DataFrame, other: pd.DataFrame, configured: Reading, alternative: Reading
) -> pd.DataFrame:
    """``top_aus`` of the configured reading with the other reading's top AU beside it (one row per filter).

    Columns: those of ``top_aus``, ``reading``, then ``other_reading``, ``other_au``, ``other_name``,
    ``other_kl`` and ``readings_differ`` (the two top AUs are not the same).
    """
    out = top.copy()
    out["reading"] = configured.label
    out["other_reading"] = alternative.label
    out["other_au"] = other["au"].to_numpy()
    out["other_name"] = other["name"].to_numpy()
    out["other_kl"] = other["kl"].to_numpy()
    out["readings_differ"] = out["au"].to_numpy() != out["other_au"].to_numpy()
    return out


def table4_overlap(top_au: Sequence[int], candidate_aus: Sequence[int]) -> dict:
    """How the shown filters' top AUs (``top_au``, one per filter) meet the AUs of the paper's Table 4.

    ``filters_with_table4_au``: shown filters whose top AU is one of Table 4's; ``aus_in_common``: the
    distinct AUs found in both; ``candidate_aus_in_table4``: how many of the AUs that could be found
    (enough positives) are Table 4's at all, the share a filter would hit by chance.
    """
    table4 = set(PAPER_TABLE4)
    found = [int(a) for a in top_au]
    return {
        "shown": len(found),
        "filters_with_table4_au": sum(a in table4 for a in found),
        "aus_in_common": sorted(set(found) & table4),
        "table4_aus": sorted(table4),
        "candidate_aus": len(candidate_aus),
        "candidate_aus_in_table4": sum(int(a) in table4 for a in candidate_aus),
    }


def overlap_sentence(overlap: dict, reading: str) -> str:
    """One sentence of the report: the overlap under ``reading`` (its label)."""
    common = ", ".join(f"AU{a}" for a in overlap["aus_in_common"]) or "none"
    return (
        f"{reading}: {overlap['filters_with_table4_au']} of our {overlap['shown']} shown filters have a top "
        f"AU among Table 4's AUs {{{', '.join(str(a) for a in overlap['table4_aus'])}}}; the distinct AUs in "
        f"common: {common} ({overlap['candidate_aus_in_table4']} of the {overlap['candidate_aus']} candidate AUs "
        "are Table 4's)."
    )
