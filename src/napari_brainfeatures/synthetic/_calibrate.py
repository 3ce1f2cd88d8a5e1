"""Re-tune the micro-CT's per-region brightness after a texture change.

``python -m napari_brainfeatures.synthetic._calibrate [ITERATIONS]`` renders two
sections of the default sample, measures each texture region's mean and standard
deviation of grey values, and iterates ``_render.BACKGROUND`` (additive) and
``_render.TEX_GAIN`` (scales cells and fibres) until every region has mean
128 and standard deviation 24.  It prints the two arrays to paste into
``_render.py``.  Not used at run time.
"""

from __future__ import annotations

import sys

import numpy as np

from napari_brainfeatures.synthetic import _render as R
from napari_brainfeatures.synthetic._geometry import Geometry, region_index
from napari_brainfeatures.synthetic.microct import DEFAULT_SHAPE

TARGET_MEAN, TARGET_STD = 128.0, 24.0
NOISE_VAR = 8.8**2  # the blurred noise's variance: the part of the spread no gain can change


def region_stats(
    geom: Geometry, sections: tuple[int, ...] = (20, 80)
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of grey values per texture region (12,)."""
    s1, s2, n = np.zeros(12), np.zeros(12), np.zeros(12)
    _, h, w = geom.shape
    for z in sections:
        img = R.render_box(geom, (z, 0, 0), (z + 1, h, w))[0].astype(float)
        lab = R.render_labels(geom, (z, 0, 0), (z + 1, h, w))
        reg = region_index(lab["areas"], lab["layers"])[0]
        s1 += np.bincount(reg.ravel(), img.ravel(), 12)
        s2 += np.bincount(reg.ravel(), img.ravel() ** 2, 12)
        n += np.bincount(reg.ravel(), minlength=12)
    mean = s1 / np.maximum(n, 1)
    return mean, np.sqrt(np.maximum(s2 / np.maximum(n, 1) - mean**2, 0))


def calibrate(iterations: int = 4) -> None:
    geom = Geometry(DEFAULT_SHAPE, 0)
    for it in range(iterations):
        mean, std = region_stats(geom)
        print(f"{it}: mean {np.round(mean[1:], 1)}\n   std  {np.round(std[1:], 1)}")
        unit = np.maximum(std**2 - NOISE_VAR, 1) / np.maximum(R.TEX_GAIN**2, 1e-6)
        gain = np.sqrt(max(TARGET_STD**2 - NOISE_VAR, 1) / unit)
        R.BACKGROUND[1:] += (TARGET_MEAN - mean[1:]).astype(np.float32)
        R.TEX_GAIN[1:] = np.clip(0.3 * R.TEX_GAIN[1:] + 0.7 * gain[1:], 0.3, 3)
    print("BACKGROUND =", [round(float(x), 1) for x in R.BACKGROUND])
    print("TEX_GAIN =", [round(float(x), 3) for x in R.TEX_GAIN])


if __name__ == "__main__":
    calibrate(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
