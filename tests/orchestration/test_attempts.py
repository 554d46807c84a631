"""The history of a job's attempts: the job's own lines (``history.jsonl``) merged with what the
coordinator knows; and a real local run's history in ``status --json`` and ``results()``."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from typer.testing import CliRunner

import fercluster
from fercluster.cli.main import _register, app
from fercluster.orchestration.backend import JobInfo
from fercluster.orchestration.store import read_history
from fercluster.orchestration.store.entries import JobEntry
from fercluster.orchestration.store.known import Known
from fercluster.orchestration.watch.attempts import job_attempts
from fercluster.train.attempts import END, RESUMED, START, HistoryLine, append, signal_ending

_register()
runner = CliRunner()


def lines(run_dir: Path, *events: HistoryLine) -> None:
    for event in events:
        append(run_dir, event)


def test_the_reader_merges_an_attempts_lines_and_skips_a_cut_one(tmp_path: Path) -> None:
    lines(
        tmp_path,
        HistoryLine(START, "a", 10.0, slurm_id="5_0", node="n1", host="h1", pid=1),
        HistoryLine(RESUMED, "a", 11.0, iteration=0),
        HistoryLine(START, "b", 20.0, slurm_id="5_0", node="n2"),
    )
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"event": "end", "attempt": "b", "ti')  # a writer killed mid-line
    a, b = read_history(tmp_path)
    assert (a.number, a.slurm_id, a.node, a.host, a.start, a.from_iteration, a.ended) == (
        1,
        "5_0",
        "n1",
        "h1",
        10.0,
        0,
        "",
    )
    assert (b.number, b.node, b.start, b.end) == (2, "n2", 20.0, None)
    assert read_history(tmp_path / "none") == ()


def test_a_signal_ends_an_attempt_as_a_time_out_a_requeue_or_a_pre_emption() -> None:
    end = {"SLURM_JOB_END_TIME": "100000"}
    assert signal_ending(signal.SIGUSR2, now=100000 - 120, env=end) == "time-out"  # the warning before the limit
    assert signal_ending(signal.SIGUSR2, now=50000, env=end) == "requeue"  # long before it
    assert signal_ending(signal.SIGUSR2, now=50000, env={}) == "requeue"  # SLURM before 23.02: no end time
    assert signal_ending(signal.SIGTERM, now=100000, env=end) == "pre-emption"


def test_what_the_job_did_not_write_is_filled_in_from_the_coordinator_and_slurm(tmp_path: Path) -> None:
    """Killed without an end and started again under its id: a node failure (inferred); a submission
    that never started: an attempt ended as SLURM said; the last one: as the job's state says."""
    lines(
        tmp_path,
        HistoryLine(START, "a", 10.0, slurm_id="1000_0", node="n1"),
        HistoryLine(RESUMED, "a", 11.0, iteration=0),
        HistoryLine(START, "b", 20.0, slurm_id="1000_0", node="n2"),
        HistoryLine(RESUMED, "b", 21.0, iteration=20),
        HistoryLine(END, "b", 30.0, iteration=25, ended="requeue", detail="SIGUSR2"),
        HistoryLine(START, "c", 40.0, slurm_id="1002_0", node="n1"),
        HistoryLine(RESUMED, "c", 41.0, iteration=20),
    )
    known = Known(tmp_path / "known.json")
    known.remember({"1001_0": JobInfo("FAILED", failure="out of memory (OOM): raise slurm.mem_gb")})
    entry = JobEntry(slurm_ids=("1000_0", "1001_0", "1002_0"), submissions=3, retries=2)
    got = job_attempts(read_history(tmp_path), entry, known, "TIMEOUT", "time limit reached", iteration=33)
    assert [(a.number, a.slurm_id, a.ended, a.ended_by, a.from_iteration, a.iteration) for a in got] == [
        (1, "1000_0", "node failure", "inferred", 0, 20),  # reached at least what the next resumed from
        (2, "1000_0", "requeue", "job", 20, 25),
        (3, "1001_0", "failed", "slurm", None, None),  # submitted, never started the job
        (4, "1002_0", "time-out", "slurm", 20, 33),
    ]
    running = job_attempts(read_history(tmp_path), entry, known, "RUNNING", iteration=30)
    assert (running[-1].ended, running[-1].iteration) == ("", 30)
    done = job_attempts(read_history(tmp_path), entry, known, "COMPLETED", iteration=40)
    assert (done[-1].ended, done[-1].ended_by) == ("completed", "inferred")  # its job.json exists, its end was cut
    node = job_attempts(read_history(tmp_path), entry, None, "FAILED", "node failure; lost")
    assert node[-1].ended == "node failure" and node[2].ended == ""  # without known.json: SLURM's word unknown


def test_a_real_local_run_records_its_attempts_for_status_and_results(workdir: Path, monkeypatch) -> None:
    """A tiny job trained here twice: SIGUSR2 at iteration 13 (it checkpoints and stops), then run
    again to the end. Its two attempts are in ``status --json`` and ``results().attempts``."""
    from fercluster.orchestration.local.run import run_local
    from fercluster.orchestration.submit import jobs as jobs_mod
    from fercluster.train.job import run_job

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = workdir / "one.yaml"
    path.write_text(json.dumps(ONE_JOB))
    cfg = fercluster.load_config(path)
    signalled = []

    def usr2_at_13(spec, reporter=None, progress=None):
        def step(it: int, total: int) -> None:
            progress(it, total)
            if it == 13 and not signalled:
                signalled.append(it)
                os.kill(os.getpid(), signal.SIGUSR2)

        return run_job(spec, reporter=reporter, progress=step)

    first = run_local(cfg, None, runner=usr2_at_13, aggregate=False)
    assert first["failed"] == 1 and signalled == [13]
    t0 = time.time()
    second = run_local(cfg, None, runner=jobs_mod.local_runner(), aggregate=False)
    assert second["ran"] == 1 and second["failed"] == 0

    out = runner.invoke(app, ["status", str(path), "--json"])
    assert out.exit_code == 0, out.output
    (job,) = json.loads(out.output)["jobs"]
    assert job["state"] == "COMPLETED" and job["stalled"] is False
    got = [(a["number"], a["from_iteration"], a["iteration"], a["ended"], a["ended_by"]) for a in job["attempts"]]
    assert got == [(1, 0, 13, "requeue", "job"), (2, 13, 20, "completed", "job")]
    assert job["attempts"][0]["detail"] == "SIGUSR2" and job["attempts"][1]["start"] >= t0 - 1
    assert all(a["slurm_id"] == "" and a["node"] for a in job["attempts"])

    frame = fercluster.results(cfg).attempts
    assert frame["attempt"].tolist() == [1, 2] and frame["ended"].tolist() == ["requeue", "completed"]
    assert frame["iteration"].tolist() == [13, 20] and (frame["job_id"] == job["job_id"]).all()
    assert str(frame["iteration"].dtype) == "Int64" and str(frame["start"].dtype) == "float64"
    folder = fercluster.results(cfg.results_dir).attempts  # a results folder alone: the job's own lines
    assert folder["ended"].tolist() == ["requeue", "completed"]


ONE_JOB = {
    "name": "one",
    "datasets": {
        "ckplus": {
            "kind": "ckplus",
            "root": "raw-ck",
            "classes": 8,
            "crop": "landmarks",
            "synthetic": {"subjects": 20, "seed": 0, "sequences_per_subject": 2},
        },
    },  # fmt: skip
    "grid": [{"dataset": "ckplus", "folds": [0], "variants": ["none"]}],
    "train": {
        "iterations": 20,
        "eval_every": 10,
        "checkpoint_every": 10,
        "batch_size": 16,
        "width": 0.125,
        "image_size": 32,
        "k": 0.7,
        "device": "cpu",
    },  # fmt: skip
    "slurm": {"gpus_per_node": 0},
}
