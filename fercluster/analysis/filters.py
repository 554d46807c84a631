"""Filter visualisation (the paper's Figures 1, 3, 4): top training images of each conv3 filter
and the guided-backpropagation projection of its single strongest unit to pixel space.

The top N images of filter i come from ``activations.parquet`` (spatial max of the post-ReLU
conv3 map of every training image, with its argmax). The projection is captum's
``NeuronGuidedBackprop`` on ``model.conv3`` with a per-example neuron selector (filter i at that
image's argmax): each ReLU on the way down passes only where the forward activation and the
backward signal are both positive; max pooling routes through the forward switches.

``analysis.guided_mask`` chooses the masks (``GUIDED_MASKS``): ``relu`` is the above, what the spec
is certain of; ``pixel`` also masks the pixel map by (map > 0)·(input > 0), as the authors' guided
layer would on the reconstruction of conv1's input (open in the spec); ``none`` is the plain
gradient of the unit (forward switches and ReLU masks only), for comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fercluster.errors import CheckpointError, ConfigError

RF_BEFORE, RF_AFTER = 14, 17  # conv3 unit (y, x) sees input rows 4y-14 .. 4y+17 (32 pixels)


@dataclass
class Activations:
    """activations.parquet as matrices: (N images, F filters)."""

    image_ids: np.ndarray  # (N,) str
    values: np.ndarray  # (N, F) float32, spatial max of the post-ReLU conv3 map
    ys: np.ndarray  # (N, F) int, argmax row in the conv3 map
    xs: np.ndarray  # (N, F) int, argmax column


def activation_matrices(frame: pd.DataFrame) -> Activations:
    """Pivot the long table (image_id, filter, value, y, x) into (N, F) matrices."""
    missing = {"image_id", "filter", "value", "y", "x"} - set(frame.columns)
    if missing:
        raise ValueError(f"activations.parquet lacks columns {sorted(missing)}")
    ids, row = np.unique(frame["image_id"].to_numpy(dtype=str), return_inverse=True)
    col = frame["filter"].to_numpy(dtype=np.int64)
    n, f = len(ids), int(col.max()) + 1 if len(col) else 0
    if len(frame) != n * f:
        raise ValueError(f"activations.parquet has {len(frame)} rows, expected {n} images x {f} filters")
    out = [np.zeros((n, f), dtype=dt) for dt in (np.float32, np.int64, np.int64)]
    for matrix, name in zip(out, ("value", "y", "x"), strict=True):
        matrix[row, col] = frame[name].to_numpy()
    return Activations(ids, *out)


def top_images(values: np.ndarray, n: int) -> np.ndarray:
    """(F, n) row indices of the n images with the largest activation per filter, strongest first."""
    n = min(n, values.shape[0])
    part = np.argpartition(-values, n - 1, axis=0)[:n]  # (n, F), unordered
    order = np.argsort(-np.take_along_axis(values, part, axis=0), axis=0, kind="stable")
    return np.take_along_axis(part, order, axis=0).T


def load_model(run_dir: Path, job: dict[str, Any]) -> Any:
    """The selected checkpoint of a job, checked against it; CheckpointError if it does not match."""
    import torch

    from fercluster.train.model import build_model

    path = Path(run_dir) / "model.pt"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(f"{path}: expected a dict with state_dict and model_config")
    if ckpt.get("job_id") not in (None, job["job_id"]):
        raise CheckpointError(f"{path}: belongs to job {ckpt.get('job_id')!r}, not {job['job_id']!r}")
    config = dict(ckpt["model_config"])
    classes = job["spec"].get("classes")
    if classes is not None and config.get("classes") != classes:
        raise CheckpointError(f"{path}: model has {config.get('classes')} classes, the job {classes}")
    model = build_model(**config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model config ({str(exc).splitlines()[0]})") from None
    return model.eval()


def network_input(images: np.ndarray, model: Any, normalize: str) -> Any:
    """uint8 (n, 96, 96) -> the network's input (n, 1, S, S), as training preprocessed it."""
    import torch

    from fercluster.train.preprocess import preprocess

    return preprocess(torch.from_numpy(np.ascontiguousarray(images)), normalize=normalize, size=model.config.image_size)


GUIDED_MASKS = ("none", "relu", "pixel")  # analysis.guided_mask


def guided_backprop(model: Any, x: Any, filt: int, ys: np.ndarray, xs: np.ndarray, mask: str = "relu") -> np.ndarray:
    """Guided backprop of unit (filt, ys[k], xs[k]) of conv3 for each example k: (n, S, S).

    ``mask`` (one of ``GUIDED_MASKS``): ``relu`` captum's ``NeuronGuidedBackprop``; ``pixel`` that
    map times (map > 0)·(x > 0); ``none`` captum's ``NeuronGradient`` (the plain gradient).
    """
    import torch
    from captum.attr import NeuronGradient, NeuronGuidedBackprop

    if mask not in GUIDED_MASKS:
        raise ConfigError(f"analysis.guided_mask: got {mask!r}; valid: {', '.join(GUIDED_MASKS)}")
    rows = torch.arange(x.shape[0])
    ys_t, xs_t = torch.as_tensor(ys, dtype=torch.long), torch.as_tensor(xs, dtype=torch.long)

    def selector(out: torch.Tensor) -> torch.Tensor:
        return out[rows, filt, ys_t, xs_t]  # one unit per example

    method = NeuronGradient if mask == "none" else NeuronGuidedBackprop
    with warnings.catch_warnings():  # captum announces its (temporary) ReLU hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = method(model, model.conv3).attribute(x.clone().requires_grad_(True), neuron_selector=selector)
    maps = attr.detach()[:, 0]
    if mask == "pixel":
        maps = pixel_mask(maps, x[:, 0])
    return maps.numpy()


def pixel_mask(maps: Any, x: Any) -> Any:
    """The guided rule once more at the pixels: keep the map where it and the network input are positive."""
    return maps * (maps > 0) * (x > 0)


def rf_box(y: int, x: int, size: int) -> tuple[int, int, int, int]:
    """Receptive field (y0, y1, x0, x1), end-exclusive, of conv3 unit (y, x), clipped to the image."""
    return (
        max(0, 4 * y - RF_BEFORE),
        min(size, 4 * y + RF_AFTER + 1),
        max(0, 4 * x - RF_BEFORE),
        min(size, 4 * x + RF_AFTER + 1),
    )


def patch(image: np.ndarray, y: int, x: int) -> np.ndarray:
    """The 32x32 receptive-field patch of unit (y, x), zero-filled where it leaves the image."""
    side = RF_BEFORE + RF_AFTER + 1
    out = np.zeros((side, side), dtype=image.dtype)
    y0, y1, x0, x1 = rf_box(y, x, image.shape[0])
    oy, ox = y0 - (4 * y - RF_BEFORE), x0 - (4 * x - RF_BEFORE)
    out[oy : oy + y1 - y0, ox : ox + x1 - x0] = image[y0:y1, x0:x1]
    return out


def crop_support(m: np.ndarray, rel: float = 1e-3) -> np.ndarray:
    """Crop a projection to the bounding box of its support (|value| > rel * max)."""
    mask = np.abs(m) > rel * (np.abs(m).max() or 1.0)
    if not mask.any():
        return m
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def pad_square(m: np.ndarray, side: int) -> np.ndarray:
    """Centre ``m`` on a zero canvas of side x side (cropping if larger), so tiles align."""
    out = np.zeros((side, side), dtype=np.float64)
    h, w = min(m.shape[0], side), min(m.shape[1], side)
    oy, ox = (side - h) // 2, (side - w) // 2
    out[oy : oy + h, ox : ox + w] = m[:h, :w]
    return out


FILTER_RULE = "the largest mean activation over their top {n} training images"


def activation_strength(values: np.ndarray, top_n: int) -> np.ndarray:
    """(F,) mean of each filter's ``top_n`` largest activations over the training images.

    The strength of what a filter's row in the grids shows (its top images); no labels enter it.
    """
    n = max(1, min(top_n, values.shape[0]))
    return np.partition(values, values.shape[0] - n, axis=0)[values.shape[0] - n :].mean(axis=0)


def choose_filters(values: np.ndarray, configured: list[int] | None, n: int, top_n: int) -> list[int]:
    """The configured filters; else the ``n`` with the largest ``activation_strength`` (CK+ and TFD alike).

    Chosen by activation strength over the training images, never by KL or any AU label: the shown
    filters' top AUs can then be compared with the paper's Table 4 without the choice having looked
    for AUs. The mean of the top ``top_n`` activations rather than the variance: the shown rows are
    exactly those images, so the filters shown are the ones whose shown units fire hardest.
    """
    f = values.shape[1]
    if configured:
        bad = [i for i in configured if i >= f]
        if bad:
            raise ConfigError(f"analysis.filters: got {bad}; this model's conv3 has filters 0..{f - 1}")
        return list(configured)
    score = activation_strength(values, top_n)
    return [int(i) for i in np.argsort(-score, kind="stable")[: min(n, f)]]


@dataclass
class FilterViews:
    filters: list[int]
    top: np.ndarray  # (len(filters), n) prepared-set row of each top image
    projections: list[np.ndarray]  # per filter (n, S, S) guided-backprop maps
    patches: list[list[np.ndarray]]  # per filter, n receptive-field patches (uint8)
    image_size: int
    projection_patches: list[list[np.ndarray]] = field(default_factory=list)  # the maps over the same patches


def visualise(
    model: Any,
    images: np.ndarray,
    rows: np.ndarray,
    acts: Activations,
    filters: list[int],
    top_n: int,
    normalize: str,
    guided_mask: str = "relu",
) -> FilterViews:
    """Top images, guided-backprop maps and patches of each filter. ``rows[k]``: the prepared-set
    row of activation image k; ``guided_mask``: see ``guided_backprop``."""
    top = top_images(acts.values[:, filters], top_n)  # (len(filters), n) activation rows
    projections, patches, map_patches = [], [], []
    size = model.config.image_size
    for i, filt in enumerate(filters):
        k = top[i]
        x = network_input(images[rows[k]], model, normalize)
        projections.append(guided_backprop(model, x, filt, acts.ys[k, filt], acts.xs[k, filt], guided_mask))
        shown = display_images(images[rows[k]], size)
        units = [(int(acts.ys[kk, filt]), int(acts.xs[kk, filt])) for kk in k]
        patches.append([patch(shown[j], *unit) for j, unit in enumerate(units)])
        map_patches.append([patch(projections[-1][j], *unit) for j, unit in enumerate(units)])
    return FilterViews(list(filters), rows[top], projections, patches, size, map_patches)


def display_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images resized as the network saw them (before normalising), uint8 (n, size, size)."""
    import torch

    from fercluster.train.preprocess import resize, to_float

    x = resize(to_float(torch.from_numpy(np.ascontiguousarray(images))), size)[:, 0]
    return (x.numpy() / 2 * 255).clip(0, 255).astype(np.uint8)
