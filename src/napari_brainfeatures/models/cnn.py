"""The brain-area patch CNN of the micro-CT paper (paper 000).

Four convolutions (7x7, 5x5, 3x3, 3x3 kernels; 16, 32, 64, 128 filters), each
followed by ReLU and 2x2 max-pooling, then fully connected layers 1024 -> 64 ->
n_classes.  The 64-d output of the second FC layer is the feature vector.

By default the convolutions have **no padding**, so a dense (fully
convolutional) evaluation reproduces per-patch evaluation exactly; the
authors' variant (paddings 1, 1, 0, 0; 3-channel input) is available through
:meth:`CNNConfig.authors`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CNNConfig", "BrainAreaCNN"]


@dataclass
class CNNConfig:
    """Architecture of :class:`BrainAreaCNN`.

    Parameters
    ----------
    patch_size : int
        Side of the square input patch in pixels, default 128.
    n_classes : int
        Number of output classes, default 6.
    in_channels : int
        1 (grey, default) or 3 (the authors' grey-repeated input).
    channels, kernels, paddings : tuple of int
        Per convolution layer; defaults (16, 32, 64, 128), (7, 5, 3, 3), (0, 0, 0, 0).
    fc : tuple of int
        Hidden fully connected sizes, default (1024, 64); the last is the feature size.
    dropout : float
        Dropout before each hidden FC layer during training, default 0.3.
    """

    patch_size: int = 128
    n_classes: int = 6
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    kernels: tuple[int, ...] = (7, 5, 3, 3)
    paddings: tuple[int, ...] = (0, 0, 0, 0)
    fc: tuple[int, ...] = (1024, 64)
    dropout: float = 0.3
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.kernels = tuple(int(k) for k in self.kernels)
        self.paddings = tuple(int(p) for p in self.paddings)
        self.fc = tuple(int(f) for f in self.fc)
        if not (len(self.channels) == len(self.kernels) == len(self.paddings)):
            raise ValueError(
                "channels, kernels and paddings need one entry per conv layer, got "
                f"{self.channels!r}, {self.kernels!r}, {self.paddings!r}"
            )
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if len(self.fc) < 1:
            raise ValueError(f"fc needs at least one hidden size, got {self.fc!r}")
        if self.final_size < 1:
            raise ValueError(
                f"patch_size {self.patch_size} is too small for this network: "
                f"the last feature map would be {self.final_size} px wide"
            )

    @classmethod
    def authors(cls, **overrides: Any) -> CNNConfig:
        """The authors' padded variant: paddings (1, 1, 0, 0), 3-channel input."""
        kwargs: dict[str, Any] = {"paddings": (1, 1, 0, 0), "in_channels": 3}
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def final_size(self) -> int:
        """Side of the last conv block's output for one patch."""
        s = self.patch_size
        for k, p in zip(self.kernels, self.paddings, strict=True):
            s = (s + 2 * p - k + 1) // 2
        return s

    @property
    def flat_size(self) -> int:
        """Inputs to the first FC layer (3200 for the default 128 px network)."""
        return self.channels[-1] * self.final_size**2

    @property
    def n_features(self) -> int:
        """Size of the feature vector (the last hidden FC layer), default 64."""
        return self.fc[-1]

    @property
    def is_padded(self) -> bool:
        """True when any conv pads internally (dense evaluation then is not exact)."""
        return any(p > 0 for p in self.paddings)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["channels"], d["kernels"] = list(self.channels), list(self.kernels)
        d["paddings"], d["fc"] = list(self.paddings), list(self.fc)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CNNConfig:
        """Rebuild from :meth:`to_dict`, rejecting unknown keys."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown CNN config keys {sorted(unknown)!r}")
        return cls(**d)


class BrainAreaCNN(nn.Module):
    """Patch classifier whose last hidden layer gives the 64-d brain-area features.

    Input: float tensor ``(B, in_channels, patch_size, patch_size)`` scaled to
    [0, 1].  Output of :meth:`forward`: logits ``(B, n_classes)``.
    """

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CNNConfig()
        convs = []
        c_in = config.in_channels
        for c_out, k, p in zip(config.channels, config.kernels, config.paddings, strict=True):
            convs.append(nn.Conv2d(c_in, c_out, k, padding=p))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        sizes = (config.flat_size, *config.fc)
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.head = nn.Linear(config.fc[-1], config.n_classes)
        self.dropout = nn.Dropout(config.dropout)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv blocks only: ``(B, C, P, P) -> (B, 128, f, f)``."""
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)  # (B, C_i, H_i, W_i)
        return x

    def features(self, x: torch.Tensor, *, relu: bool = True) -> torch.Tensor:
        """The last hidden layer's activations ``(B, n_features)``.

        Parameters
        ----------
        x : tensor ``(B, in_channels, P, P)``
        relu : bool
            True (default): post-ReLU, non-negative (what NMF needs).  False:
            pre-ReLU, as in the authors' code.
        """
        h = self.conv_features(x).flatten(1)  # (B, flat_size)
        for i, fc in enumerate(self.fcs):
            h = fc(self.dropout(h))  # (B, fc_i)
            if i < len(self.fcs) - 1 or relu:
                h = F.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)``."""
        return self.head(self.dropout(self.features(x, relu=True)))
