"""NMF factors of one feature slice as an object, and the ``factors.zarr`` they are saved in.

:func:`factorise` runs the NMF on the computed pixels of a
:class:`~napari_brainfeatures.features.grid.FeatureGrid` and returns
:class:`Factors`: the heatmaps on the grid, the components, the grid itself and
the run's numbers; :meth:`Factors.select` scores them against ROIs.
:func:`save_factors` writes them atomically, :func:`open_factors` reads them back::

    factors.zarr/
      maps          (k, H, W) float32   coefficients on the feature grid (NaN: not computed)
      components    (k, D)    float32   the factors
      mask          (H, W)    uint8     1: the pixel counts (in tissue, patch inside tissue);
                                        only when factorised with a tissue mask
      zarr.json     attrs["brainfeatures"]: kind "nmf-factors", the grid (origin, step,
                    z_image, z, image_shape, source), k, solver, n_rows, rel_error,
                    n_iter, wall_s, min_context, n_edge, selection (or None)

The ``factors`` command and the dock widget write this format; :func:`open_map` opens
it, a feature store or a plain feature array alike (what ``cluster`` reads).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures.factors.maps import factor_maps, finite_rows
from napari_brainfeatures.factors.options import NMFOptions, SelectOptions
from napari_brainfeatures.factors.select import Selection, select_factors
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.store import METADATA_ERRORS as _DAMAGE
from napari_brainfeatures.progress import Progress, ProgressGen
from napari_brainfeatures.tissue import MIN_CONTEXT, check_min_context

__all__ = [
    "KIND",
    "Factors",
    "factorise",
    "is_factors",
    "open_factors",
    "open_map",
    "save_clusters",
    "save_factors",
]

KIND = "nmf-factors"
CLUSTERS_KIND = "cluster-map"
ATTR = "brainfeatures"
_SUMMARY = ("k", "solver", "n_rows", "rel_error", "n_iter", "wall_s")
_TISSUE = ("min_context", "n_edge", "incomplete")  # only with a tissue mask / when so


@dataclass(frozen=True, eq=False)
class Factors:
    """NMF factors of one slice of features, on its grid.

    Attributes
    ----------
    maps : array ``(k, H, W)`` float32, numpy or dask
        Coefficient heatmaps; NaN where no feature was computed (or outside tissue).
    components : ndarray ``(k, D)`` float32
    grid : FeatureGrid
        Where the maps lie on the image (its ``features`` are the source features
        after :func:`factorise`, None after :func:`open_factors`).
    info : dict
        ``k``, ``solver``, ``n_rows``, ``rel_error``, ``n_iter``, ``wall_s``, and with
        a tissue mask ``min_context`` and ``n_edge`` (tissue pixels left out).
    selection : Selection, optional
        A factor selection made on these factors (saved with them).
    path : Path, optional
        Where they were saved or opened from.
    mask : bool ndarray ``(H, W)``, optional
        The pixels that count (see :attr:`used`): in tissue with at least
        ``min_context`` of the patch window in tissue.  None: every valid pixel.
    """

    maps: Any
    components: np.ndarray
    grid: FeatureGrid
    info: dict[str, Any] = field(default_factory=dict)
    selection: Selection | None = None
    path: Path | None = None
    mask: np.ndarray | None = None

    @property
    def k(self) -> int:
        """Number of factors."""
        return int(self.maps.shape[0])

    @cached_property
    def valid(self) -> np.ndarray:
        """Bool ``(H, W)``: pixels with coefficients (features were computed there)."""
        return np.asarray(np.isfinite(self.maps).all(axis=0))

    @cached_property
    def used(self) -> np.ndarray:
        """Bool ``(H, W)``: the pixels that count (the valid ones inside :attr:`mask`)."""
        return self.valid if self.mask is None else self.valid & self.mask

    @cached_property
    def coefficients(self) -> np.ndarray:
        """``(n, k)`` float32: the coefficients of the :attr:`used` pixels, raster order."""
        return np.ascontiguousarray(np.asarray(self.maps)[:, self.used].T)

    def coefficient_grid(self) -> FeatureGrid:
        """The grid holding the coefficients ``(H, W, k)`` as its features (to cluster).

        NaN outside :attr:`used` (:func:`factorise` leaves the maps NaN there), so a
        cluster map leaves edge pixels unlabelled.
        """
        return self.grid.with_features(np.moveaxis(self.maps, 0, -1))  # numpy or dask

    def select(
        self,
        rois: Any,
        *,
        options: SelectOptions | None = None,
        roi_ids: list[int] | None = None,
        **overrides: Any,
    ) -> Selection:
        """Score the factors against ROI labels on the grid; pick pairs greedily.

        Parameters
        ----------
        rois : int array ``(H, W)``
            ROI ids on the grid (:meth:`FeatureGrid.labels_on`); 0 = no ROI.
        options, **overrides
            As in :func:`~.select.select_factors`.
        roi_ids : list of int, optional
            ROIs to use; each must have :attr:`used` pixels (else ValueError).  Default:
            the ids present there.
        """
        rois = np.asarray(rois)
        if rois.shape != self.valid.shape:
            raise ValueError(
                f"rois must be on the factors' grid {self.valid.shape!r}, got {rois.shape!r}"
            )
        inside = rois[self.used]
        if roi_ids is not None:
            empty = [int(i) for i in roi_ids if not np.any(inside == i)]
            if empty:
                raise ValueError(
                    f"ROI id(s) {empty} lie only where no feature was computed (NaN in the "
                    "store) or outside the tissue mask's usable pixels; compute features "
                    "there, lower min_context, or choose other ROI ids"
                )
        return select_factors(
            self.coefficients, inside, options=options, roi_ids=roi_ids, **overrides
        )

    def with_selection(self, selection: Selection | None) -> Factors:
        """These factors with ``selection`` attached (what :meth:`save` then writes)."""
        out = dataclasses.replace(self, selection=selection)
        for cached in ("valid", "used", "coefficients"):  # the same maps: keep what was computed
            if cached in self.__dict__:
                out.__dict__[cached] = self.__dict__[cached]
        return out

    def save(self, path: str | os.PathLike[str], *, inputs: Any = ()) -> Path:
        """Write to ``path`` (a ``.zarr`` folder) atomically; see :func:`save_factors`."""
        return save_factors(path, self, inputs=inputs)


def factorise(
    grid: FeatureGrid,
    n_components: int | None = None,
    *,
    options: NMFOptions | None = None,
    tissue: Any = None,
    min_context: float = MIN_CONTEXT,
    patch: int | None = None,
    **overrides: Any,
) -> ProgressGen[Factors]:
    """NMF of the computed pixels of a feature grid; yields progress, returns :class:`Factors`.

    Parameters
    ----------
    grid : FeatureGrid
        With ``features`` ``(H, W, D)``; pixels with NaN (not computed) are left out.
    n_components, options, **overrides
        As in :func:`~.nmf.fit_nmf`.
    tissue : array ``(Y, X)`` or ``(Z, Y, X)``, optional
        The image's tissue mask (non-zero: tissue; see :mod:`napari_brainfeatures.tissue`).
        Then only pixels in tissue whose patch window is at least ``min_context``
        inside tissue are factorised (:attr:`Factors.used`); the others (background,
        and tissue whose patch sees background: cut faces, pial surface) get no
        coefficients (NaN).  Projecting them onto the fitted factors was tried: a
        patch half in background is unlike every fitted row, so its least-squares
        coefficients light factors along every edge.
    min_context : float in [0, 1]
        Least fraction of the patch window in tissue (default 1.0: the whole patch,
        see :data:`~napari_brainfeatures.tissue.MIN_CONTEXT`; 0: every pixel in
        tissue counts).  Only with ``tissue``.
    patch : int, optional
        Patch size for the window; default the grid's (its store's model).
    """
    from napari_brainfeatures.factors.nmf import fit_nmf, nmf_options

    opts = nmf_options(n_components, options=options, **overrides)  # checked before reading
    min_context = check_min_context(min_context)
    if grid.features is None:
        raise ValueError("the grid holds no features; open it with FeatureGrid.from_store")
    used = shown = None
    if tissue is not None:
        shown = grid.labels_on(tissue, what="the tissue mask") != 0
        used = shown & (grid.context_inside(tissue, patch=patch) >= min_context)
    h, w = grid.shape
    yield Progress(0, None, f"reading {h}x{w} feature rows")
    rows, valid = finite_rows(grid.features)
    n_edge = 0
    if shown is not None and used is not None:
        n_edge = int((shown & valid & ~used).sum())  # tissue near an edge: left out
        keep = used[valid]
        if not keep.any():
            raise ValueError(
                f"no computed pixel lies in tissue with >= {min_context} of its patch window "
                "in tissue; check the tissue mask, or lower min_context (0: off)"
            )
        rows, valid = rows[keep], valid & used
    res = yield from fit_nmf(rows, options=opts)
    yield Progress(0, None, "factor maps")
    maps = factor_maps(res.W, valid.shape, valid=valid)  # (k, H, W)
    info = {
        "k": opts.n_components,
        "solver": res.solver,
        "n_rows": int(res.W.shape[0]),
        "rel_error": res.rel_error,
        "n_iter": res.n_iter,
        "wall_s": round(res.wall_s, 3),
    }
    if used is not None:
        info.update(min_context=min_context, n_edge=n_edge)
    out = Factors(maps, res.H, grid, info, mask=used)
    out.__dict__["coefficients"] = res.W  # the same numbers: no second copy
    return out


# -- on disk ----------------------------------------------------------------------------------
def _write_group(
    target: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any], inputs: list[Any]
) -> Path:
    """Write a zarr group atomically (build beside, then swap in).

    An earlier result (a zarr store) is replaced; anything else at ``target``, and a
    target in or holding one of ``inputs``, is refused, never deleted.
    """
    import zarr

    from napari_brainfeatures._util.overwrite import check_target, swap_in

    target = Path(target).expanduser()
    check_target(target, overwrite=True, inputs=[i for i in inputs if i])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        group = zarr.open_group(tmp, mode="w")
        for name, a in arrays.items():
            a = np.asarray(a)
            chunks = tuple(min(s, 1 if i < a.ndim - 2 else 1024) for i, s in enumerate(a.shape))
            group.create_array(name, data=a, chunks=chunks)
        group.attrs[ATTR] = attrs
        swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def save_factors(path: str | os.PathLike[str], factors: Factors, *, inputs: Any = ()) -> Path:
    """Write ``factors`` as ``path`` (``factors.zarr``, the format above); returns the path.

    Built beside ``path`` and swapped in at the end (a failure keeps an earlier result).
    A file or folder that is not a zarr store is refused, and so is a path that is, holds
    or lies in the features' source store or one of ``inputs`` (paths).
    """
    attrs = {
        "kind": KIND,
        **factors.grid.to_attrs(),
        **{k: factors.info.get(k) for k in _SUMMARY},
        **{k: factors.info[k] for k in _TISSUE if k in factors.info},
        "k": factors.k,
        "selection": factors.selection.to_dict() if factors.selection is not None else None,
    }
    arrays = {"maps": np.asarray(factors.maps, np.float32), "components": factors.components}
    if factors.mask is not None:
        arrays["mask"] = np.asarray(factors.mask, dtype=np.uint8)
    return _write_group(Path(path), arrays, attrs, [factors.grid.source, *inputs])


def _attrs(path: Path) -> dict[str, Any] | None:
    import zarr

    try:
        node = zarr.open_group(path, mode="r")
    except Exception:  # not zarr, or not a group
        return None
    raw: Any = node.attrs.get(ATTR)
    return dict(raw) if isinstance(raw, dict) else None


def is_factors(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a ``factors.zarr`` written by :func:`save_factors`."""
    path = Path(path)
    return path.is_dir() and (_attrs(path) or {}).get("kind") == KIND


def open_factors(path: str | os.PathLike[str]) -> Factors:
    """Read a ``factors.zarr``; the maps stay on disk (a dask array) until used.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` is not a factors result, or one damaged (naming what).
    """
    import dask.array as da
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such factors result: {str(path)!r}")
    attrs = _attrs(path)
    if attrs is None or attrs.get("kind") != KIND:
        raise ValueError(
            f"{str(path)!r} is not a factors result (a factors.zarr written by 'brainfeatures "
            "factors' or the Factors widget)"
        )
    try:
        group = zarr.open_group(path, mode="r")
        maps, comps = group["maps"], group["components"]
        mask = group["mask"] if "mask" in group else None
        shapes = [getattr(a, "shape", None) for a in (maps, comps, mask)]
        if not (
            (maps.ndim, comps.ndim, maps.dtype.kind) == (3, 2, "f")
            and attrs.get("k") == shapes[0][0] == shapes[1][0]
            and shapes[2] in (None, shapes[0][1:])
        ):
            raise ValueError(
                f"its arrays maps {shapes[0]} {maps.dtype}, components {shapes[1]}, mask "
                f"{shapes[2]} do not fit k = {str(attrs.get('k'))[:20]} factors on one grid"
            )
        maps = da.from_zarr(maps)  # (k, H, W)
        sel = attrs.get("selection")
        return Factors(
            maps=maps,
            components=np.asarray(comps),
            grid=FeatureGrid.from_attrs(attrs, tuple(maps.shape[1:])),  # type: ignore[arg-type]
            info={k: attrs.get(k) for k in _SUMMARY + _TISSUE if k in _SUMMARY or k in attrs},
            selection=Selection.from_dict(sel) if isinstance(sel, dict) else None,
            path=path,
            mask=np.asarray(mask) != 0 if mask is not None else None,
        )
    except _DAMAGE as err:
        raise ValueError(
            f"the factors result {str(path)!r} is damaged: {str(err)[:300]}; run the "
            "factorisation again (brainfeatures factors, or the Factors dock)"
        ) from None


def open_map(
    path: str | os.PathLike[str],
    z: int | None = None,
    *,
    flag: str = "z",
    allow_incomplete: bool = False,
) -> FeatureGrid:
    """A per-pixel map to cluster: NMF coefficients of a ``factors.zarr``, or features.

    Features come from a dense feature store or a plain zarr array (see
    :meth:`FeatureGrid.open`, which explains ``z``, ``flag`` and ``allow_incomplete``:
    a store with tiles not written is refused unless allowed); a ``factors.zarr``
    gives its coefficients ``(H, W, k)`` on its grid.  ValueError: damaged, naming it.
    """
    if is_factors(path):
        return open_factors(path).coefficient_grid()
    try:
        return FeatureGrid.open(path, z, flag=flag, allow_incomplete=allow_incomplete)
    except _DAMAGE as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise  # ours, naming the store
        raise ValueError(f"{str(path)!r} cannot be read as features: {str(err)[:300]}") from None


def save_clusters(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    grid: FeatureGrid,
    report: dict[str, Any],
    *,
    inputs: Any = (),
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a cluster map ``(H, W)`` int32 on ``grid`` as ``clusters.zarr`` (atomically).

    ``labels`` is the group's array (beside any ``extra`` arrays on the same grid, e.g.
    an uncertainty); its attributes are the grid's and ``report``'s (kind
    ``"cluster-map"``).  Overwriting as :func:`save_factors`.
    """
    attrs = {"kind": CLUSTERS_KIND, **grid.to_attrs(), **report}
    arrays = {"labels": labels, **(extra or {})}
    return _write_group(Path(path), arrays, attrs, [grid.source, *inputs])
