"""A sweep config expanded into its jobs: pure and ordered.

Order: grid entries as written; inside an entry, fold x variant x seed (fold slowest). A job that
two entries both name appears once, where it first appears. Job ids hash what changes a job's
result (``fercluster.train.spec.identity``): SLURM resources and paths never change them; the
data counts by its content (``fercluster.data.fingerprint``), not by where it lies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from fercluster.config import SweepConfig, Train
from fercluster.data import fingerprint
from fercluster.errors import ConfigError
from fercluster.train import spec as spec_mod
from fercluster.train.spec import JobSpec

if TYPE_CHECKING:
    from fercluster.orchestration.store.state import SweepState


def expand(cfg: SweepConfig) -> list[JobSpec]:
    """Every job of the sweep's grid, in a stable order, without duplicates."""
    specs: list[JobSpec] = []
    seen: set[str] = set()
    cells: dict[str, _Cells] = {}
    data_ids = fingerprint.data_ids(cfg, [entry.dataset for entry in cfg.grid])  # each raw tree listed once
    for entry in cfg.grid:
        name = entry.dataset
        if name not in cells:
            cells[name] = _Cells(cfg, name, resolved_train(cfg, name), data_ids[name])
        folds = range(cfg.datasets[name].folds) if entry.folds == "all" else entry.folds
        for fold in folds:
            for variant in entry.variants:
                for seed in entry.seeds:
                    spec = cells[name].spec(int(fold), variant, int(seed))
                    if spec.job_id not in seen:
                        seen.add(spec.job_id)
                        specs.append(spec)
    return specs


_FOLD, _SEED, _VARIANT = -987654321, -987654322, "@@variant@@"  # stand-ins, found in the identity's JSON


class _Cells:
    """The specs of one data set's grid cells, fast: ``spec_mod.make_spec`` settles what they
    share once (data fingerprint, training settings, their JSON), and a cell's id hashes the same
    bytes as ``spec_mod.make_job_id`` (``test_plan`` checks both give equal specs). A 10,000-job
    plan is part of every ``status`` and ``results`` call: this makes it a tenth of a second."""

    def __init__(self, cfg: SweepConfig, dataset: str, train: Train, data_id: str) -> None:
        self.base = spec_mod.make_spec(cfg, dataset, 0, "none", 0, train=train, data_id=data_id)
        ident = {**spec_mod.identity(self.base), "fold": _FOLD, "seed": _SEED, "variant": _VARIANT}
        text = json.dumps(ident, sort_keys=True)
        cuts = sorted((text.index(json.dumps(v)), json.dumps(v)) for v in (_FOLD, _SEED, _VARIANT))
        self.parts, start = [], 0
        for at, stand_in in cuts:
            self.parts.append(text[start:at])
            start = at + len(stand_in)
        self.parts.append(text[start:])
        self.order = [{json.dumps(_FOLD): 0, json.dumps(_SEED): 1, json.dumps(_VARIANT): 2}[c] for _, c in cuts]
        self.runs = str(cfg.results_dir / "runs")
        self.fields = dict(self.base.__dict__)

    def spec(self, fold: int, variant: str, seed: int) -> JobSpec:
        values = (str(fold), str(seed), json.dumps(variant))
        p, o = self.parts, self.order
        blob = p[0] + values[o[0]] + p[1] + values[o[1]] + p[2] + values[o[2]] + p[3]
        job_id = hashlib.sha1(blob.encode()).hexdigest()[:10]
        # dataclasses.replace, without its per-call introspection: a third of the plan's time
        spec = object.__new__(JobSpec)
        spec.__dict__.update(
            self.fields, fold=fold, variant=variant, seed=seed, job_id=job_id, run_dir=f"{self.runs}/{job_id}"
        )
        return spec


def make_spec(cfg: SweepConfig, dataset: str, fold: int, variant: str, seed: int) -> JobSpec:
    """The ``JobSpec`` of one job of ``cfg`` (whether or not its grid names it), ``from_tune`` resolved."""
    return spec_mod.make_spec(cfg, dataset, fold, variant, seed, train=resolved_train(cfg, dataset))


def renamed_jobs(specs: Sequence[JobSpec], state: SweepState) -> list[tuple[str, str]]:
    """``(old id, new id)`` of each planned job that the state does not have, while it has a job no
    longer planned at the same place (data set, fold, variant, seed): the same job under an older
    id, e.g. from before job ids fingerprinted the data by content. Pure: reads nothing."""
    planned = {s.job_id for s in specs}
    old: dict[tuple[Any, ...], str] = {}
    for job_id in state.jobs:
        place = None if job_id in planned else _place(state, job_id)
        if place is not None:
            old.setdefault(place, job_id)
    return [
        (old[place], s.job_id)
        for s in specs
        if s.job_id not in state.jobs and (place := (s.dataset, s.fold, s.variant, s.seed)) in old
    ]


def _place(state: SweepState, job_id: str) -> tuple[Any, ...] | None:
    """A recorded job's (dataset, fold, variant, seed); None if the state does not say (the only
    place ``renamed_jobs`` reads the state's records)."""
    rec = state.jobs[job_id]
    place = (rec.dataset, rec.fold, rec.variant, rec.seed)
    return None if None in place else place


def resolved_train(cfg: SweepConfig, dataset: str) -> Train:
    """The data set's training settings, with ``k: from_tune <sweep>`` replaced by a number."""
    train = cfg.train_for(dataset)
    if isinstance(train.k, str) and train.k.startswith("from_tune "):
        train = train.model_copy(update={"k": tuned_k(cfg, train.k.split(" ", 1)[1])})
    return train


def tuned_k(cfg: SweepConfig, tune_sweep: str) -> float:
    """k from ``results/<tune_sweep>/tune/best.json`` (written by the Ray Tune search)."""
    path = Path(cfg.paths.results) / tune_sweep / "tune" / "best.json"
    try:
        best = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"train.k: 'from_tune {tune_sweep}' but {path} does not exist; "
            f"run the search first (fercluster sweep <config with name: {tune_sweep} and a tune: section>) "
            "or set k to a number or 'random'"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"train.k: {path} is not valid JSON ({exc}); rerun the search") from None
    k = best.get("k") if isinstance(best, dict) else None
    if k is None:
        k = (best.get("config") or {}).get("k") if isinstance(best, dict) else None
    if not isinstance(k, (int, float)) or not 0 < k <= 10:
        raise ConfigError(f"train.k: {path} holds k={k!r}; expected a number in (0, 10] under key 'k'")
    return float(k)
