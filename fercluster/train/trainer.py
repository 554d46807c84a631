"""The training step and evaluation of one job, with every random stream owned and resumable.

Random streams, each seeded from the job's seed and its place in the sweep (data set, fold,
variant; see ``stream``), and the rank for the per-rank ones: ``k`` (the init scale when k is
"random"), ``init`` (weights), ``batches`` (which images, drawn
uniformly with replacement), ``augment`` (augmentation parameters) and ``dropout`` (torch's global
generator, which ``nn.Dropout`` uses). The step loop never reads a value back to the host: the
training loss and accuracy are summed on the device and read at evaluation only.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from fercluster.errors import ConfigError
from fercluster.train import distributed
from fercluster.train.augment import augment
from fercluster.train.dataset import JobData, Split
from fercluster.train.model import ZeroBiasCNN, build_model
from fercluster.train.preprocess import local_normalize
from fercluster.train.seeds import seed_for, stream
from fercluster.train.spec import JobSpec

EVAL_CHUNK = 512


def set_tf32(enabled: bool) -> None:
    """TF32 on or off for float32 matmuls and cuDNN convolutions (PyTorch's per-backend precision
    switches; the legacy ``allow_tf32`` flags must not be mixed with them)."""
    if not hasattr(torch.backends.cudnn, "conv"):  # torch < 2.9: only the legacy flags exist
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        return
    precision = "tf32" if enabled else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but torch finds no CUDA device; use 'auto' or 'cpu'")
        return torch.device("cuda", distributed.device_index(local_rank, torch.cuda.device_count()))
    return torch.device("cpu")


class Trainer:
    """Model, optimiser and random streams of one job on one rank."""

    def __init__(self, spec: JobSpec, data: JobData, device: torch.device, dist: distributed.DistInfo, k: float):
        t = spec.train
        self.spec, self.data, self.device, self.dist = spec, data, device, dist
        self.augment = spec.augment
        self.normalize = t.normalize
        self.augment_centre = t.augment_centre
        self.model: ZeroBiasCNN = build_model(
            spec.classes,
            width=t.width,
            image_size=t.image_size,
            dropout=t.dropout if spec.dropout else 0.0,
            k=k,
            fc4_init=t.fc4_init,
            seed=seed_for(spec.seed, stream(spec, "init")),
        ).to(device)
        self.cuda = device.type == "cuda"
        self.channels_last = self.cuda and t.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.bf16 = self.cuda and t.bf16
        self.net = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if self.cuda else None)
        if t.compile:
            self.net = torch.compile(self.net)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
        global_batch = t.batch_size
        self.batch = distributed.local_batch(global_batch, dist)
        # DDP averages gradients over ranks: scaling each rank's summed loss by world/global makes
        # the update the mean over the global batch, as with one process.
        self.loss_scale = dist.world_size / global_batch
        self.iteration = 0
        self._seed_streams(0)
        self.reset_window()

    # -- random streams ---------------------------------------------------------------------
    def _seed_streams(self, salt: int) -> None:
        rank, seed = self.dist.rank, self.spec.seed
        suffix = f":{salt}" if salt else ""

        def seed_of(name: str) -> int:
            return seed_for(seed, stream(self.spec, name) + suffix, rank)

        self.batch_gen = torch.Generator(self.device).manual_seed(seed_of("batches"))
        self.aug_gen = torch.Generator(self.device).manual_seed(seed_of("augment"))
        torch.manual_seed(seed_of("dropout"))

    def reset_window(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)  # summed per-image loss since the last evaluation
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.window_images = 0

    # -- training ---------------------------------------------------------------------------
    def batch_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.data.train), (self.batch,), generator=self.batch_gen, device=self.device)
        if self.augment:
            x = local_normalize(augment(self.data.train_raw[idx], self.aug_gen, self.augment_centre), self.normalize)
        else:
            x = self.data.train.x[idx]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.data.train.y[idx]

    def step(self) -> None:
        """One SGD iteration on a freshly drawn (and, for A/AD, augmented) batch."""
        x, y = self.batch_inputs()
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.loss_scale).backward()
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.window_images += self.batch
        self.iteration += 1

    def window(self) -> tuple[float, float]:
        """Mean training loss and batch accuracy since the last evaluation, over all ranks."""
        totals = torch.stack(
            [self.loss_sum.float(), self.correct.float(), torch.tensor(float(self.window_images), device=self.device)]
        )
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(totals)
        loss, correct, images = totals.tolist()
        if images == 0:
            return float("nan"), float("nan")
        return loss / images, correct / images

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        try:
            chunks = []
            for start in range(0, len(x), EVAL_CHUNK):
                part = x[start : start + EVAL_CHUNK]
                if self.channels_last:
                    part = part.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
                    chunks.append(self.model(part).float())
            return torch.cat(chunks) if chunks else torch.zeros(0, self.spec.classes, device=self.device)
        finally:
            self.model.train()

    def accuracy(self, split: Split) -> float:
        if len(split) == 0:
            return float("nan")
        return (self.logits(split.x).argmax(1) == split.y).float().mean().item()

    @torch.no_grad()
    def conv3_maxima(self, split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per image and conv3 filter: spatial max of the post-ReLU map and its (y, x)."""
        self.model.eval()
        values, ys, xs = [], [], []
        try:
            for start in range(0, len(split), EVAL_CHUNK):
                maps = self.model.features(split.x[start : start + EVAL_CHUNK]).float()  # (n, F, h, w)
                flat = maps.flatten(2)  # (n, F, h*w)
                value, where = flat.max(dim=2)
                values.append(value.cpu())
                ys.append((where // maps.shape[3]).cpu())
                xs.append((where % maps.shape[3]).cpu())
        finally:
            self.model.train()
        return torch.cat(values).numpy(), torch.cat(ys).numpy(), torch.cat(xs).numpy()

    # -- checkpoint state -------------------------------------------------------------------
    def rank_state(self) -> dict:
        """What differs between ranks: random streams and the loss window."""
        state = {
            "batch_gen": self.batch_gen.get_state(),
            "aug_gen": self.aug_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "loss_sum": self.loss_sum.detach().cpu(),
            "correct": self.correct.detach().cpu(),
            "window_images": self.window_images,
        }
        if self.cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_rank_state(self, state: dict | None, iteration: int) -> None:
        if state is None:  # the world size changed: fresh streams, salted by the iteration
            self._seed_streams(iteration + 1)
            return
        self.batch_gen.set_state(state["batch_gen"])
        self.aug_gen.set_state(state["aug_gen"])
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.loss_sum = state["loss_sum"].to(self.device)
        self.correct = state["correct"].to(self.device)
        self.window_images = int(state["window_images"])
