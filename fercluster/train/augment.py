"""Training-time augmentation (variants A and AD), batched on the device.

Per image, as in the authors' code: horizontal flip with p = 0.5 (before the warp); rotation
angle ~ U(-5, 5) degrees; scale s ~ U(0.7, 1.4); translation tx, ty ~ U(-d/2, d/2) pixels with
d = |S - S s|. The warp maps output to input pixels, p_in = s R (p_out - c) + c + t, bilinear with
zero fill, so s > 1 samples a larger area and the face looks smaller. The centre c is the authors'
by default (``centre="code"``): their ``Crop`` took c = S / 2 = 48 in scikit-image's pixel-index
convention, half a pixel right of and below the true centre 47.5 (``centre="true"``).
Then gamma g ~ U(0.25, 4): x ** g, and a per-image min-max rescale to [0, 2]. (The code also
scales by U(0.7, 1.4) and shifts by U(-0.1, 0.1); the min-max cancels both, so they are omitted.)

The whole batch is one ``affine_grid`` + ``grid_sample`` and a few element-wise operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ANGLE_DEG = 5.0
SCALE = (0.7, 1.4)
GAMMA = (0.25, 4.0)
FLIP_P = 0.5
CENTRES = ("code", "true")
# c - (true centre), in pixels: the authors' c = S / 2 in pixel indices is S / 2 + 0.5 in ours (x runs 0..S)
CENTRE_OFFSET = {"code": 0.5, "true": 0.0}


@dataclass
class AugmentParams:
    flip: torch.Tensor  # (N,) bool
    angle: torch.Tensor  # (N,) degrees
    scale: torch.Tensor  # (N,)
    tx: torch.Tensor  # (N,) pixels
    ty: torch.Tensor  # (N,) pixels
    gamma: torch.Tensor  # (N,)


def sample_params(n: int, size: int, generator: torch.Generator, device: torch.device | str = "cpu") -> AugmentParams:
    """Draw the augmentation parameters of ``n`` images of side ``size`` from ``generator``."""
    u = torch.rand(n, 6, generator=generator, device=device)
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 2]
    shift = (size - size * scale).abs()  # d: the translation range is tied to the scale
    return AugmentParams(
        flip=u[:, 0] < FLIP_P,
        angle=(2 * u[:, 1] - 1) * ANGLE_DEG,
        scale=scale,
        tx=(u[:, 3] - 0.5) * shift,
        ty=(u[:, 4] - 0.5) * shift,
        gamma=GAMMA[0] + (GAMMA[1] - GAMMA[0]) * u[:, 5],
    )


def warp_theta(params: AugmentParams, size: int, centre: str = "code") -> torch.Tensor:
    """The (N, 2, 3) matrices for ``affine_grid(align_corners=False)``.

    In normalised coordinates u = 2 (p - S / 2) / S the warp is u_in = A u_out + 2 t' / S, A = s R,
    where t' = t + (I - A) delta 1 moves the centre delta pixels off the true one. The flip before
    the warp reads the original image at (-x, y) (a true mirror), so it negates the first row.
    """
    if centre not in CENTRES:
        raise ValueError(f"augment centre: got {centre!r}; valid: {', '.join(CENTRES)}")
    rad = params.angle * (math.pi / 180.0)
    cos, sin = torch.cos(rad) * params.scale, torch.sin(rad) * params.scale
    delta = CENTRE_OFFSET[centre]
    tx = params.tx + delta * (1 - cos + sin)  # (I - A) (delta, delta), first row
    ty = params.ty + delta * (1 - sin - cos)
    row_x = torch.stack([cos, -sin, 2 * tx / size], dim=1)  # (N, 3)
    row_y = torch.stack([sin, cos, 2 * ty / size], dim=1)  # (N, 3)
    sign = 1.0 - 2.0 * params.flip.to(row_x.dtype)  # -1 where flipped
    return torch.stack([row_x * sign[:, None], row_y], dim=1)  # (N, 2, 3)


def pixel_matrix(params: AugmentParams, size: int, centre: str = "code") -> torch.Tensor:
    """(N, 2, 3): output pixel (x, y) -> input pixel (x, y), continuous coordinates.

    The same map as ``warp_theta``, in pixels, for checks: x runs 0..S across the image, so the
    centre of pixel column j is j + 0.5 and the true centre is S / 2.
    """
    theta = warp_theta(params, size, centre)
    half = size / 2.0
    matrix = theta.clone()
    # u = (p - half) / half  =>  p_in = half * (A (p_out - half) / half + b) + half
    matrix[:, :, 2] = theta[:, :, 2] * half + half - (theta[:, :, :2].sum(dim=2) * half)
    return matrix


def warp(x: torch.Tensor, params: AugmentParams, centre: str = "code") -> torch.Tensor:
    """Flip + rotate + scale + translate float images (N, 1, S, S); bilinear, zero fill."""
    theta = warp_theta(params, x.shape[-1], centre).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def intensity(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """x ** gamma, then each image min-max rescaled to [0, 2]."""
    x = x.clamp_min(0.0) ** gamma.view(-1, 1, 1, 1)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-8) * 2.0


def augment(x: torch.Tensor, generator: torch.Generator, centre: str = "code") -> torch.Tensor:
    """Augment a batch of float images (N, 1, S, S) in [0, 2]; parameters drawn from ``generator``."""
    params = sample_params(x.shape[0], x.shape[-1], generator, x.device)
    return intensity(warp(x, params, centre), params.gamma)
