"""``fercluster bench train``: the job's training loop against a bare PyTorch loop, in one process.

Both loops train the same network (the zero-bias CNN, variant AD: augmentation and dropout) on the
same random images with the same batch size, SGD settings and augmentation maths; the reference
is written here in plain PyTorch with nothing around it. They run alternately, in rounds, so that
load from other processes hits both alike; the rates are total images over total time.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fercluster.config import Train
from fercluster.train import distributed
from fercluster.train.dataset import JobData, Split
from fercluster.train.spec import JobSpec
from fercluster.train.trainer import Trainer


@dataclass
class BenchResult:
    fercluster_ips: float
    reference_ips: float
    ratio: float  # fercluster / reference
    device: str
    image_size: int
    iterations: int
    width: float
    batch_size: int


def _synthetic_data(n: int, size: int, classes: int, device: torch.device) -> JobData:
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(n, 1, size, size, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    split = Split(x=(raw - F.avg_pool2d(raw, 5, 1, 2)).to(device), y=y.to(device), image_ids=[str(i) for i in range(n)])
    return JobData(train_raw=raw.to(device), train=split, val=split, test=split, label_names=[])


def _reference_model(classes: int, width: float, dropout: float) -> nn.Sequential:
    f1, f2, f3, hidden = (max(1, round(c * width)) for c in (64, 128, 256, 300))
    return nn.Sequential(
        nn.Conv2d(1, f1, 5, padding=2, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(f1, f2, 5, padding=2, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(f2, f3, 5, padding=2, bias=False),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * f3, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


class _Reference:
    """The bare loop: draw, augment (flip, rotate, scale, shift, gamma, min-max), normalise, step."""

    def __init__(
        self, data: JobData, classes: int, width: float, batch: int, device: torch.device, channels_last: bool
    ):
        self.raw, self.y, self.batch, self.device = data.train_raw, data.train.y, batch, device
        self.model = _reference_model(classes, width, 0.5).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
        self.gen = torch.Generator(device).manual_seed(1)

    def step(self) -> None:
        n, size = self.batch, self.raw.shape[-1]
        idx = torch.randint(len(self.raw), (n,), generator=self.gen, device=self.device)
        u = torch.rand(n, 6, generator=self.gen, device=self.device)
        scale = 0.7 + 0.7 * u[:, 2]
        d = (size - size * scale).abs()
        rad = (2 * u[:, 1] - 1) * (5 * math.pi / 180)
        sign = torch.where(u[:, 0] < 0.5, -1.0, 1.0)
        theta = torch.stack(
            [
                torch.stack([torch.cos(rad) * scale, -torch.sin(rad) * scale, (u[:, 3] - 0.5) * d * 2 / size], 1)
                * sign[:, None],
                torch.stack([torch.sin(rad) * scale, torch.cos(rad) * scale, (u[:, 4] - 0.5) * d * 2 / size], 1),
            ],
            1,
        )
        x = self.raw[idx]
        x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
        x = x.clamp_min(0) ** (0.25 + 3.75 * u[:, 5]).view(-1, 1, 1, 1)
        low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp_min(1e-8) * 2
        x = x - F.avg_pool2d(x, 5, 1, 2)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.model(x), self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def _bench_spec(size: int, width: float, batch: int, device: torch.device) -> JobSpec:
    train = Train(image_size=size, width=width, batch_size=batch, k=0.7, device=device.type, iterations=1)
    return JobSpec(
        sweep="bench",
        dataset="bench",
        kind="ckplus",
        classes=8,
        fold=0,
        variant="AD",
        seed=0,
        train=train,
        prepared_dir="",
        run_dir="",
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, iterations: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    _sync(device)
    return time.perf_counter() - start


def bench_train(
    device: str = "cpu",
    size: int = 96,
    width: float = 1.0,
    iterations: int = 20,
    batch: int = 64,
    rounds: int | None = None,
    warmup: int = 2,
) -> BenchResult:
    """Time ``iterations`` steps of each loop, in alternating rounds (default: 5 steps a round)."""
    rounds = rounds or max(2, iterations // 5)
    dev = torch.device(device)
    data = _synthetic_data(512, size, 8, dev)
    trainer = Trainer(_bench_spec(size, width, batch, dev), data, dev, distributed.DistInfo(), k=0.7)
    reference = _Reference(data, 8, width, batch, dev, channels_last=trainer.channels_last)
    with torch.no_grad():  # same starting weights: activations (and denormals) alike in both loops
        for mine, theirs in zip(reference.model.parameters(), trainer.model.parameters(), strict=True):
            mine.copy_(theirs)
    per_round = max(1, iterations // rounds)
    for step in (trainer.step, reference.step):
        _timed(step, warmup, dev)
    times = {"fercluster": 0.0, "reference": 0.0}
    for r in range(rounds):
        order = [("fercluster", trainer.step), ("reference", reference.step)]
        for name, step in order if r % 2 == 0 else order[::-1]:
            times[name] += _timed(step, per_round, dev)
    images = per_round * rounds * batch
    fer, ref = images / times["fercluster"], images / times["reference"]
    return BenchResult(fer, ref, fer / ref, str(dev), size, per_round * rounds, width, batch)


def as_dict(result: BenchResult) -> dict:
    return asdict(result)
