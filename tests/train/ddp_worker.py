"""Run by the distributed tests in each of several processes (WORLD_SIZE/RANK or SLURM variables set).

python ddp_worker.py job SPEC.json         run_job(spec)
python ddp_worker.py step OUT.pt           3 SGD steps on fixed batches split over the ranks
python ddp_worker.py both OUT.pt SPEC.json   both, in one start-up (the machine is slow to import)
python ddp_worker.py stop SPEC.json DIR      run_job(spec) under a handler as submitit's, SIGUSR2 to rank 0
"""

import json
import os
import signal
import sys
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fake_prepared  # noqa: E402
import torch  # noqa: E402

fake_prepared.install()
torch.set_num_threads(1)


def steps(out: str, keep_group: bool = False) -> None:
    """Three steps on fixed global batches of 16: each rank trains on its share."""
    from fercluster.train import distributed
    from fercluster.train.bench import _bench_spec, _synthetic_data
    from fercluster.train.trainer import Trainer

    device = torch.device("cpu")
    info = distributed.detect(int(os.environ.get("WORLD_SIZE", "1")))  # this test launches the ranks itself
    distributed.setup(device, info)
    data = _synthetic_data(64, 32, 8, device)
    spec = replace(_bench_spec(32, 0.125, 16, device), variant="none")
    trainer = Trainer(spec, data, device, info, k=1.0)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        part = torch.randint(0, 64, (16,), generator=g).chunk(info.world_size)[info.rank]
        trainer.batch_inputs = lambda part=part: (data.train.x[part], data.train.y[part])
        trainer.step()
    if info.is_main:
        torch.save(trainer.model.state_dict(), out)
    if not keep_group:  # run_job reuses an initialised group (re-initialising on the same port may hang)
        distributed.barrier(info)
        distributed.teardown(info)


def job(spec_path: str) -> None:
    from fercluster.train.job import run_job
    from fercluster.train.spec import JobSpec

    with open(spec_path) as f:
        run_job(JobSpec.from_dict(json.load(f)))


def stop(spec_path: str, folder: str) -> None:
    """SIGUSR2 to rank 0 only, at step 5, under a handler that does what submitit's does: rank 0
    "requeues" (writes DIR/requeued) and exits 255, the other ranks return. Each rank writes
    DIR/rank<R> on its way out: whether rank 0 had requeued by then."""
    from pathlib import Path

    from fercluster.train.job import run_job
    from fercluster.train.spec import JobSpec

    rank, out = int(os.environ["RANK"]), Path(folder)

    def submitit_like(signum: int, frame: object) -> None:
        if rank == 0:
            (out / "requeued").write_text(signal.Signals(signum).name)
            sys.exit(255)

    def progress(iteration: int, total: int) -> None:
        if rank == 0 and iteration == 5:
            os.kill(os.getpid(), signal.SIGUSR2)

    signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with open(spec_path) as f:
            run_job(JobSpec.from_dict(json.load(f)), progress=progress)
    finally:
        (out / f"rank{rank}").write_text("after requeue" if (out / "requeued").exists() else "before requeue")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode in ("step", "both"):
        steps(sys.argv[2], keep_group=mode == "both")
    if mode == "job":
        job(sys.argv[2])
    elif mode == "stop":
        stop(sys.argv[2], sys.argv[3])
    elif mode == "both":
        job(sys.argv[3])
