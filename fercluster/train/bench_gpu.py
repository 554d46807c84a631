"""``fercluster bench gpu``: the paper model's training throughput in each GPU mode, and the sweep's cost.

Modes: fp32 (IEEE, as the authors' code computed), TF32 and bf16 (autocast), each with and without
channels_last and ``torch.compile`` (the job's ``train.tf32`` / ``bf16`` / ``channels_last`` /
``compile`` settings, run by the job's own ``Trainer``: what a sweep would run). Every mode
trains the same network from the same initial weights on the same batches (variant AD:
augmentation and dropout) of a learnable synthetic set, a bright blob at one place per class, so
that after ``loss_steps`` steps its loss can be compared with fp32's: a mode whose loss is not
close is flagged and never proposed. Throughput is images/s over ``iterations`` timed steps
after ``warmup`` (which also absorbs compilation). With two GPUs or more, 2-GPU NCCL DDP runs
the fastest close mode. The projection: the paper's sweep (``PAPER_RUNS`` runs x
``PAPER_ITERATIONS`` iterations x ``PAPER_BATCH`` images) on one GPU.

``device`` is a parameter so the table logic runs on a CPU too (where the modes coincide: TF32,
bf16 and channels_last are CUDA-only settings of the Trainer).
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fercluster.train import distributed
from fercluster.train.bench import _bench_spec, _sync, _timed
from fercluster.train.dataset import JobData, Split
from fercluster.train.trainer import Trainer, set_tf32

# The paper's sweep (configs/paper.yaml; tests/train/test_bench_gpu.py checks the run count).
PAPER_RUNS = 70
PAPER_ITERATIONS = 31_000
PAPER_BATCH = 64
PAPER_IMAGES = PAPER_RUNS * PAPER_ITERATIONS * PAPER_BATCH
LOSS_WINDOW = 50  # the loss compared is the mean over the last this many steps
LOSS_ABS, LOSS_REL = 0.05, 0.10  # close: |loss - fp32's| <= LOSS_ABS + LOSS_REL * fp32's


@dataclass(frozen=True)
class Mode:
    precision: str  # "fp32" (IEEE), "tf32" or "bf16"
    channels_last: bool
    compile: bool

    @property
    def name(self) -> str:
        return " + ".join([self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile)

    def settings(self) -> dict[str, Any]:
        """The job's ``train`` settings of this mode."""
        return {
            "tf32": self.precision == "tf32",
            "bf16": self.precision == "bf16",
            "channels_last": self.channels_last,
            "compile": self.compile,
        }


def all_modes(compile: bool = True) -> list[Mode]:
    """fp32 first (the reference of the loss check), then every other combination."""
    return [
        Mode(p, cl, c)
        for p in ("fp32", "tf32", "bf16")
        for c in ((False, True) if compile else (False,))
        for cl in (False, True)
    ]


@dataclass
class ModeResult:
    mode: str
    precision: str
    channels_last: bool
    compile: bool
    images_per_s: float = math.nan
    loss: float = math.nan  # mean training loss over the last LOSS_WINDOW of loss_steps steps
    close: bool = False  # loss close to fp32's
    sweep_hours: float = math.nan  # the paper's sweep on one GPU at this rate
    error: str = ""


def learnable_data(n: int, size: int, classes: int, device: torch.device, seed: int = 0) -> JobData:
    """Images in [0, 2] whose class is a bright blob at its own place (plus noise): a set the model learns."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    grid = torch.arange(size, dtype=torch.float32)
    cx = size * (0.25 + 0.5 * (y % 2)) + torch.randn(n, generator=g) * size / 48
    cy = size * (0.2 + 0.6 * (y // 2) / max(1, (classes - 1) // 2)) + torch.randn(n, generator=g) * size / 48
    blob = torch.exp(
        -((grid[None, None, :] - cx[:, None, None]) ** 2 + (grid[None, :, None] - cy[:, None, None]) ** 2)
        / (2 * (size / 12) ** 2)
    )
    raw = (0.5 + 1.2 * blob + 0.15 * torch.randn(n, size, size, generator=g)).clamp(0, 2)[:, None]  # (n, 1, S, S)
    split = Split(x=(raw - F.avg_pool2d(raw, 5, 1, 2)).to(device), y=y.to(device), image_ids=[str(i) for i in range(n)])
    return JobData(train_raw=raw.to(device), train=split, val=split, test=split, label_names=[])


def _trainer(
    mode: Mode,
    data: JobData,
    size: int,
    width: float,
    batch: int,
    device: torch.device,
    info: distributed.DistInfo = distributed.DistInfo(),
) -> Trainer:
    spec = _bench_spec(size, width, batch, device)
    spec = replace(spec, train=spec.train.model_copy(update=mode.settings()))
    set_tf32(mode.precision == "tf32")
    if mode.compile:
        torch._dynamo.reset()  # each mode compiles its own graph, not on top of the last one's
    return Trainer(spec, data, device, info, k=0.7)


def run_mode(
    mode: Mode,
    data: JobData,
    *,
    size: int,
    width: float,
    batch: int,
    device: torch.device,
    iterations: int,
    warmup: int,
    loss_steps: int,
) -> ModeResult:
    """Time one mode and train it to ``loss_steps`` steps; errors (e.g. no compiler) are recorded."""
    result = ModeResult(mode.name, mode.precision, mode.channels_last, mode.compile)
    try:
        trainer = _trainer(mode, data, size, width, batch, device)
        _timed(trainer.step, warmup, device)
        seconds = _timed(trainer.step, iterations, device)
        result.images_per_s = iterations * batch / seconds
        result.sweep_hours = PAPER_IMAGES / result.images_per_s / 3600
        for step in range(warmup + iterations, loss_steps):  # (bench_gpu makes loss_steps >= this + LOSS_WINDOW)
            if step == loss_steps - LOSS_WINDOW:
                trainer.reset_window()
            trainer.step()
        result.loss = trainer.window()[0]
    except Exception as exc:  # a mode this machine cannot run is a row of the table, not the end
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        set_tf32(False)
    return result


def close_to(loss: float, reference: float) -> bool:
    return math.isfinite(loss) and math.isfinite(reference) and abs(loss - reference) <= LOSS_ABS + LOSS_REL * reference


def bench_gpu(
    device: str = "cuda",
    size: int = 96,
    width: float = 1.0,
    batch: int = PAPER_BATCH,
    iterations: int = 50,
    warmup: int = 10,
    loss_steps: int = 300,
    compile: bool = True,
    ddp: bool = True,
) -> dict[str, Any]:
    """The mode table, the 2-GPU DDP rate and the projection; ``{"cuda": False}`` without CUDA."""
    # Over 50 lines: its keyword parameters (one per CLI option) take a third of it.
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return {"cuda": False, "device": None, "modes": [], "ddp": None, "paper_images": PAPER_IMAGES}
    loss_steps = max(loss_steps, warmup + iterations + LOSS_WINDOW)
    data = learnable_data(1024, size, 8, dev)
    opts = {
        "size": size,
        "width": width,
        "batch": batch,
        "device": dev,
        "iterations": iterations,
        "warmup": warmup,
        "loss_steps": loss_steps,
    }
    rows = [run_mode(mode, data, **opts) for mode in all_modes(compile)]
    reference = rows[0].loss
    for row in rows:
        row.close = close_to(row.loss, reference)
    usable = [r for r in rows if r.close and not r.error]
    best = max(usable, key=lambda r: r.images_per_s, default=None)
    out: dict[str, Any] = {
        "cuda": dev.type == "cuda",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "gpus": torch.cuda.device_count() if dev.type == "cuda" else 0,
        "image_size": size,
        "width": width,
        "batch": batch,
        "iterations": iterations,
        "loss_steps": loss_steps,
        "modes": [asdict(r) for r in rows],
        "best": best.mode if best else None,
        "paper_images": PAPER_IMAGES,
        "ddp": None,
    }
    if ddp and best is not None and out["gpus"] >= 2:
        mode = next(m for m in all_modes(compile) if m.name == best.mode)
        out["ddp"] = ddp_rate(mode, size=size, width=width, batch=batch, iterations=iterations, warmup=warmup)
        out["ddp"]["efficiency"] = out["ddp"]["images_per_s"] / (2 * best.images_per_s)
    return out


# -- 2 GPUs, NCCL --------------------------------------------------------------------------------
def ddp_rate(mode: Mode, *, size: int, width: float, batch: int, iterations: int, warmup: int) -> dict[str, Any]:
    """Images/s (global batch ``batch``, half on each GPU) of 2 NCCL ranks on this machine's first two GPUs."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="fercluster-bench-") as tmp:
        out = Path(tmp) / "rate.txt"
        mp.spawn(_ddp_rank, args=(2, port, mode, size, width, batch, iterations, warmup, str(out)), nprocs=2)
        rate = float(out.read_text())
    return {"mode": mode.name, "gpus": 2, "images_per_s": rate, "sweep_hours": PAPER_IMAGES / rate / 3600}


def _ddp_rank(
    rank: int,
    world: int,
    port: int,
    mode: Mode,
    size: int,
    width: float,
    batch: int,
    iterations: int,
    warmup: int,
    out: str,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = distributed.DistInfo(rank, world, rank)
    device = torch.device("cuda", rank)
    distributed.setup(device, info)  # the job's own set-up: NCCL, the rank's device
    try:
        trainer = _trainer(mode, learnable_data(1024, size, 8, device), size, width, batch, device, info)
        _timed(trainer.step, warmup, device)
        distributed.any_rank(False, info, device)  # start the clock together
        start = time.perf_counter()
        for _ in range(iterations):
            trainer.step()
        _sync(device)
        distributed.any_rank(False, info, device)
        if info.is_main:
            Path(out).write_text(str(iterations * batch / (time.perf_counter() - start)))
    finally:
        distributed.teardown(info)
