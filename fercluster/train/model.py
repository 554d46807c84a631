"""The zero-bias CNN of Khorrami et al. (ICCVW 2015), as the authors' code built it.

    input 1 x S x S
    conv1 64 5x5 pad 2, no bias, ReLU -> max 2x2      64 x S/2 x S/2
    conv2 128 5x5 pad 2, no bias, ReLU -> max 2x2    128 x S/4 x S/4
    conv3 256 5x5 pad 2, no bias, ReLU               256 x S/4 x S/4
    quadrant max pool (max over each quadrant)       256 x 2 x 2 = 1024
    [dropout p on fc4's input, variants D and AD]
    fc4 1024 -> 300, bias initialised to 1.0, ReLU
    out 300 -> C, bias 0 (softmax is in the loss)

``width`` multiplies the filter and unit counts (tests and the demo use narrow networks);
``image_size`` is S. Each ReLU is its own ``nn.ReLU`` module so attribution libraries (captum)
can hook it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

FC4_CODE_BATCH = 64  # the batch size that entered the authors' fc4 fan-in by mistake


@dataclass(frozen=True)
class ModelConfig:
    classes: int  # 8 or 6 (CK+), 7 (TFD)
    width: float = 1.0  # multiplies 64/128/256 filters and the 300 fc4 units
    image_size: int = 96  # S: input is 1 x S x S
    dropout: float = 0.0  # p on fc4's input; 0.5 for variants D and AD

    def widths(self) -> tuple[int, int, int, int]:
        return tuple(max(1, round(n * self.width)) for n in (64, 128, 256, 300))  # type: ignore[return-value]


class ZeroBiasCNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        f1, f2, f3, hidden = config.widths()
        self.conv1 = nn.Conv2d(1, f1, 5, padding=2, bias=False)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(f1, f2, 5, padding=2, bias=False)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.conv3 = nn.Conv2d(f2, f3, 5, padding=2, bias=False)
        self.relu3 = nn.ReLU()
        # Max over each quadrant: at S = 96 exactly MaxPool2d(12, 12) on the 24x24 conv3 map.
        self.quadrant_pool = nn.AdaptiveMaxPool2d(2)
        self.dropout = nn.Dropout(config.dropout)  # on fc4's input, as in the authors' code
        self.fc4 = nn.Linear(f3 * 4, hidden)
        self.relu4 = nn.ReLU()
        self.out = nn.Linear(hidden, config.classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Post-ReLU conv3 maps: (N, 1, S, S) -> (N, F3, S/4, S/4)."""
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.relu3(self.conv3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quadrant_pool(self.features(x))  # (N, F3, 2, 2)
        x = torch.flatten(x, 1)  # (N, F3 * 4): channel, then quadrant row, then column
        x = self.relu4(self.fc4(self.dropout(x)))
        return self.out(x)  # logits (N, C)


@torch.no_grad()
def init_weights(
    model: ZeroBiasCNN, k: float, fc4_init: str = "code", generator: torch.Generator | None = None
) -> None:
    """Gaussian init with one scale ``k`` for every layer: sigma = k / sqrt(fan_in).

    fc4_init="code" reproduces the authors' quirk: sigma = k / sqrt(64 * fan_in) (the batch size
    entered the product; k/256 at width 1); "fan_in" uses k / sqrt(fan_in) (k/32). fc4's bias
    starts at 1.0, the output bias at 0.
    """
    if fc4_init not in ("code", "fan_in"):
        raise ValueError(f"fc4_init: got {fc4_init!r}; valid: 'code', 'fan_in'")
    for layer in (model.conv1, model.conv2, model.conv3, model.fc4, model.out):
        fan_in = layer.weight[0].numel()
        if layer is model.fc4 and fc4_init == "code":
            fan_in *= FC4_CODE_BATCH
        std = k / math.sqrt(fan_in)
        weight = torch.randn(layer.weight.shape, generator=generator) * std
        layer.weight.copy_(weight)
    model.fc4.bias.fill_(1.0)
    model.out.bias.zero_()


def build_model(
    classes: int,
    width: float = 1.0,
    image_size: int = 96,
    dropout: float = 0.0,
    k: float | None = None,
    fc4_init: str = "code",
    seed: int | None = None,
) -> ZeroBiasCNN:
    """Create the zero-bias CNN; with ``k`` also initialise it (reproducibly from ``seed``).

    ``model_config(model)`` returns the keyword arguments that rebuild the same architecture.
    """
    model = ZeroBiasCNN(ModelConfig(classes=classes, width=width, image_size=image_size, dropout=dropout))
    if k is not None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        init_weights(model, k, fc4_init, generator)
    return model


def model_config(model: nn.Module) -> dict:
    """The ``build_model`` keyword arguments of a model (unwraps DDP and torch.compile)."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return asdict(inner.config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
