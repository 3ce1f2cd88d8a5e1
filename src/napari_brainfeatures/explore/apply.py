"""A saved live classifier applied to a whole slice of a feature store, headless.

The Explore dock's live classifier predicts the visible region; a model saved from
it (:func:`~.live.save_live_model`) can label whole slices, of the store it was
painted on or of another one made by the same CNN (same features), with no viewer:
:func:`apply_live_model`, or ``brainfeatures apply-live``.  The slice is read in
bands of rows, so a slice larger than memory is fine; the context the classifier
was fitted with (the features' mean over ``context_px`` image pixels) is recomputed
for the slice at its own stride.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.explore.live import LiveSession, load_live_model
from napari_brainfeatures.features.grid import FeatureGrid

__all__ = ["LivePrediction", "apply_live_model"]

_BAND_POINTS = 1 << 20  # grid points predicted at a time (256 MiB of 64-d float32)


@dataclass(frozen=True, eq=False)
class LivePrediction:
    """Class ids ``(H', W')`` (0: no features, or outside ``within``), uncertainty, names."""

    labels: np.ndarray
    uncertainty: np.ndarray
    names: dict[int, str]
    context_px: float

    def counts(self) -> dict[int, int]:
        """Grid points per class."""
        ids, n = np.unique(self.labels[self.labels > 0], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, n, strict=True)}


def apply_live_model(path: Any, grid: FeatureGrid, *, within: Any = None) -> LivePrediction:
    """Label every grid point of ``grid`` with the live classifier saved at ``path``.

    Parameters
    ----------
    path : path
        A ``live-*.safetensors`` file of the Explore dock (or :func:`~.live.save_live_model`).
    grid : FeatureGrid
        The slice, with its features (:meth:`FeatureGrid.open`).
    within : bool array ``(H', W')``, optional
        Predict only here (class 0 and uncertainty NaN elsewhere).

    Raises
    ------
    ValueError
        The store's features are not the ones the classifier was fitted on (another
        number of channels), or the grid holds no features.
    ModelFileError
        ``path`` is not a live classifier.
    """
    clf, meta = load_live_model(path)
    if grid.features is None:
        raise ValueError("the grid holds no features; open it with FeatureGrid.open(store)")
    d = int(grid.features.shape[-1])
    context_px = float(meta.get("context_px", 0.0))
    fitted = int(clf.weight_.shape[1])  # type: ignore[union-attr]
    expected = 2 * d if context_px > 0 else d
    if fitted != expected:
        raise ValueError(
            f"{str(path)!r} was fitted on {fitted} columns; this store's {d} features give "
            f"{expected}: it comes from another CNN (use a store of the model it was painted on)"
        )
    session = LiveSession(grid, clf, within=within, context_px=context_px)
    h, w = grid.shape
    rows = max(1, _BAND_POINTS // w)
    bands = []
    for r0 in range(0, h, rows):
        session.view((r0, min(h, r0 + rows), 0, w))
        bands.append(session.predict())
    labels, unc = (np.concatenate(parts) for parts in zip(*bands, strict=True))
    raw = meta.get("names") or {}
    names = {int(c): str(raw.get(str(int(c)), f"class {int(c)}")) for c in clf.classes_}  # type: ignore[union-attr]
    return LivePrediction(labels, unc, names, context_px)
