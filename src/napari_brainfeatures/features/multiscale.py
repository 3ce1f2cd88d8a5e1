"""Exact dense evaluation of a multi-scale :class:`BrainAreaCNN` (``context = K > 1``).

The network sees each window twice (see :mod:`napari_brainfeatures.models.cnn`):
its central ``V = P / K`` pixels (the fine view) and the whole window averaged
over K x K blocks (the context view).  FC1 is linear, so its pre-activation is
the sum of the two views' shares, and each share can be computed densely:

- **fine**: a :class:`~.fcn.DenseCNN` of the fine trunk on the tile shifted by
  the view's offset ``(P - V) / 2``, at the output stride ``s``;
- **context**: the block average is taken *once* per phase.  The window of
  output ``i`` starts at ``s * i``; its context view is ``avg_pool_K`` of the tile
  from phase ``phi = s * i mod K`` on, read from pixel ``(s * i - phi) / K``.
  Outputs of one phase are every ``K / g``-th one (``g = gcd(s, K)``) and lie
  ``s / g`` pooled pixels apart, so the context trunk runs as a ``DenseCNN`` of
  stride ``s / g`` on each of the ``K / g`` phases per axis.

The two shares are added (with FC1's bias), then FC2 and the head run as for
the single-view network.  Equal to per-patch evaluation up to float rounding
(``tests/test_features.py``).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from napari_brainfeatures.features.fcn import OUTPUTS, DenseCNN, _head
from napari_brainfeatures.models.cnn import BrainAreaCNN

__all__ = ["MultiScaleDense"]


class MultiScaleDense:
    """Fully convolutional stride-``stride`` evaluation of a multi-scale network.

    Same calling convention as :class:`~.fcn.DenseCNN`: ``ev(x, ny, nx)`` with a
    tile ``x`` ``(B, 1, Ly, Lx)`` whose pixel 0 is the top-left of the first window.
    """

    def __init__(self, model: BrainAreaCNN, *, stride: int, fc_outputs: int = 8192) -> None:
        cfg = model.config
        if cfg.context < 2:
            raise ValueError(f"not a multi-scale network (context {cfg.context}); use DenseCNN")
        self.model, self.stride, self.k = model, int(stride), cfg.context
        self.offset = cfg.view_offset
        g = math.gcd(self.stride, self.k)
        self.phases = self.k // g  # output residues per axis, each its own pooled image
        self.fine = DenseCNN(model, stride=self.stride, fc_outputs=fc_outputs, branch="fine")
        self.context = DenseCNN(
            model, stride=self.stride // g, fc_outputs=fc_outputs, branch="context"
        )
        self.patch = cfg.patch_size
        self.before = cfg.patch_size // 2
        self.exact = True
        self.E = math.lcm(self.fine.E, self.phases * self.context.E)

    def _phase(self, r: int, n: int) -> tuple[int, int]:
        """(tile pixel where residue ``r``'s pooling starts, its number of outputs)."""
        return self.stride * r, len(range(r, n, self.phases))

    def input_length(self, n_out: int) -> int:
        """Smallest tile side (pixels) that yields ``n_out`` outputs along one axis."""
        need = self.offset + self.fine.input_length(n_out)
        for r in range(min(self.phases, n_out)):
            start, m = self._phase(r, n_out)
            need = max(need, start + self.k * self.context.input_length(m))
        return need

    def estimate(self, t: int) -> float:
        """Rough peak working set (bytes) of a tile of ``t x t`` outputs (both branches)."""
        from napari_brainfeatures.features.fcn import estimate_bytes

        cfg = self.model.config
        fc1_maps = 3 * t * t * cfg.fc[0] * 4  # the two shares and their sum
        return 2 * estimate_bytes(self.fine, cfg, t) + fc1_maps

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, ny: int, nx: int, *, which: tuple[str, ...] = OUTPUTS
    ) -> dict[str, torch.Tensor]:
        """Evaluate a tile; ``(B, ch, ny, nx)`` maps as :class:`~.fcn.DenseCNN` gives."""
        o = self.offset
        h = self.fine(x[:, :, o:, o:], ny, nx)["fc1"]  # (B, fc0, ny, nx): fine share + bias
        for ry in range(min(self.phases, ny)):
            y0, my = self._phase(ry, ny)
            for rx in range(min(self.phases, nx)):
                x0, mx = self._phase(rx, nx)
                pooled = F.avg_pool2d(x[:, :, y0:, x0:], self.k)  # (B, 1, Ly/K, Lx/K)
                share = self.context(pooled, my, mx)["fc1"]  # (B, fc0, my, mx)
                h[:, :, ry :: self.phases, rx :: self.phases] += share
        out = _head(self.model, h.permute(0, 2, 3, 1).contiguous(), which)  # (B, ny, nx, ch)
        return {k: v.permute(0, 3, 1, 2) for k, v in out.items()}  # (B, ch, ny, nx)
