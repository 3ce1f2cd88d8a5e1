"""Exact sliding-window evaluation of :class:`BrainAreaCNN` on whole tiles.

Two evaluators share one calling convention, ``ev(x, ny, nx) -> dict``: ``x``
is a tile ``(B, 1, Ly, Lx)`` in [0, 1] whose pixel 0 is the top-left of the
first patch, and the result holds ``(B, ch, ny, nx)`` maps of the patches whose
top-left corners are ``stride * (i, j)``:

- :class:`DenseCNN` -- the network as a fully convolutional net.  Pooling layers
  whose offsets the stride needs become *fragments* (shift-and-stitch in its
  space-to-batch form: a stride-1 pool, then the four 2x2 phases go to the
  batch axis), the others stay plain 2x2 pools; FC1 becomes a ``f x f``
  convolution over each fragment (strided when the stride is not a power of
  two), FC2 and the head 1x1 convolutions; fragments are stitched back.  Exact
  for unpadded networks; for padded ones it is the usual (inexact) dense
  approximation, see :func:`napari_brainfeatures.features.run.measure_padding_deviation`.
- :class:`PatchCNN` -- batched per-patch evaluation (exact for any network).

Output keys: ``features`` (post-ReLU, >= 0), ``features_pre`` (pre-ReLU),
``probs`` (softmax) and ``areas`` (argmax class index 0..K-1, int64; -1 where the
logits are not finite, e.g. a NaN pixel inside the patch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_brainfeatures.features.options import OUTPUTS
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig

__all__ = [
    "OUTPUTS",
    "DenseCNN",
    "PatchCNN",
    "choose_tile",
    "estimate_bytes",
    "make_evaluator",
    "padded_twin_geometry",
]


def padded_twin_geometry(model: BrainAreaCNN) -> tuple[int, int]:
    """``(patch, shift)`` of the unpadded net that densely approximates a padded one.

    Internal zero-padding of ``p_k`` pixels at conv ``k`` is, in a dense
    evaluation, replaced by real neighbouring pixels: the dense net sees a patch
    ``2 * shift`` pixels larger, starting ``shift = sum p_k 2**k`` pixels earlier.
    For an unpadded network this is ``(patch_size, 0)``.
    """
    cfg = model.config
    shift = sum(p * 2**k for k, p in enumerate(cfg.paddings))
    size = cfg.patch_size + 2 * shift
    for k in cfg.kernels:
        size = (size - k + 1) // 2
    if size != cfg.final_size:
        raise NotImplementedError(
            f"no dense twin for paddings {cfg.paddings!r} at patch {cfg.patch_size}"
        )
    return cfg.patch_size + 2 * shift, shift


def _layers(model: BrainAreaCNN) -> tuple[list[nn.Conv2d], list[nn.Linear], nn.Linear]:
    """The model's convolutions, hidden FC layers and head, typed."""
    return list(model.convs), list(model.fcs), model.head  # type: ignore[return-value, arg-type]


def _head(model: BrainAreaCNN, h: torch.Tensor, which: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """FC layers after FC1, and the head, on channels-last ``h`` (N, H, W, fc0) pre-ReLU.

    Returns ``(N, H, W, ch)`` tensors (channels last: every layer is one GEMM).
    """
    _, fcs, head = _layers(model)
    for fc in fcs[1:]:
        h = F.linear(h.relu_(), fc.weight, fc.bias)  # (N, H, W, fc_i)
    out: dict[str, torch.Tensor] = {}
    post = F.relu(h)
    if "features_pre" in which:
        out["features_pre"] = h.float()
    if "features" in which:
        out["features"] = post.float()
    if "probs" in which or "areas" in which:
        logits = F.linear(post, head.weight, head.bias).float()  # (N, H, W, K)
        if "probs" in which:
            out["probs"] = torch.softmax(logits, dim=-1)
        if "areas" in which:
            best = logits.argmax(dim=-1, keepdim=True)  # (N, H, W, 1)
            finite = torch.isfinite(logits).all(dim=-1, keepdim=True)  # NaN argmax is arbitrary
            out["areas"] = torch.where(finite, best, torch.full_like(best, -1))
    return out


def _pool_fragments(x: torch.Tensor) -> torch.Tensor:
    """Stride-1 2x2 max-pool, then its four phases to the batch: (N, C, H, W) -> (4N, C, h, w).

    Fragment ``(ay * 2 + ax) * N + n`` holds ``maxpool2x2(x[n, :, ay:, ax:])``; two
    shifted maxima are several times faster than ``max_pool2d(stride=1)`` on CPU.
    """
    n, c, h, w = x.shape
    h2, w2 = (h - 1) // 2, (w - 1) // 2
    a = torch.maximum(x[:, :, :-1], x[:, :, 1:])[:, :, : 2 * h2]  # (N, C, 2h, W)
    a = a.reshape(n, c, h2, 2, w).permute(3, 0, 1, 2, 4)  # (2, N, C, h, W)
    b = torch.maximum(a[..., :-1], a[..., 1:])[..., : 2 * w2].reshape(2, n, c, h2, w2, 2)
    return b.permute(0, 5, 1, 2, 3, 4).reshape(4 * n, c, h2, w2)  # (4N, C, h, w)


class DenseCNN:
    """Fully convolutional stride-``stride`` evaluation of a :class:`BrainAreaCNN`.

    Parameters
    ----------
    model : BrainAreaCNN
        Weights are used as they are (no dropout: evaluation only).
    stride : int
        Distance in pixels between output patches, 1 <= stride.
    fc_outputs : int
        Outputs per FC1 call (bounds the ~20 KB/output im2col working set), default 8192.
    """

    def __init__(
        self, model: BrainAreaCNN, *, stride: int, fc_outputs: int = 8192, branch: str = ""
    ) -> None:
        if int(stride) < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        cfg = model.config
        if (cfg.context > 1) != bool(branch):
            raise ValueError(
                "a multi-scale network is evaluated branch by branch (make_evaluator does it)"
            )
        self.model, self.stride, self.fc_outputs = model, int(stride), max(int(fc_outputs), 1)
        self.branch = branch  # "", or "fine" / "context": FC1's share of that view, no head
        if branch:
            self.patch, shift = cfg.view_size, 0
        else:
            self.patch, shift = padded_twin_geometry(model)
        self.before = cfg.patch_size // 2 + shift  # output pixel y <- patch top-left y - before
        self.exact = not cfg.is_padded
        self.kernels = cfg.kernels
        self.final = cfg.final_size
        n_pool = len(cfg.kernels)
        self.D = 2**n_pool  # total downsampling of the conv trunk
        g = math.gcd(self.stride, self.D)
        self.n_plain = int(math.log2(g))  # first pools stay plain 2x2 pools
        self.E = self.D // g  # fragments per axis
        self.q = self.stride // g  # odd: FC1 conv stride inside a fragment
        self.convs, fcs, _ = _layers(model)
        if branch == "context":
            self.convs = list(model.ctx_convs)  # type: ignore[arg-type]
        w1 = self.convs[0].weight
        # Identical grey input channels: sum conv1 over them (3x cheaper, same maths).
        self.w1 = w1.sum(dim=1, keepdim=True) if w1.shape[1] > 1 else w1  # (16, 1, k, k)
        fc1, c = fcs[0], cfg.channels[-1]
        w = fc1.weight.reshape(fc1.weight.shape[0], -1, self.final, self.final)  # (fc0, C/2C, f, f)
        w = w[:, c:] if branch == "context" else w[:, :c]  # that view's share of FC1
        self.fc1_w = w.contiguous(memory_format=torch.channels_last)  # (fc0, C, f, f)
        self.fc1_b = torch.zeros_like(fc1.bias) if branch == "context" else fc1.bias
        # Per-axis residue -> (crop c inside the fragment, output phase i_r).
        rho = np.arange(self.E)
        if self.q > 1:
            c = (-rho * pow(self.E, -1, self.q)) % self.q
        else:
            c = np.zeros_like(rho)
        self._crop, self._phase = c, (self.E * c + rho) // self.q

    # -- geometry ---------------------------------------------------------
    def trunk_length(self, length: int) -> int:
        """Per-fragment length of the conv trunk's output for an input of ``length``."""
        for i, k in enumerate(self.kernels):
            length -= k - 1
            if length < 2:
                return 0
            length = length // 2 if i < self.n_plain else (length - 1) // 2
        return length

    def per_fragment(self, n_out: int) -> int:
        """Outputs per fragment along one axis for ``n_out`` outputs."""
        return -(-n_out // self.E)

    def input_length(self, n_out: int) -> int:
        """Smallest tile side (pixels) that yields ``n_out`` outputs along one axis."""
        m = self.per_fragment(n_out)
        need = (self.q - 1) + self.q * (m - 1) + self.final
        lo, hi = 1, self.D * (need + 2) + self.patch
        while lo < hi:
            mid = (lo + hi) // 2
            if self.trunk_length(mid) >= need:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- evaluation -------------------------------------------------------
    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Conv trunk on ``x`` (B, 1, Ly, Lx) -> fragments (F*B, C, h, w) and residues (F,)."""
        res_y, res_x = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        for i, conv in enumerate(self.convs):
            w = self.w1 if i == 0 else conv.weight
            bias = conv.bias.to(x.dtype) if conv.bias is not None else None
            x = F.conv2d(x, w.to(x.dtype), bias).relu_()  # (N, C_i, H, W)
            if i < self.n_plain:
                x = F.max_pool2d(x, 2)  # (N, C_i, H/2, W/2)
                continue
            x = _pool_fragments(x)  # (4N, C_i, (H-1)/2, (W-1)/2)
            step = 2**i
            res_y = np.concatenate([res_y + ay * step for ay in (0, 1) for _ in (0, 1)])
            res_x = np.concatenate([res_x + ax * step for _ in (0, 1) for ax in (0, 1)])
        return x, res_y, res_x

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, ny: int, nx: int, *, which: tuple[str, ...] = OUTPUTS
    ) -> dict[str, torch.Tensor]:
        """Evaluate a tile; see the module docstring for shapes."""
        b = x.shape[0]
        frags, res_y, res_x = self.trunk(x)  # (F*B, C, h, w)
        g = self.D // self.E
        ry, rx = res_y // g, res_x // g  # residues in units of g, 0..E-1
        my, mx = self.per_fragment(ny), self.per_fragment(nx)
        span_y = self.q * (my - 1) + self.final
        span_x = self.q * (mx - 1) + self.final
        n_frag = len(ry)
        if self.q > 1:  # each fragment starts its strided FC1 at its own offset
            frags = torch.cat(
                [
                    frags[f * b : (f + 1) * b, :, cy : cy + span_y, cx : cx + span_x]
                    for f, (cy, cx) in enumerate(zip(self._crop[ry], self._crop[rx], strict=True))
                ]
            )  # (F*B, C, span_y, span_x)
        else:
            frags = frags[:, :, :span_y, :span_x]
        per_frag = b * my * mx
        group = max(1, self.fc_outputs // max(per_frag, 1))
        rows = max(1, self.fc_outputs // max(b * mx, 1)) if group == 1 else my
        parts: dict[str, list[torch.Tensor]] = {}
        for f0 in range(0, n_frag, group):
            fx = frags[f0 * b : min(n_frag, f0 + group) * b]
            row_parts: dict[str, list[torch.Tensor]] = {}
            for r0 in range(0, my, rows):
                r1 = min(my, r0 + rows)
                xin = fx[:, :, r0 * self.q : (r1 - 1) * self.q + self.final]
                xin = xin.contiguous(memory_format=torch.channels_last)
                h = F.conv2d(xin, self.fc1_w.to(x.dtype), self.fc1_b.to(x.dtype), stride=self.q)
                h = h.permute(0, 2, 3, 1)  # (n, r1-r0, mx, fc0), contiguous: channels last
                done = {"fc1": h} if self.branch else _head(self.model, h, which)
                for k, t in done.items():
                    row_parts.setdefault(k, []).append(t)
            for k, rows_k in row_parts.items():
                parts.setdefault(k, []).append(torch.cat(rows_k, dim=1))
        order = np.argsort(self._phase[ry] * self.E + self._phase[rx], kind="stable")
        idx = torch.as_tensor(order, device=x.device)
        out = {}
        for k, pieces in parts.items():
            z = torch.cat(pieces).reshape(n_frag, b, my, mx, -1)[idx]  # (F, B, my, mx, ch)
            ch = z.shape[-1]
            z = z.reshape(self.E, self.E, b, my, mx, ch).permute(2, 5, 3, 0, 4, 1)
            out[k] = z.reshape(b, ch, my * self.E, mx * self.E)[:, :, :ny, :nx]
        return out


class PatchCNN:
    """Batched per-patch evaluation: exact for any network (padded ones included).

    Parameters
    ----------
    model : BrainAreaCNN
    stride : int
    batch : int
        Patches per forward pass, default 256.
    """

    def __init__(self, model: BrainAreaCNN, *, stride: int, batch: int = 256) -> None:
        if int(stride) < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        self.model, self.stride, self.batch = model, int(stride), max(int(batch), 1)
        self.patch = model.config.patch_size
        self.before = self.patch // 2
        self.exact = True

    def input_length(self, n_out: int) -> int:
        """Tile side (pixels) that yields ``n_out`` outputs along one axis."""
        return self.stride * (n_out - 1) + self.patch

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, ny: int, nx: int, *, which: tuple[str, ...] = OUTPUTS
    ) -> dict[str, torch.Tensor]:
        """Evaluate a tile patch by patch; see the module docstring for shapes."""
        m = self.model
        b, p, s = x.shape[0], self.patch, self.stride
        cin = m.config.in_channels
        win = x.unfold(2, p, s).unfold(3, p, s)[:, :, :ny, :nx]  # (B, 1, ny, nx, P, P)
        win = win.permute(0, 2, 3, 1, 4, 5).reshape(-1, 1, p, p)  # (B*ny*nx, 1, P, P)
        parts: dict[str, list[torch.Tensor]] = {}
        for i in range(0, win.shape[0], self.batch):
            xb = win[i : i + self.batch].expand(-1, cin, p, p)  # (n, cin, P, P)
            h = m.conv_features(xb).flatten(1)  # (n, flat)
            h = _layers(m)[1][0](h)[:, None, None, :]  # (n, 1, 1, fc0)
            for k, v in _head(m, h, which).items():
                parts.setdefault(k, []).append(v[:, 0, 0])
        return {
            k: torch.cat(v).reshape(b, ny, nx, -1).permute(0, 3, 1, 2) for k, v in parts.items()
        }


def make_evaluator(model: BrainAreaCNN, method: str, stride: int, batch: int) -> Any:
    """:class:`DenseCNN` (``"dense"``) or :class:`PatchCNN` (``"patch"``).

    A multi-scale network (``context > 1``) is evaluated densely by
    :class:`~.multiscale.MultiScaleDense` (both views, exact).
    """
    if method == "patch":
        return PatchCNN(model, stride=stride, batch=batch)
    if model.config.context > 1:
        from napari_brainfeatures.features.multiscale import MultiScaleDense

        return MultiScaleDense(model, stride=stride, fc_outputs=batch)
    return DenseCNN(model, stride=stride, fc_outputs=batch)


def choose_tile(ev: DenseCNN | PatchCNN, cfg: CNNConfig, budget: float, method: str) -> int:
    """Largest tile (outputs per side, multiple of the fragment count) within ``budget`` bytes."""
    unit = getattr(ev, "E", 1)
    cap = 64 if method == "patch" else 256
    best = unit
    for t in range(unit, max(cap, unit) + 1, unit):
        if estimate_bytes(ev, cfg, t) <= budget:
            best = t
    return best


def estimate_bytes(ev: DenseCNN | PatchCNN, cfg: CNNConfig, t: int) -> float:
    """Rough peak working set (bytes) of one tile of ``t x t`` outputs."""
    if hasattr(ev, "estimate"):  # a multi-scale evaluator knows its two branches
        return float(ev.estimate(t))
    n_out = t * t
    results = n_out * (2 * cfg.n_features + 2 * cfg.n_classes + 2) * 4 * 3
    if isinstance(ev, PatchCNN):
        per_patch = cfg.patch_size**2 * (1 + 2 * cfg.channels[0]) * 4
        return ev.input_length(t) ** 2 * 4 * 2 + ev.batch * per_patch + results
    side = ev.input_length(t)
    dens, c_in, peak = 1.0, 1, 0.0
    for i, c in enumerate(cfg.channels):
        after = dens / 4 if i < ev.n_plain else dens
        peak = max(peak, side * side * 4 * (c_in * dens + c * dens + 2 * c * after))
        dens, c_in = after, c
    frag = side * side * dens * c_in * 4
    fc = min(ev.fc_outputs, n_out) * (cfg.flat_size + 3 * cfg.fc[0]) * 4
    return peak + frag + fc + results
