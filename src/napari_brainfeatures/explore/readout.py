"""What the stored results say about one pixel: area and confidence, top factors, cluster.

:class:`Readout` reads the arrays of one slice into memory once (a feature store's
``areas`` and ``probs``, NMF maps, a cluster map) and then answers
:meth:`Readout.at` for an image pixel by indexing them: no recomputation, a few
microseconds, so a viewer can call it on every mouse move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.features.grid import FeatureGrid

__all__ = ["Readout"]


@dataclass(eq=False)
class Readout:
    """Per-pixel readouts of one slice, all on one grid.

    Parameters
    ----------
    grid : FeatureGrid
        Where the maps lie on the image.
    areas : int ndarray ``(H', W')``, optional
        Predicted area ids (0: not computed).
    confidence : float ndarray ``(H', W')``, optional
        Probability of the predicted area.
    classes : ClassTable, optional
        Names of the area ids.
    maps : float ndarray ``(k, H', W')``, optional
        NMF coefficients.
    clusters : int ndarray ``(H', W')``, optional
        A cluster map (0: none).
    top : int
        Factors reported, the largest first, default 3.
    """

    grid: FeatureGrid
    areas: np.ndarray | None = None
    confidence: np.ndarray | None = None
    classes: ClassTable | None = None
    maps: np.ndarray | None = None
    clusters: np.ndarray | None = None
    top: int = 3

    def __post_init__(self) -> None:
        for name in ("areas", "confidence", "clusters"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, self._check(np.asarray(v), name))
        if self.maps is not None:
            self.maps = self._check(np.asarray(self.maps, dtype=np.float32), "maps")

    def _check(self, v: np.ndarray, name: str) -> np.ndarray:
        if tuple(v.shape[-2:]) != self.grid.shape:
            raise ValueError(
                f"{name} of shape {v.shape!r} are not on the grid {self.grid.shape!r}; "
                "use results of the same store slice"
            )
        return v

    @classmethod
    def of_store(cls, store: Any, z: int | None = None, **kwargs: Any) -> Readout:
        """Areas and confidence of one slice of a feature store (read once), plus ``kwargs``."""
        from napari_brainfeatures.features.store import FeatureStore

        store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        grid = FeatureGrid.from_store(store, z, flag="store z index")
        pick = (lambda a: a) if grid.index is None else (lambda a: a[grid.index])
        areas = conf = None
        if "areas" in store.attrs["which"]:
            areas = np.asarray(pick(store.areas))
        if "probs" in store.attrs["which"]:
            conf = np.asarray(pick(store.confidence()))
        return cls(grid, areas=areas, confidence=conf, classes=store.classes, **kwargs)

    def index(self, y: float, x: float) -> tuple[int, int] | None:
        """The grid point covering image pixel ``(y, x)`` (as napari draws it), or None."""
        (h, w), (y0, x0), (sy, sx) = self.grid.shape, self.grid.origin, self.grid.step
        i = int(np.floor((y - y0) / sy + 0.5))
        j = int(np.floor((x - x0) / sx + 0.5))
        return (i, j) if 0 <= i < h and 0 <= j < w else None

    def at(self, y: float, x: float) -> dict[str, Any] | None:
        """The readouts at image pixel ``(y, x)``; None outside the grid.

        Returns
        -------
        dict or None
            ``grid`` (i, j); with areas ``area`` (id) and ``area_name``; with
            confidence ``confidence``; with maps ``factors``: ``[(index, value), ...]``
            the largest ``top`` first; with clusters ``cluster``.
        """
        ij = self.index(y, x)
        if ij is None:
            return None
        out: dict[str, Any] = {"grid": ij}
        if self.areas is not None:
            aid = int(self.areas[ij])
            out["area"] = aid
            out["area_name"] = self._name(aid)
        if self.confidence is not None:
            out["confidence"] = float(self.confidence[ij])
        if self.maps is not None:
            v = self.maps[:, ij[0], ij[1]]  # (k,)
            if np.isfinite(v).all():
                order = np.argsort(v)[::-1][: self.top]
                out["factors"] = [(int(f), float(v[f])) for f in order]
        if self.clusters is not None:
            out["cluster"] = int(self.clusters[ij])
        return out

    def _name(self, aid: int) -> str:
        if aid == 0:
            return "not computed"
        if self.classes is not None and aid in self.classes.ids:
            return self.classes.by_id(aid).name
        return f"class {aid}"

    def text(self, y: float, x: float) -> str:
        """:meth:`at` as one status-bar line ("" outside the grid)."""
        r = self.at(y, x)
        if r is None:
            return ""
        parts = []
        if "area" in r:
            conf = f" {r['confidence']:.0%}" if "confidence" in r and r["area"] else ""
            parts.append(f"{r['area_name']}{conf}")
        if "factors" in r:
            parts.append("top " + ", ".join(f"F{f} {v:.3g}" for f, v in r["factors"]))
        if "cluster" in r:
            parts.append(f"cluster {r['cluster']}" if r["cluster"] else "no cluster")
        return " | ".join(parts)
