"""One job, start to finish: ``run_job(spec)`` trains, selects a checkpoint and writes the run directory.

A module-level function of plain data, so submitit and Ray pickle it by reference. It returns
the content of ``job.json``; a completed job (``job.json`` present) is skipped, a broken one
(``train.record``) moved aside and run again; a job with a
``checkpoint.pt`` resumes from it. With several processes (DDP) every rank trains and only rank 0
writes. ``JobCheckpointable`` (the submitit wrapper that requeues on preemption) lives in
``fercluster.orchestration.slurm.requeue``, so this module does not import submitit.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fercluster import code
from fercluster.errors import TrainingError
from fercluster.train import attempts, distributed, outputs
from fercluster.train.checkpoint import StopSignals, load_checkpoint, save_checkpoint
from fercluster.train.dataset import load_job_data
from fercluster.train.model import model_config
from fercluster.train.record import read_job_record
from fercluster.train.seeds import resolve_k
from fercluster.train.spec import JobSpec
from fercluster.train.trainer import Trainer, resolve_device, set_tf32

Reporter = Callable[[dict[str, Any]], None]
Progress = Callable[[int, int], None]
STOP_CHECK_EVERY_DDP = 20  # with several ranks, agree on a pending stop signal this often


@dataclass
class History:
    """Evaluations so far and the selected (best) checkpoint."""

    selection: str  # "2017": best validation accuracy; "2015": best test accuracy
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # iteration, val_acc, test_acc, state

    def add(self, row: dict[str, Any], model: torch.nn.Module) -> None:
        self.rows.append(row)
        key = "val_acc" if self.selection == "2017" else "test_acc"
        if not self.best or row[key] > self.best[key]:  # ties keep the earlier checkpoint
            state = {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
            self.best = {
                "iteration": row["iteration"],
                "val_acc": row["val_acc"],
                "test_acc": row["test_acc"],
                "state": state,
            }


SELECTIONS = {"best_val": "val_acc", "best_test": "test_acc", "last": None}  # name -> the accuracy it maximises


def selections(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each checkpoint selection of a run's evaluations: ``{name: {iteration, val_acc, test_acc}}``.

    best_val ("2017") and best_test ("2015") keep the earliest of tied checkpoints, as ``History``;
    last is the final evaluation. One run gives the paper's both protocols' numbers where their
    training sets agree (TFD: always; CK+ 2015 trains on 9 folds, a separate grid).
    """
    out = {}
    for name, key in SELECTIONS.items():
        pick = rows[-1] if rows else {}
        if key is not None and rows:
            pick = rows[0]
            for row in rows[1:]:
                if row[key] > pick[key]:
                    pick = row
        out[name] = {
            "iteration": pick.get("iteration"),
            "val_acc": pick.get("val_acc"),
            "test_acc": pick.get("test_acc"),
        }
    return out


def run_job(spec: JobSpec | dict, reporter: Reporter | None = None, progress: Progress | None = None) -> dict:
    """Run one job (see the module doc); ``progress(iteration, iterations)`` is called every step."""
    spec = JobSpec.from_dict(spec) if isinstance(spec, dict) else spec
    run_dir = Path(spec.run_dir)
    record, broken = read_job_record(run_dir)
    if record is not None:
        return record.to_dict()
    if broken:  # a broken record is a failed job: keep it for a look, train again (from any checkpoint)
        os.replace(run_dir / "job.json", run_dir / f"job.json.broken-{int(time.time())}")
    code.check_imported_snapshot()  # on SLURM: the job runs the code its sweep was submitted with
    k = resolve_k(spec)
    info = distributed.detect(spec.processes)
    history = attempts.Recorder(run_dir, enabled=info.is_main)
    if info.is_main:  # before the rendezvous: a job that hangs in it has started, and shows stalled
        history.start()
        outputs.progress_started(run_dir, spec.job_id, spec.train.iterations)
    try:
        record = _attempt(spec, k, info, reporter, progress, history)
    except KeyboardInterrupt:
        history.end(attempts.CANCELLED, "KeyboardInterrupt")
        raise
    except Exception as exc:  # a signal's end was written before (end is once per attempt)
        history.end(attempts.FAILED, f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    history.end(attempts.COMPLETED)  # after job.json: an end cut off here is inferred from it
    return record


def _attempt(spec: JobSpec, k: float, info, reporter, progress, history: attempts.Recorder) -> dict:
    device = resolve_device(spec.train.device, info.local_rank)
    set_tf32(spec.train.tf32)
    _limit_threads(device)
    distributed.setup(device, info, Path(spec.run_dir))
    try:
        record = _Run(spec, k, device, info, reporter, progress, history).run()
        distributed.barrier(info)  # rank 0 writes the outputs meanwhile; the others wait for it
        return record
    finally:
        distributed.teardown(info)


def due_eval(it: int, eval_at: str, every: int, iterations: int) -> bool:
    """Whether iteration ``it`` (updates done) is evaluated. round: 0, every, 2 every, ... and the
    last; code: 1, 1 + every, ... as the authors' Monitor saved after updates 1, 1001, ..., 30001."""
    if eval_at == "code":
        return it >= 1 and (it - 1) % every == 0
    return it % every == 0 or it == iterations


def _limit_threads(device: torch.device) -> None:
    """On the CPU use the cores SLURM gave the task: torch's default (all cores) oversubscribes."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if device.type == "cpu" and cpus and cpus.isdigit() and int(cpus) < torch.get_num_threads():
        torch.set_num_threads(int(cpus))


class _Run:
    """The state of one run of ``run_job`` on one rank."""

    def __init__(self, spec: JobSpec, k: float, device, info, reporter, progress, history=None):
        self.spec, self.k, self.device, self.info = spec, k, device, info
        self.reporter, self.progress = reporter, progress
        self.attempt = history or attempts.Recorder(spec.run_dir, enabled=False)  # this attempt's lines
        self.run_dir = Path(spec.run_dir)
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        t = spec.train
        self.iterations, self.eval_every, self.checkpoint_every = t.iterations, t.eval_every, t.checkpoint_every
        self.timings = {"load_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0, "outputs_s": 0.0}
        self.elapsed_before = 0.0
        self.history = History(t.selection)
        self.window_start = (time.time(), 0)  # for sec_per_iter: (time, iteration) of the last report
        self.code = code.code_record()  # at the start: the code this run imported

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        except (TrainingError, SystemExit):
            raise  # a failed loss has written its own progress; an interrupted job is still running
        except Exception as exc:
            if self.info.is_main and self.run_dir.exists() and hasattr(self, "trainer"):
                self._write_progress("failed", error=f"{type(exc).__name__}: {exc}")
            raise

    def _run(self) -> dict:
        self.start = time.time()
        data = load_job_data(self.spec, self.device)
        self.trainer = Trainer(self.spec, data, self.device, self.info, self.k)
        self.nodes = distributed.all_nodes(self.info)  # where each rank runs (job.json's "nodes")
        if self.ckpt_path.exists():
            self._resume()
        self.attempt.resumed(self.trainer.iteration)
        self.timings["load_s"] += time.time() - self.start
        self.window_start = (time.time(), self.trainer.iteration)
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with StopSignals() as stop:
            if self._due_eval(self.trainer.iteration):
                self._evaluate()
            while self.trainer.iteration < self.iterations:
                self.trainer.step()
                it = self.trainer.iteration
                self.attempt.reached(it)
                if self.progress is not None:
                    self.progress(it, self.iterations)
                if self._due_eval(it):
                    self._evaluate()
                if it % self.checkpoint_every == 0 and it < self.iterations and not self._saved_at(it):
                    self._checkpoint()
                if self._stop_requested(stop, it):
                    if not self._saved_at(it):
                        self._checkpoint()  # every rank takes part (a collective), at the same step
                    signum = stop.received or signal.SIGTERM  # SIGUSR2: submitit requeues it
                    self.attempt.end(attempts.signal_ending(signum), signal.Signals(signum).name)
                    settle = (lambda: distributed.barrier(self.info)) if self.info.enabled else None
                    stop.hand_on(self.spec.job_id, it, self.ckpt_path, self.info.rank, settle)
        return self._finish()

    def wall_time(self) -> float:
        return self.elapsed_before + time.time() - self.start

    def _due_eval(self, it: int) -> bool:
        evaluated = bool(self.history.rows) and self.history.rows[-1]["iteration"] == it
        return not evaluated and due_eval(it, self.spec.train.eval_at, self.eval_every, self.iterations)

    def _saved_at(self, it: int) -> bool:
        return getattr(self, "_last_saved", None) == it

    def _stop_requested(self, stop: StopSignals, it: int) -> bool:
        """Whether to stop after step ``it``; with several ranks, all agree on it and on the signal."""
        if not self.info.enabled:
            return stop.received is not None
        if it % STOP_CHECK_EVERY_DDP:
            return False
        signum = distributed.max_over_ranks(stop.received or 0, self.info, self.device)
        if signum:
            stop.agree(signum)
        return bool(signum)

    def _evaluate(self) -> None:
        t0 = time.time()
        trainer = self.trainer
        train_loss, train_acc = trainer.window()
        trainer.reset_window()
        row = {
            "iteration": trainer.iteration,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_acc": trainer.accuracy(trainer.data.val),
            "test_acc": trainer.accuracy(trainer.data.test),
            "wall_time": self.wall_time(),
        }
        self.history.add(row, trainer.model)
        self.timings["eval_s"] += time.time() - t0
        if not math.isfinite(train_loss) and trainer.iteration > 0:
            self._fail(row)
        if self.info.is_main:
            outputs.write_metrics(self.run_dir, self.history.rows)
            self._write_progress("running")
        if self.reporter is not None:
            if trainer.iteration < self.iterations:
                self._checkpoint()  # a reporter may stop the job (Ray Tune): save first
            if self.info.is_main:
                self.reporter(dict(row))

    def _fail(self, row: dict) -> None:
        message = (
            f"job {self.spec.job_id}: training loss is {row['train_loss']} at iteration {row['iteration']} "
            f"(k={self.k:.4g}, lr={self.spec.train.lr}); metrics so far are in {self.run_dir}; "
            "try a smaller k or learning rate"
        )
        if self.info.is_main:
            outputs.write_metrics(self.run_dir, self.history.rows)
            self._write_progress("failed", error=message)
        raise TrainingError(message)

    def _write_progress(self, state: str, error: str | None = None) -> None:
        last = self.history.rows[-1] if self.history.rows else {}
        now, it = time.time(), self.trainer.iteration
        t0, it0 = self.window_start
        outputs.write_progress(
            self.run_dir,
            job_id=self.spec.job_id,
            state=state,
            iteration=it,
            iterations=self.iterations,
            val_acc=last.get("val_acc"),
            test_acc=last.get("test_acc"),
            best_val_acc=self.history.best.get("val_acc"),
            best_test_acc=self.history.best.get("test_acc"),
            sec_per_iter=(now - t0) / (it - it0) if it > it0 else None,
            error=error,
        )
        self.window_start = (now, it)

    # -- checkpoints ------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        t0 = time.time()
        trainer = self.trainer
        ranks = [trainer.rank_state()]
        if self.info.enabled:
            import torch.distributed as dist

            ranks = [None] * self.info.world_size
            dist.all_gather_object(ranks, trainer.rank_state())
        if self.info.is_main:
            save_checkpoint(
                self.ckpt_path,
                {
                    "job_id": self.spec.job_id,
                    "iteration": trainer.iteration,
                    "k": self.k,
                    "world_size": self.info.world_size,
                    "model": trainer.model.state_dict(),
                    "optimizer": trainer.optimizer.state_dict(),
                    "ranks": ranks,
                    "metrics": self.history.rows,
                    "best": self.history.best,
                    "elapsed": self.wall_time(),
                    "timings": self.timings,
                },
            )
        self._last_saved = trainer.iteration
        self.timings["checkpoint_s"] += time.time() - t0

    def _resume(self) -> None:
        state = load_checkpoint(self.ckpt_path, self.spec.job_id)
        trainer = self.trainer
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.iteration = int(state["iteration"])
        ranks = state["ranks"]
        same_world = len(ranks) == self.info.world_size
        trainer.load_rank_state(ranks[self.info.rank] if same_world else None, trainer.iteration)
        self.history.rows = list(state["metrics"])
        self.history.best = dict(state["best"])
        self.elapsed_before = float(state["elapsed"])
        self.timings.update({key: float(v) for key, v in state.get("timings", {}).items()})
        self.k = float(state.get("k", self.k))
        self._last_saved = trainer.iteration

    # -- the end ----------------------------------------------------------------------------
    def _finish(self) -> dict:
        t0 = time.time()
        trainer, best = self.trainer, self.history.best
        if not self.info.is_main:
            return {}
        trainer.model.load_state_dict(best["state"])
        data = trainer.data
        probs = torch.softmax(trainer.logits(data.test.x), dim=1).cpu().numpy()
        outputs.write_predictions(self.run_dir, data.test.image_ids, data.test.y.cpu().numpy(), probs)
        outputs.write_activations(self.run_dir, data.train.image_ids, *trainer.conv3_maxima(data.train))
        outputs.write_model(
            self.run_dir, best["state"], model_config(trainer.model), self.spec.job_id, best["iteration"]
        )
        outputs.write_metrics(self.run_dir, self.history.rows)
        self._write_progress("completed")
        self.timings["outputs_s"] += time.time() - t0
        total = self.wall_time()
        record = {
            "job_id": self.spec.job_id,
            "spec": self.spec.to_dict(),
            "k": self.k,
            "seed": self.spec.seed,
            "selection": self.history.selection,
            "selected_iteration": best["iteration"],
            "val_acc": best["val_acc"],
            "test_acc": best["test_acc"],
            "selections": selections(self.history.rows),
            "code_version": outputs.code_version(),
            "code": self.code,
            "packages": outputs.packages(),
            "device": outputs.device_name(self.device, self.info.world_size),
            "world_size": self.info.world_size,
            "host": socket.gethostname(),
            "nodes": self.nodes,
            "timings": {**self.timings, "total_s": total, "sec_per_iter": total / max(1, self.iterations)},
            "status": "completed",
        }
        outputs.write_job_record(self.run_dir, record)
        return record
