"""One state vocabulary: every state that status, results, tune and the report produce is one of
``store.vocabulary.STATES``, and README's table lists exactly those."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from orch_helpers import SWEEP_KW, finish, make_config

import fercluster
from fercluster.analysis.tune_section import per_trial
from fercluster.config import parse_config
from fercluster.orchestration.coordinator import run_sweep
from fercluster.orchestration.fake import FakeBackend
from fercluster.orchestration.slurm.parse import _SLURM_TO_STATE, map_state
from fercluster.orchestration.status import snapshot
from fercluster.orchestration.store import vocabulary
from fercluster.orchestration.store.vocabulary import STATES, from_progress, from_ray, from_search
from fercluster.orchestration.tune.state import status_path, tune_status

REPO = Path(__file__).resolve().parents[2]


def status_states(cfg) -> set[str]:
    """A sweep of 8 jobs in every state status can show: SLURM's, complete, broken, local."""
    backend = FakeBackend()
    result = run_sweep(cfg, backend, **SWEEP_KW)
    ids = sorted(sid for sub in backend.submitted for sid in sub.ids if "_" in sid)
    for sid, word in zip(ids, ["RUNNING", "PENDING", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED"], strict=False):
        backend.states[sid] = word
    finish(result.specs[-1])
    Path(result.specs[-2].run_dir).mkdir(parents=True)
    Path(result.specs[-2].run_dir, "job.json").write_text("{broken")
    snap = snapshot(cfg, backend).to_dict()
    return {j["state"] for j in snap["jobs"]} | set(snap["counts"]) | {(snap["aggregate"] or {}).get("state", "")}


def results_states(cfg) -> set[str]:
    specs = run_sweep(cfg, FakeBackend(), dry_run=True, **SWEEP_KW).specs
    finish(specs[0])  # complete, its Parquet files missing: UNREADABLE
    for spec, state in zip(specs[1:4], ["running", "failed", "completed"], strict=True):
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        Path(spec.run_dir, "progress.json").write_text(json.dumps({"state": state, "iteration": 5}))
    return set(fercluster.results(cfg).jobs["state"])


def tune_states(tmp_path: Path) -> set[str]:
    cfg = parse_config({
        "name": "tv", "paths": {"jobs": str(tmp_path / "jobs"), "results": str(tmp_path / "results")},
        "datasets": {"ckplus": {"kind": "ckplus", "root": str(tmp_path / "raw")}},
        "tune": {"datasets": ["ckplus"], "space": {"k": {"type": "uniform", "low": 0.2, "high": 1.2}}},
    }, source="test")  # fmt: skip
    out = {tune_status(cfg)["state"]}  # never started
    ray = [("PENDING", False), ("RUNNING", False), ("PAUSED", False), ("TERMINATED", True), ("TERMINATED", False),
           ("ERROR", False)]  # fmt: skip
    trials = [{"trial_id": f"t{i}", "state": s, "stopped_by_asha": x} for i, (s, x) in enumerate(ray)]
    path = status_path(cfg, "ckplus")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"trials": trials}))
    status = tune_status(cfg)
    out |= set(status["by_state"]) | {t["state"] for t in status["trials"]}
    for word in ("running", "submitted", "completed", "interrupted", "failed", None):
        out.add(from_search(word))
    return out


def report_states() -> set[str]:
    rows = pd.DataFrame([
        {"dataset": "ckplus", "trial_id": t, "iteration": 10, "k": 0.5, "val_acc": 0.5, "test_acc": 0.5,
         "stopped_by_asha": x, "state": s}
        for t, s, x in [("a", "TERMINATED", True), ("b", "TERMINATED", False), ("c", "ERROR", False)]
    ])  # fmt: skip
    return set(per_trial(rows)["state"])


def test_every_state_produced_is_in_the_vocabulary(tmp_path: Path) -> None:

    cfg = make_config(tmp_path, grid=[{"dataset": "ckplus", "folds": [0, 1], "variants": ["none", "D", "A", "AD"]}])
    produced = {
        "status": status_states(cfg),
        "results": results_states(make_config(tmp_path / "r")),
        "tune": tune_states(tmp_path),
        "report": report_states(),
        "slurm": {map_state(word) for word in _SLURM_TO_STATE} | {map_state("BOGUS")},
        "progress": {from_progress(s) for s in ("running", "completed", "failed", None)},
        "ray": {from_ray(s) for s in ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR", "STOPPED")},
    }
    for source, states in produced.items():
        assert states - {""} <= set(STATES), (source, states - set(STATES))
    seen = set().union(*produced.values())
    assert {"NOT_SUBMITTED", "UNREADABLE", "STOPPED", "FAILED", "INTERRUPTED", "COMPLETED"} <= seen
    assert "NOT_STARTED" not in seen and "ERROR" not in seen and "TERMINATED" not in seen


def test_one_name_per_meaning_and_the_readme_lists_them() -> None:
    assert len(set(STATES)) == len(STATES) and set(vocabulary.STYLE) == set(STATES)
    assert {s for group in vocabulary.GROUPS.values() for s in group} == set(STATES)
    readme = (REPO / "README.md").read_text()
    table = re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.M)
    assert sorted(table) == sorted(STATES)
