"""The Ray Tune search over k: a tiny search on synthetic CK+ with a local Ray, interrupted and
restored (marker ``slow``); the same search on the SLURM test cluster (markers ``slurm``, ``slow``);
and the pure parts, the CLI's answer to an interrupted search and the sbatch template's module.

The tiny search: 4 trials run one at a time, 40 iterations, evaluated every 10, ASHA rungs at 10,
20 and 40 (grace 10, factor 2). k is sampled (uniform), the learning rate is a grid of 0.01 and
1e-9: a trial with lr 1e-9 cannot move from its initial predictions, so at the first rung it is
behind a trial that learns, and whichever order they run in, ASHA must stop one of the two
lr = 1e-9 trials (the second is below the median of the first two). (k alone would not do: the
network is zero-bias and ReLU, so scaling every weight by k leaves its predictions unchanged, and
on this tiny set the trials' accuracies tie.) The test of ASHA checks its decisions against a
replay of the trials' recorded evaluations; test_asha.py feeds ASHA results by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fercluster.config import load_config, parse_config
from fercluster.errors import ConfigError

ITERATIONS = 40
TRIALS = 4
LR_GRID = [0.01, 1e-9]


def tiny_config(root: Path, name: str = "ktune-test", **tune: object) -> dict:
    return {
        "name": name,
        "paths": {"jobs": str(root / "jobs"), "results": str(root / "results"), "data": str(root / "data")},
        "datasets": {
            "ckplus": {
                "kind": "ckplus", "root": str(root / "data" / "raw" / "ckplus"), "classes": 8,
                "crop": "landmarks", "synthetic": {"subjects": 20, "seed": 0, "sequences_per_subject": 2},
            }
        },
        "train": {"iterations": ITERATIONS, "eval_every": 10, "checkpoint_every": 10, "batch_size": 16,
                  "width": 0.125, "image_size": 32},
        "tune": {
            "datasets": ["ckplus"], "folds": [0], "variant": "none",
            "space": {"k": {"type": "uniform", "low": 0.2, "high": 1.2}, "lr": {"type": "grid", "values": LR_GRID}},
            "search": "random", "num_samples": 2, "grace_period": 10, "reduction_factor": 2,
            "gpus_per_trial": 0.25, "cpus_per_trial": 1, "max_concurrent": 1, "seed": 0, **tune,
        },
        "slurm": {"time_min": 15, "gpus_per_node": 0, "cpus_per_task": 2, "mem_gb": 4},
    }  # fmt: skip


def write_config(root: Path, data: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_status(root: Path, name: str) -> dict:
    try:
        return json.loads((root / "jobs" / name / "tune" / "status" / "ckplus.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def mid_search(status: dict) -> bool:
    """At least one trial over and another one running past its first checkpoint."""
    trials = status.get("trials", [])
    over = any(t["state"] in ("COMPLETED", "STOPPED") for t in trials)
    running = any(t["state"] == "RUNNING" and 10 <= t["iteration"] < ITERATIONS for t in trials)
    return over and running


INTERRUPT_TRIES = 3  # see `search`


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """Start the search with the CLI (`fercluster sweep CONFIG --local`) in a subprocess, Ctrl-C it
    mid-search, then restore it here.

    The Ctrl-C must land while a trial is between its checkpoints; Ray stops the trial a moment
    after the signal, and ASHA may end that very trial at the rung it reaches meanwhile. When that
    race leaves no trial interrupted mid-run (the tests' precondition), the interruption is done
    again in a fresh folder, up to INTERRUPT_TRIES times; the tests' assertions stay as they are.
    """
    from fercluster.data import ensure_prepared
    from fercluster.orchestration.tune.search import run_tune_local

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    for _ in range(INTERRUPT_TRIES):
        root = tmp_path_factory.mktemp("ktune")
        path = write_config(root, tiny_config(root))
        cfg = load_config(path)
        ensure_prepared(cfg, "ckplus")
        interrupted = _interrupt(root, path, cfg)
        if _interrupted_mid_trial(root, cfg, interrupted["at_interrupt"], interrupted["interrupted_at"]):
            break
    summary = run_tune_local(cfg)
    return {"root": root, "cfg": cfg, "summary": summary, **interrupted}


def _interrupt(root: Path, path: Path, cfg) -> dict:
    env = {**os.environ, "XDG_STATE_HOME": str(root / "state")}  # where `sweep` records the last config
    driver = subprocess.Popen([sys.executable, "-m", "fercluster.cli.main", "sweep", str(path), "--local"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        while not mid_search(read_status(root, cfg.name)) and driver.poll() is None:
            assert time.monotonic() < deadline, "the search never reached the middle of a trial"
            time.sleep(0.3)
        assert driver.poll() is None, f"search ended before the interruption:\n{driver.stdout.read()}"
        interrupted_at = time.time()
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
    return {"at_interrupt": read_status(root, cfg.name), "driver_out": out, "driver_rc": driver.returncode,
            "interrupted_at": interrupted_at}  # fmt: skip


def _interrupted_mid_trial(root: Path, cfg, at_interrupt: dict, interrupted_at: float) -> bool:
    """Whether a trial that had started was left unfinished by the interruption."""
    for trial in at_interrupt.get("trials", []):
        path = root / "results" / cfg.name / "tune" / "trials" / trial["trial_id"] / "attempts.jsonl"
        if trial["state"] not in ("COMPLETED", "STOPPED") and path.exists():
            first = json.loads(path.read_text().splitlines()[0])
            if first["time"] < interrupted_at:
                return True
    return False


def trials_frame(search) -> pd.DataFrame:
    return pd.read_parquet(search["root"] / "results" / search["cfg"].name / "tune" / "trials.parquet")


def attempts(search, trial_id: str) -> list[dict]:
    path = search["root"] / "results" / search["cfg"].name / "tune" / "trials" / trial_id / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_interrupted_search_is_left_restorable(search):
    assert search["driver_rc"] != 0, search["driver_out"]
    record = search["at_interrupt"]
    assert record and not record["finished"]
    states = {t["state"] for t in record["trials"]}
    assert states & {"RUNNING", "PENDING", "PAUSED"}, record


@pytest.mark.slow
def test_restored_search_completes_every_trial(search):
    frame = trials_frame(search)
    assert search["summary"]["state"] == "completed"
    per_trial = frame.groupby("trial_id").agg(k=("k", "first"), lr=("lr", "first"), last=("iteration", "max"),
                                              stopped=("stopped_by_asha", "first"))  # fmt: skip
    assert len(per_trial) == TRIALS
    assert sorted(per_trial["lr"]) == sorted(LR_GRID * 2)
    assert per_trial["k"].between(0.2, 1.2).all() and per_trial["k"].nunique() == TRIALS
    for trial_id, row in per_trial.iterrows():
        run_dir = search["root"] / "results" / search["cfg"].name / "tune" / "trials" / trial_id
        if row["stopped"]:
            assert row["last"] < ITERATIONS
        else:
            assert row["last"] == ITERATIONS
            assert json.loads((run_dir / "job.json").read_text())["k"] == pytest.approx(row["k"])


@pytest.mark.slow
def test_asha_stops_a_trial_that_cannot_learn(search, tmp_path):
    """The restored search decided as an uninterrupted one: a fresh ASHA fed every trial's recorded
    evaluations (its metrics.parquet; trials one after the other, in the order they ran) stops the
    same trials and ends with the rungs the search saved. Which trials those are follows from the
    accuracies, not from where the Ctrl-C landed; an lr 1e-9 trial is among them by construction.
    (Which lr 0.01 trial survives rung 20 is left open: with one record there, its cutoff is the
    other lr 0.01 trial's accuracy.)"""
    from asha_helpers import make_asha, replay

    from fercluster.orchestration.tune.state import asha_path

    frame = trials_frame(search).sort_values(["trial_id", "iteration"])
    trials = [
        (trial_id, list(zip(group["iteration"], group["val_acc"], strict=True)))
        for trial_id, group in frame.groupby("trial_id")
    ]
    uninterrupted = make_asha(tmp_path / "asha.json", max_t=ITERATIONS)
    expected = replay(uninterrupted, trials)
    stopped = frame[frame["stopped_by_asha"]].groupby("trial_id")["iteration"].max()
    assert set(stopped.index) == set(expected) and len(expected) >= 1
    assert (stopped < ITERATIONS).all()
    saved = json.loads(asha_path(search["cfg"], "ckplus").read_text())
    assert saved["rungs"] == uninterrupted.rungs()
    assert saved["stopped"] == {trial_id: float(it) for trial_id, it in expected.items()}
    assert 1e-9 in set(frame[frame["stopped_by_asha"]]["lr"])


@pytest.mark.slow
def test_parquet_has_one_row_per_trial_and_evaluation(search):
    frame = trials_frame(search)
    for column in ["trial_id", "k", "iteration", "val_acc", "test_acc", "stopped_by_asha", "dataset", "fold"]:
        assert column in frame.columns
    assert not frame.duplicated(["trial_id", "iteration"]).any()
    for _, group in frame.groupby("trial_id"):
        assert list(group["iteration"]) == list(range(0, int(group["iteration"].max()) + 1, 10))
    assert set(frame["dataset"]) == {"ckplus"} and set(frame["fold"]) == {0}


@pytest.mark.slow
def test_best_k_is_the_best_validation_trial(search):
    frame = trials_frame(search)
    best = json.loads((search["root"] / "results" / search["cfg"].name / "tune" / "best.json").read_text())
    top = frame.loc[frame["val_acc"].idxmax()]
    assert best["val_acc"] == pytest.approx(top["val_acc"])
    assert best["k"] in set(frame[frame["val_acc"] == top["val_acc"]]["k"])
    assert best["per_dataset"]["ckplus"]["k"] == best["k"]
    assert best["config"]["k"] == best["k"] and best["config"]["lr"] in LR_GRID


@pytest.mark.slow
def test_restore_does_not_rerun_finished_trials(search):
    at_interrupt = search["at_interrupt"]["trials"]
    finished = [t["trial_id"] for t in at_interrupt if t["state"] in ("COMPLETED", "STOPPED")]
    assert finished
    for trial_id in finished:
        assert len(attempts(search, trial_id)) == 1, trial_id


@pytest.mark.slow
def test_restore_resumes_the_interrupted_trial_from_its_checkpoint(search):
    unfinished = [t["trial_id"] for t in search["at_interrupt"]["trials"] if t["state"] not in ("COMPLETED", "STOPPED")]
    started = [t for t in unfinished if attempts(search, t)[0]["time"] < search["interrupted_at"]]
    assert started, "no trial was running at the interruption"
    for trial_id in started:
        runs = attempts(search, trial_id)
        # resumed from what Tune had seen of it: Ray's checkpoint, or from the start without one
        assert len(runs) == 2 and runs[1]["has_job_checkpoint"] == (runs[1]["ray_checkpoint_iteration"] is not None), (
            runs
        )
        metrics = pd.read_parquet(
            search["root"] / "results" / search["cfg"].name / "tune" / "trials" / trial_id / "metrics.parquet"
        )
        assert list(metrics["iteration"]) == list(range(0, int(metrics["iteration"].max()) + 1, 10))


@pytest.mark.slow
def test_status_shows_trials_by_state_and_best(search):
    from fercluster.orchestration.tune.state import tune_status

    status = tune_status(search["cfg"])
    assert status["state"] == "COMPLETED"
    assert sum(status["by_state"].values()) == TRIALS
    assert status["by_state"].get("STOPPED", 0) >= 1
    assert status["best"]["ckplus"]["best_val_acc"] == pytest.approx(trials_frame(search)["val_acc"].max())


@pytest.mark.slow
def test_completed_search_is_not_run_again(search):
    from fercluster.orchestration.tune.search import run_tune_local

    t0 = time.monotonic()
    again = run_tune_local(search["cfg"])
    assert again["skipped"] and again["best"]["k"] == search["summary"]["best"]["k"]
    assert time.monotonic() - t0 < 5  # no Ray started


@pytest.mark.slow
def test_changed_settings_refuse_to_restore_the_old_search(search):
    from fercluster.orchestration.tune.search import run_tune_local

    data = tiny_config(search["root"], grace_period=20)
    with pytest.raises(ConfigError, match="changed since its search started"):
        run_tune_local(parse_config(data))


@pytest.mark.slow
def test_report_section_shows_accuracy_against_k_and_best_k(search, tmp_path):
    from fercluster.analysis.render import to_html, to_markdown
    from fercluster.analysis.tune_section import tune_section

    section = tune_section(search["cfg"], tmp_path)
    figures = [block[1] for block in section.blocks if block[0] == "image"]
    markdown, html = to_markdown("r", [section], tmp_path), to_html("r", [section])
    assert [Path(p).name for p in figures] == ["accuracy_vs_k.png", "curves_by_k.png", "asha_budget.png"]
    assert all(Path(p).stat().st_size > 0 for p in figures)
    best_k = json.loads((search["root"] / "results" / search["cfg"].name / "tune" / "best.json").read_text())["k"]
    assert f"| ckplus | {best_k:.3f} |" in markdown
    assert "stopped by ASHA" in markdown and "<table>" in html


# -- pure parts (no Ray cluster) ------------------------------------------------------------------
def test_grid_search_spaces_uniform_params_evenly(tmp_path):
    from fercluster.orchestration.tune.search import param_space

    space = {"k": {"type": "uniform", "low": 0.2, "high": 1.2}, "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}
    cfg = parse_config(tiny_config(tmp_path, search="grid", num_samples=3, space=space, folds=[0, 1]))
    param, samples = param_space(cfg, "ckplus")
    assert samples == 1
    assert param["k"] == {"grid_search": [0.2, 0.7, 1.2]}
    assert param["lr"] == {"grid_search": [0.001, 0.01, 0.1]}
    assert param["fold"] == {"grid_search": [0, 1]}


def test_random_search_samples_num_samples_times(tmp_path):
    from ray.tune.search.sample import Float

    from fercluster.orchestration.tune.search import param_space

    space = {"k": {"type": "uniform", "low": 0.2, "high": 1.2}}
    cfg = parse_config(tiny_config(tmp_path, num_samples=6, space=space))
    param, samples = param_space(cfg, "ckplus")
    assert samples == 6 and isinstance(param["k"], Float) and param["fold"] == 0


def test_trial_spec_carries_sampled_k_and_its_run_dir(tmp_path):
    from fercluster.orchestration.tune.search import base_job
    from fercluster.orchestration.tune.trial import trial_spec

    cfg = parse_config(tiny_config(tmp_path))
    base = base_job(cfg, "ckplus")
    spec = trial_spec(base, {"k": 0.37, "fold": 0}, tmp_path / "t1")
    other = trial_spec(base, {"k": 0.38, "fold": 0}, tmp_path / "t2")
    assert spec.train.k == 0.37 and spec.run_dir == str(tmp_path / "t1")
    assert spec.train.checkpoint_every == spec.train.eval_every
    assert spec.job_id != other.job_id
    assert Path(spec.prepared_dir).is_absolute()


def test_a_trial_is_one_process_whatever_its_ray_worker_inherits(tmp_path):
    """A Ray worker started by srun inherits SLURM_NTASKS > 1 and SLURM_PROCID of its task: the
    trial's job must still run alone, not as a rank of one group with the other trials."""
    from fercluster.orchestration.tune.search import base_job
    from fercluster.orchestration.tune.trial import trial_spec
    from fercluster.train import distributed

    cfg = parse_config(tiny_config(tmp_path, name="many-nodes") | {"slurm": {"nodes": 4, "gpus_per_node": 2}})
    base = base_job(cfg, "ckplus")
    base["spec"]["processes"] = 8  # even a base that said otherwise
    spec = trial_spec(base, {"k": 0.5, "fold": 0}, tmp_path / "t")
    assert spec.processes == 1
    inherited = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
    assert distributed.detect(spec.processes, inherited) == distributed.DistInfo()


def test_trial_nodes_come_from_its_attempts(tmp_path):
    from fercluster.orchestration.tune.results import trial_nodes

    lines = [{"host": "vm", "node": "VM"}, {"host": "vm", "node": "vm"}, {"host": "h1"}, {"host": "vm", "node": "VM"}]
    (tmp_path / "attempts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"node": "cut sh')
    assert trial_nodes(tmp_path) == ["VM", "vm", "h1"]
    assert trial_nodes(tmp_path / "missing") == []


def test_2015_selection_is_refused(tmp_path):
    from fercluster.orchestration.tune.search import run_tune_local

    data = tiny_config(tmp_path)
    data["train"]["selection"] = "2015"
    with pytest.raises(ConfigError, match="selection"):
        run_tune_local(parse_config(data))


def test_status_without_tune_section_is_none(tmp_path):
    from fercluster.orchestration.tune.state import tune_status

    data = tiny_config(tmp_path)
    del data["tune"]
    data["grid"] = [{"dataset": "ckplus", "folds": [0], "variants": ["none"]}]
    assert tune_status(parse_config(data)) is None
    assert tune_status(parse_config(tiny_config(tmp_path)))["state"] == "NOT_SUBMITTED"


def test_interrupted_search_exits_non_zero_with_a_message(tmp_path):
    """`fercluster sweep CONFIG --local` on a search that stops before its end: exit 130, a clear line."""
    path = write_config(tmp_path, tiny_config(tmp_path))
    code = textwrap.dedent(
        f"""
        import sys
        import fercluster.orchestration.tune.search as search
        search.run_tune_local = lambda cfg, console=None, retry_failed=False: {{"state": "interrupted", "sweep": cfg.name}}
        sys.argv = ["fercluster", "sweep", {str(path)!r}, "--local"]
        from fercluster.cli.main import main
        main()
        """
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert (
        "interrupted: search ktune-test stopped before its end; run the same command again to restore it" in proc.stderr
    )


def test_ray_tune_sbatch_runs_a_module_that_exists():
    """slurm/ray_tune.sbatch runs `python -m <module> CONFIG`: the module must exist and answer."""
    import re

    text = (Path(__file__).parents[2] / "slurm" / "ray_tune.sbatch").read_text()
    modules = re.findall(r"-m\s+(fercluster[\w.]*)", text)
    assert modules, "no `-m fercluster...` in slurm/ray_tune.sbatch"
    for module in modules:
        proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and f"python -m {module} CONFIG" in proc.stderr, (module, proc.stderr)


# -- SLURM ----------------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_search_on_slurm_completes(tmp_path):
    from fercluster.orchestration.tune.allocation import submit_tune_slurm
    from fercluster.orchestration.tune.state import tune_status

    root = tmp_path  # the test cluster's node is this machine: it sees the same /tmp
    cfg = load_config(write_config(root, tiny_config(root, name="ktune-slurm", max_concurrent=2)))
    submitted = submit_tune_slurm(cfg)
    assert submitted["submitted"] and submitted["slurm_id"]
    assert not submit_tune_slurm(cfg)["submitted"]  # queued or running: not submitted twice
    deadline = time.monotonic() + 840
    while tune_status(cfg)["state"] not in ("COMPLETED", "FAILED"):
        state = subprocess.run(["squeue", "-h", "-j", submitted["slurm_id"], "-o", "%T"], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        if not state and tune_status(cfg)["state"] not in ("COMPLETED", "FAILED"):
            time.sleep(3)  # the job left the queue: its last status write may still be landing
            break
        assert time.monotonic() < deadline, "the search did not finish on SLURM in time"
        time.sleep(3)
    status = tune_status(cfg)
    logs = sorted((root / "jobs" / cfg.name / "tune" / "submitit").glob("*"))
    assert status["state"] == "COMPLETED", (
        status,
        [p.read_text()[-3000:] for p in logs if p.suffix in (".out", ".err")],
    )
    best = json.loads((root / "results" / cfg.name / "tune" / "best.json").read_text())
    assert 0.2 <= best["k"] <= 1.2
    frame = pd.read_parquet(root / "results" / cfg.name / "tune" / "trials.parquet")
    assert frame["trial_id"].nunique() == TRIALS
    snapshot = root / "jobs" / cfg.name / "code" / submitted["code"]  # the allocation and its trials run it
    done = list((root / "results" / cfg.name / "tune" / "trials").glob("*/job.json"))
    assert done and all(json.loads(p.read_text())["code"]["package"] == str(snapshot / "fercluster") for p in done)


def test_status_of_a_dead_local_driver_is_interrupted(tmp_path):
    import socket

    from fercluster.atomic import write_json
    from fercluster.orchestration.tune.state import state_dir, tune_status

    cfg = parse_config(tiny_config(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json(state_dir(cfg) / "search.json", {"state": "running", "mode": "local", "host": socket.gethostname(),
                                                "pid": dead.pid, "started": time.time()})  # fmt: skip
    assert tune_status(cfg)["state"] == "INTERRUPTED"


def test_a_local_driver_is_the_pid_with_its_start_time_on_its_own_host(tmp_path):
    """A pid the kernel gave to another process is not the driver; another host's pid is not judged here."""
    import socket

    from fercluster.atomic import write_json
    from fercluster.lock import process_start
    from fercluster.orchestration.tune.state import state_dir, tune_status

    cfg = parse_config(tiny_config(tmp_path))
    alive = os.getpid()  # a live process: the driver's pid, reused (it started at another time)

    def driver(host: str, start: float | None) -> str:
        write_json(state_dir(cfg) / "search.json", {"state": "running", "mode": "local", "host": host, "pid": alive,
                                                    "pid_start": start, "started": time.time()})  # fmt: skip
        return tune_status(cfg)["state"]

    here, started = socket.gethostname(), process_start(alive)
    assert started is not None
    assert driver(here, started) == "RUNNING"
    assert driver(here, started - 3600) == "INTERRUPTED"  # the pid is alive, but it is another process
    assert driver("another-host", started - 3600) == "RUNNING"  # not this host's process table to judge
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json(state_dir(cfg) / "search.json", {"state": "running", "mode": "local", "host": "another-host",
                                                "pid": dead.pid, "started": time.time()})  # fmt: skip
    assert tune_status(cfg)["state"] == "RUNNING"


def test_a_running_search_records_its_drivers_start_time(tmp_path, monkeypatch):
    from fercluster.lock import process_start
    from fercluster.orchestration.tune import search
    from fercluster.orchestration.tune.state import load_search

    cfg = parse_config(tiny_config(tmp_path))
    monkeypatch.setattr(search, "_run_dataset", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        search.run_search(cfg)
    record = load_search(cfg)
    assert record.pid == os.getpid() and record.pid_start == process_start(os.getpid())


# -- the allocation's submission: never two at once (fake SLURM, no Ray) -------------------------
@pytest.fixture
def allocation_env(tmp_path, monkeypatch):
    """(module, config, fake backend): data preparation and the code snapshot stubbed out."""
    from types import SimpleNamespace

    from fercluster.orchestration.fake import FakeBackend
    from fercluster.orchestration.tune import allocation

    monkeypatch.setattr(allocation.search, "prepare", lambda cfg, console=None: None)
    code = SimpleNamespace(path=tmp_path / "code" / "abc", key="abc")
    monkeypatch.setattr(allocation, "current_code", lambda cfg, make=False: (code, None))
    return allocation, parse_config(tiny_config(tmp_path)), FakeBackend()


def squeue_says(*answers):
    """``live`` answering in turn (True: queued or running, None: squeue failed, False: ended)."""
    calls = iter(answers)
    return lambda slurm_id: next(calls)


def test_an_allocation_is_not_submitted_again_when_squeue_fails_once(allocation_env):
    allocation, cfg, fake = allocation_env
    first = allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says())
    assert first["submitted"] and len(fake.submitted) == 1
    live = squeue_says(True, None, False)
    again = allocation.submit_tune_slurm(cfg, backend=fake, live=live)  # RUNNING
    assert not again["submitted"] and "already queued or running" in again["held"]
    blind = allocation.submit_tune_slurm(cfg, backend=fake, live=live)  # squeue failed once
    assert not blind["submitted"] and blind["held"].startswith(f"cannot tell whether allocation {first['slurm_id']}")
    assert len(fake.submitted) == 1
    after = allocation.submit_tune_slurm(cfg, backend=fake, live=live)  # ended: the next one goes
    assert after["submitted"] and len(fake.submitted) == 2
    assert fake.submitted[0].name != fake.submitted[1].name  # each has its own name, to be found by it


def test_a_crash_after_sbatch_is_resolved_by_name_and_not_submitted_twice(allocation_env):
    allocation, cfg, fake = allocation_env
    fake.crash_after_sbatch = True
    with pytest.raises(KeyboardInterrupt):
        allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says())
    from fercluster.orchestration.tune.state import read_search

    assert read_search(cfg)["pending"]["name"] == fake.submitted[0].name and "slurm_id" not in read_search(cfg)
    result = allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says(True))
    assert not result["submitted"] and result["slurm_id"] == fake.submitted[0].ids[0]
    assert len(fake.submitted) == 1 and "pending" not in read_search(cfg)


def test_a_failed_sbatch_holds_while_it_may_land_or_cannot_be_looked_up_then_is_dropped(allocation_env):
    from fercluster.errors import SlurmError
    from fercluster.orchestration.tune.state import read_search, state_dir

    allocation, cfg, fake = allocation_env
    real = fake.submit

    def refused(submission):
        fake.submit = real  # once
        raise SlurmError("sbatch failed: timed out")

    fake.submit = refused
    with pytest.raises(SlurmError):
        allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says())
    held = allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says())
    assert not held["submitted"] and "may still land" in held["held"]  # its sbatch could still be running
    record = read_search(cfg)
    record["pending"]["created"] -= allocation.PENDING_BOUND_S
    (state_dir(cfg) / "search.json").write_text(json.dumps(record))
    fake.lookup_error = "squeue failed: rate limit"
    blind = allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says())
    assert not blind["submitted"] and "cannot tell whether the allocation" in blind["held"]
    fake.lookup_error = ""
    assert fake.submitted == []
    result = allocation.submit_tune_slurm(cfg, backend=fake, live=squeue_says())  # not found after the bound
    assert result["submitted"] and len(fake.submitted) == 1 and "pending" not in read_search(cfg)
