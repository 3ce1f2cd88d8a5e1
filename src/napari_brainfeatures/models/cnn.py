"""The brain-area patch CNN of the micro-CT paper (paper 000).

Four convolutions (7x7, 5x5, 3x3, 3x3 kernels; 16, 32, 64, 128 filters), each
followed by ReLU and 2x2 max-pooling, then fully connected layers 1024 -> 64 ->
n_classes.  The 64-d output of the second FC layer is the feature vector.

By default the convolutions have **no padding**, so a dense (fully
convolutional) evaluation reproduces per-patch evaluation exactly; the
authors' variant (paddings 1, 1, 0, 0; 3-channel input) is available through
:meth:`CNNConfig.authors`.

**Multi-scale input** (``context = K > 1``): the network reads a window of
``patch_size`` pixels and sees it twice, as a *fine view* (its central
``patch_size / K`` pixels) and as a *context view* (the whole window averaged
over K x K blocks), both ``view_size = patch_size / K`` wide.  Each view has its
own convolution trunk (same layout); FC1 reads both.  So a 64 px patch keeps
the context of 128 px (K = 2) and a band narrower than 128 px can train on
interior 64 px views.  ``context = 1`` (the default) is the paper's network.

:func:`save_cnn` / :func:`load_cnn` write and read self-describing model files
(safetensors weights; config, class table, patch size, normalisation and
training record as JSON); :func:`to_input` turns raw patches into the network's
input (scaled to [0, 1], grey repeated for 3-channel models).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.checkpoint import (
    ModelFileError,
    ModelMismatchError,
    check_expected,
    check_image_dtype,
    load_model,
    save_checkpoint,
)
from napari_brainfeatures.models.schema import CNN_FIELDS, JSONConfig, as_int, check_fields

__all__ = [
    "KIND",
    "CNNConfig",
    "BrainAreaCNN",
    "ModelMismatchError",
    "fold_batch_norm",
    "fold_input_normalisation",
    "check_image_dtype",
    "input_scale_for",
    "to_input",
    "save_cnn",
    "load_cnn",
]

KIND = "BrainAreaCNN"


@dataclass
class CNNConfig(JSONConfig):
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
    context : int
        1 (default): one view of ``patch_size``.  K > 1: the multi-scale input
        (module docstring): fine and context views of ``patch_size / K`` pixels;
        ``patch_size`` must be a multiple of K and of the same parity as the view.
    """

    FIELDS: ClassVar = CNN_FIELDS
    WHAT: ClassVar = "CNN"

    patch_size: int = 128
    n_classes: int = 6
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    kernels: tuple[int, ...] = (7, 5, 3, 3)
    paddings: tuple[int, ...] = (0, 0, 0, 0)
    fc: tuple[int, ...] = (1024, 64)
    dropout: float = 0.3
    context: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels = tuple(as_int(c) for c in self.channels)
        self.kernels = tuple(as_int(k) for k in self.kernels)
        self.paddings = tuple(as_int(p) for p in self.paddings)
        self.fc = tuple(as_int(f) for f in self.fc)
        self.patch_size, self.n_classes = as_int(self.patch_size), as_int(self.n_classes)
        self.in_channels, self.context = as_int(self.in_channels), as_int(self.context)
        check_fields(self.to_dict(), CNN_FIELDS, "CNN")  # types and bounds, naming the field
        if self.context > 1 and self.is_padded:
            raise ValueError(
                f"the multi-scale input (context {self.context}) needs unpadded convolutions "
                f"(exact dense maps), got paddings {self.paddings!r}"
            )
        if self.patch_size % self.context or (self.patch_size - self.view_size) % 2:
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of context {self.context} "
                "whose central view (patch_size / context) is centred on whole pixels"
            )
        if not (len(self.channels) == len(self.kernels) == len(self.paddings)):
            raise ValueError(
                "channels, kernels and paddings need one entry per conv layer, got "
                f"{self.channels!r}, {self.kernels!r}, {self.paddings!r}"
            )
        if self.final_size < 1:
            views = f" (views of {self.view_size} px with context {self.context})"
            raise ValueError(
                f"patch_size {self.patch_size} is too small for this network"
                f"{views if self.context > 1 else ''}: the last feature map would be "
                f"{self.final_size} px wide; the smallest patch_size it takes is "
                f"{self.smallest_patch()}"
            )

    @classmethod
    def authors(cls, **overrides: Any) -> CNNConfig:
        """The authors' padded variant: paddings (1, 1, 0, 0), 3-channel input."""
        kwargs: dict[str, Any] = {"paddings": (1, 1, 0, 0), "in_channels": 3}
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def view_size(self) -> int:
        """Side of each view the trunks read: ``patch_size // context``."""
        return self.patch_size // self.context

    def smallest_patch(self) -> int:
        """The smallest patch size this layout and context take (a last map of 1 px)."""
        s = 1
        for k, p in zip(reversed(self.kernels), reversed(self.paddings), strict=True):
            s = 2 * s + k - 1 - 2 * p  # the smallest input of each conv + 2x2 pooling
        c = self.context
        size = max(s, 1) * c
        while (size - size // c) % 2:  # the central view on whole pixels
            size += c
        return size

    @property
    def view_offset(self) -> int:
        """Where the fine view starts inside the window (0 without context)."""
        return (self.patch_size - self.view_size) // 2

    @property
    def final_size(self) -> int:
        """Side of the last conv block's output for one view (the patch without context)."""
        s = self.view_size
        for k, p in zip(self.kernels, self.paddings, strict=True):
            s = (s + 2 * p - k + 1) // 2
        return s

    @property
    def flat_size(self) -> int:
        """Inputs to the first FC layer (3200 for the default 128 px network; both views)."""
        return self.channels[-1] * self.final_size**2 * (2 if self.context > 1 else 1)

    @property
    def n_features(self) -> int:
        """Size of the feature vector (the last hidden FC layer), default 64."""
        return self.fc[-1]

    @property
    def is_padded(self) -> bool:
        """True when any conv pads internally (dense evaluation then is not exact)."""
        return any(p > 0 for p in self.paddings)


class BrainAreaCNN(nn.Module):
    """Patch classifier whose last hidden layer gives the 64-d brain-area features.

    Input: float tensor ``(B, in_channels, patch_size, patch_size)`` scaled to
    [0, 1].  Output of :meth:`forward`: logits ``(B, n_classes)``.
    """

    def __init__(self, config: CNNConfig | None = None, *, batch_norm: bool = False) -> None:
        super().__init__()
        self.config = config = config or CNNConfig()
        self.convs = _trunk(config)
        if config.context > 1:  # the context view's own trunk
            self.ctx_convs = _trunk(config)
        # training only: batch normalisation after each conv, folded (fold_batch_norm) after
        norms = [nn.ModuleList(nn.BatchNorm2d(c) for c in config.channels) for _ in range(2)]
        self.norms = norms[0] if batch_norm else None
        self.ctx_norms = norms[1] if batch_norm and config.context > 1 else None
        sizes = (config.flat_size, *config.fc)
        self.fcs = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.head = nn.Linear(config.fc[-1], config.n_classes)
        self.dropout = nn.Dropout(config.dropout)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """Conv blocks only: ``(B, C, P, P) -> (B, 128, f, f)`` (both views: 256 channels)."""
        cfg = self.config
        if cfg.context == 1:
            return _run_trunk(self.convs, x, self.norms)
        o, v = cfg.view_offset, cfg.view_size
        fine = _run_trunk(self.convs, x[..., o : o + v, o : o + v], self.norms)  # (B, 128, f, f)
        wide = F.avg_pool2d(x, cfg.context)  # (B, C, V, V): the context view
        return torch.cat([fine, _run_trunk(self.ctx_convs, wide, self.ctx_norms)], dim=1)

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


def _trunk(config: CNNConfig) -> nn.ModuleList:
    convs, c_in = [], config.in_channels
    for c_out, k, p in zip(config.channels, config.kernels, config.paddings, strict=True):
        convs.append(nn.Conv2d(c_in, c_out, k, padding=p))
        c_in = c_out
    return nn.ModuleList(convs)


def _run_trunk(
    convs: nn.ModuleList, x: torch.Tensor, norms: nn.ModuleList | None = None
) -> torch.Tensor:
    for i, conv in enumerate(convs):
        h = conv(x) if norms is None else norms[i](conv(x))  # (B, C_i, 2 H_i, 2 W_i)
        x = F.max_pool2d(F.relu(h), 2)  # (B, C_i, H_i, W_i)
    return x


def fold_batch_norm(model: BrainAreaCNN) -> BrainAreaCNN:
    """A copy of ``model`` with its batch normalisation folded into the convolutions.

    In eval mode a batch normalisation is an affine map per channel, which the
    convolution before it absorbs exactly (weights times ``gamma / sqrt(var +
    eps)``, bias alike): the copy is a plain :class:`BrainAreaCNN`.
    """
    folded = copy.deepcopy(model)
    pairs = [(folded.convs, folded.norms), (getattr(folded, "ctx_convs", None), folded.ctx_norms)]
    for convs, norms in pairs:
        if convs is None or norms is None:
            continue
        for conv, bn in zip(convs, norms, strict=True):
            conv, bn = cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, bn)
            with torch.no_grad():
                g = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
                conv.weight.mul_(g[:, None, None, None])
                conv.bias.copy_((conv.bias - bn.running_mean) * g + bn.bias)
    folded.norms = folded.ctx_norms = None
    return folded


# -- input normalisation --------------------------------------------------------
def input_scale_for(dtype: Any) -> tuple[float, str]:
    """Scale factor to [0, 1] for an image dtype and its description.

    Integer images are divided by their dtype's maximum (``"uint8/255"`` for
    micro-CT bytes); float images are taken as already in [0, 1].
    """
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        top = int(np.iinfo(dt).max)
        return 1.0 / top, f"{dt.name}/{top}"
    if dt.kind == "f":
        return 1.0, "float (as is, expected in [0, 1])"
    raise ValueError(f"patches must be integer or float images, got dtype {dt!r}")


def to_input(
    patches: np.ndarray | torch.Tensor,
    *,
    in_channels: int = 1,
    scale: float | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Raw patches ``(B, P, P)`` -> network input ``(B, in_channels, P, P)`` float32.

    Parameters
    ----------
    patches : array or tensor (B, P, P)
        uint8 (divided by 255), other integer types (divided by their maximum) or
        float (kept as is).
    in_channels : int
        1, or 3 for the authors' variant (the grey patch repeated).
    scale : float, optional
        Override the dtype's scale factor.
    device : str or torch.device, optional
        Where the result goes; default the input's device (CPU for numpy).
    """
    t = torch.as_tensor(patches)
    if t.ndim != 3:
        raise ValueError(f"patches must be (B, P, P), got shape {tuple(t.shape)!r}")
    if scale is None:
        scale = input_scale_for(str(t.dtype).removeprefix("torch."))[0]
    if device is not None:
        t = t.to(device, non_blocking=True)
    x = t.to(torch.float32, copy=True).mul_(scale)[:, None]  # (B, 1, P, P); never the input
    return x.expand(-1, in_channels, -1, -1) if in_channels > 1 else x  # (B, C, P, P)


def fold_input_normalisation(model: BrainAreaCNN, mean: float, std: float) -> BrainAreaCNN:
    """A copy of ``model`` taking raw input ``x`` where ``model`` took ``(x - mean) / std``.

    The normalisation is folded into the first convolution (weights / std, bias
    minus mean / std times the weight sums), so the copy reads plain [0, 1]
    patches like every model file.  Exact (up to float rounding) because the
    first convolution does not pad; a padded one would see different borders.
    """
    if model.config.paddings[0] != 0:
        raise ValueError(
            "cannot fold an input normalisation into a first convolution with padding "
            f"{model.config.paddings[0]}: the zero padding would change meaning"
        )
    if not std > 0:
        raise ValueError(f"std must be positive, got {std!r}")
    folded = copy.deepcopy(model)
    # the context view is a block average: it standardises alike, its trunk folds alike
    trunks = [folded.convs] + ([folded.ctx_convs] if model.config.context > 1 else [])
    for trunk in trunks:
        conv = cast(nn.Conv2d, trunk[0])
        with torch.no_grad():
            w = conv.weight.detach().clone()  # (C1, C0, k, k)
            conv.weight.copy_(w / std)
            if conv.bias is not None:
                conv.bias.sub_(w.sum(dim=(1, 2, 3)) * (mean / std))  # (C1,)
    return folded


# -- model files (see models.checkpoint; the mismatch checks live there) ---------
def save_cnn(
    path: str | os.PathLike[str],
    model: BrainAreaCNN,
    *,
    classes: ClassTable,
    meta: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` atomically with its class table and description.

    The file is a :func:`~.checkpoint.save_checkpoint` model file of kind
    ``"BrainAreaCNN"``; :func:`load_cnn` rebuilds the network from it alone.

    Parameters
    ----------
    path : path-like
        ``.safetensors`` is appended when missing.
    model : BrainAreaCNN
    classes : ClassTable
        One class per output, in output order.
    meta : dict, optional
        Extra JSON-ready description (normalisation, voxel size, training record).
        ``classes``, ``patch_size`` and ``kind`` are filled in here.
    overwrite : bool
        If False, refuse to replace an existing file.
    """
    if model.norms is not None:
        raise ValueError(
            "the model still has its training-time batch normalisation; save "
            "fold_batch_norm(model), which dense maps and model files expect"
        )
    if len(classes) != model.config.n_classes:
        raise ValueError(
            f"the class table has {len(classes)} classes but the model "
            f"{model.config.n_classes} outputs; pass one class per output"
        )
    full = {"normalisation": "uint8/255", **(meta or {})}
    full |= {"classes": classes.to_dict(), "patch_size": model.config.patch_size}
    return save_checkpoint(
        path, model, kind=KIND, config=model.config.to_dict(), meta=full, overwrite=overwrite
    )


def load_cnn(
    path: str | os.PathLike[str],
    *,
    expect_classes: ClassTable | list[str] | None = None,
    expect_patch_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[BrainAreaCNN, dict[str, Any]]:
    """Rebuild a :class:`BrainAreaCNN` from its file; nothing in the file is executed.

    Parameters
    ----------
    path : path-like
        A file written by :func:`save_cnn`.
    expect_classes : ClassTable or list of str, optional
        Refuse a model trained for other classes (compared by id and name for
        a table, by name for a list; order matters: it is the output order).
    expect_patch_size : int, optional
        Refuse a model trained on another patch size.
    device : str or torch.device
        Default ``"cpu"``.

    Returns
    -------
    model, meta
        The model in eval mode on ``device``; ``meta`` with ``classes`` as a
        :class:`ClassTable` under ``"class_table"`` too.

    Raises
    ------
    ModelFileError
        Missing, truncated, pickled or foreign file, or another architecture.
    ModelMismatchError
        When the stated expectations are not met.
    """

    def check(config: CNNConfig, meta: dict[str, Any]) -> None:
        table = _table_from_meta(meta, config.n_classes, path)
        expect = {"expect_classes": expect_classes, "expect_patch_size": expect_patch_size}
        check_expected(path, table, config.patch_size, **expect)
        meta["class_table"] = table

    return load_model(
        path, kind=KIND, config_cls=CNNConfig, build=BrainAreaCNN, check=check, device=device
    )


def _table_from_meta(meta: dict[str, Any], n_classes: int, path: Any) -> ClassTable:
    raw = meta.get("classes")
    if raw is None:
        return ClassTable.from_names([f"class{i + 1}" for i in range(n_classes)])
    try:
        table = ClassTable.from_dict(raw if isinstance(raw, dict) else {"classes": raw})
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{str(path)!r} has an invalid class table: {err}") from None
    if len(table) != n_classes:
        raise ModelFileError(
            f"{str(path)!r} lists {len(table)} classes for a network with {n_classes} outputs"
        )
    return table
