"""Pre-processing as the authors' code ran it: scale to [0, 2], then 5x5 local mean subtraction.

The code (anna's ``Normer3``) meant to divide by the local standard deviation too, but Python 2's
integer division made the divisor ``std ** (1 / 2)`` equal 1: mean subtraction is the default, and
``normalize="mean_std"`` is the text's reading with Normer3's own variance, the 5x5 box mean of the
squared deviations ``box_mean((x - box_mean(x)) ** 2)`` (each pixel's deviation from its own local
mean), plus ``STD_EPS`` so flat (or zero-padded) regions do not divide by zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMALIZE = ("mean", "mean_std")
PATCH = 5  # the local window is PATCH x PATCH
STD_EPS = 1e-4


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, 1, H, W) -> float32 (N, 1, H, W) in [0, 2]."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float() / 255.0 * 2.0


def box_mean(x: torch.Tensor) -> torch.Tensor:
    """5x5 mean with zero-padded borders, always divided by 25 (as the code's convolution)."""
    return F.avg_pool2d(x, PATCH, stride=1, padding=PATCH // 2, count_include_pad=True)


def local_normalize(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Patch-wise normalisation of float images (N, 1, H, W)."""
    if mode not in NORMALIZE:
        raise ValueError(f"normalize: got {mode!r}; valid: {', '.join(NORMALIZE)}")
    mean = box_mean(x)
    centred = x - mean
    if mode == "mean":
        return centred
    variance = box_mean(centred * centred)  # Normer3: conv of diff ** 2 with the same 1/25 box
    return centred / torch.sqrt(variance + STD_EPS)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float images (N, 1, H, W) -> (N, 1, size, size) by area averaging (no-op at the same size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="area")


def preprocess(x: torch.Tensor, normalize: str = "mean", size: int | None = None) -> torch.Tensor:
    """uint8 images -> the network's input: [0, 2] float, optionally resized, normalised."""
    x = to_float(x)
    if size is not None:
        x = resize(x, size)
    return local_normalize(x, normalize)
