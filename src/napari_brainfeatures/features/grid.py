"""Features of one slice on the image grid: :class:`FeatureGrid`.

A dense feature store holds outputs on a strided grid: output ``(i, j)`` of z index
``k`` is the patch centred on image pixel ``origin + (k, step*i, step*j)``
(:mod:`.store`).  A :class:`FeatureGrid` is one z-slice of it: the features
``(H', W', D)`` (lazy), where grid ``(0, 0)`` lies on the image (``origin``), the
grid spacing (``step``) and the image z.  It reads label images at the grid's
pixels (:meth:`FeatureGrid.labels_on`), puts grid maps back on the image's pixels
(:meth:`FeatureGrid.place`) and gives napari the ``scale``/``translate`` that show
a grid map over its image (:meth:`FeatureGrid.layer_kwargs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FeatureGrid"]


def pick_z(z: int | None, n: int, path: Any, flag: str = "z") -> int:
    """The z index to read from ``path``'s ``n`` slices: ``z``, or the only one when None.

    ``flag`` is how the caller calls the option in messages (``"--z"``).
    """
    if z is None:
        if n != 1:
            raise ValueError(f"{str(path)!r} holds {n} z-slices; choose one with {flag} 0..{n - 1}")
        return 0
    if isinstance(z, bool) or not isinstance(z, int | np.integer) or not 0 <= z < n:
        raise ValueError(f"{flag} must be in 0..{n - 1} for {str(path)!r}, got {z!r}")
    return int(z)


def _pair(name: str, v: Any, low: int) -> tuple[int, int]:
    flat = np.ravel(np.asarray(v, dtype=object))
    ok = flat.size == 2 and all(isinstance(x, int | np.integer) and x >= low for x in flat)
    if not ok:
        raise ValueError(f"{name} must be two integers >= {low} (y, x), got {v!r}")
    return int(flat[0]), int(flat[1])


@dataclass(frozen=True)
class FeatureGrid:
    """One z-slice of a dense feature map and where its grid lies on the image.

    Grid point ``(i, j)`` sits on image pixel ``(z, y0 + sy*i, x0 + sx*j)``.

    Parameters
    ----------
    shape : (int, int)
        Grid size ``(H', W')``.
    origin : (int, int)
        Image pixel ``(y0, x0)`` of grid point ``(0, 0)``, default ``(0, 0)``.
    step : (int, int)
        Image pixels ``(sy, sx)`` between grid points (the stride), default ``(1, 1)``.
    z : int
        The slice's z in image pixels (0 for a 2-D image).
    image_shape : tuple of int, optional
        Shape of the image the features were computed on (``(Z, Y, X)`` or ``(Y, X)``).
    features : array ``(H', W', D)``, optional
        The features, channels last (a lazy dask view of the store's ``(D, H', W')``),
        or any per-pixel map on this grid (e.g. NMF coefficients).
    index : int, optional
        The slice's index along the store's z axis (None: the store has none).
    source : str, optional
        Where the features come from (a path).
    patch : int, optional
        Patch size of the model that computed the features (image pixels).
    store : FeatureStore, optional
        The open store the features are read from (kept: the store is in use, never
        replaced, while this grid lives; see :mod:`.inuse`).
    """

    shape: tuple[int, int]
    origin: tuple[int, int] = (0, 0)
    step: tuple[int, int] = (1, 1)
    z: int = 0
    image_shape: tuple[int, ...] | None = None
    features: Any = field(default=None, repr=False, compare=False)
    index: int | None = None
    source: str | None = None
    patch: int | None = None
    store: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "shape", _pair("shape", self.shape, 1))
        set_(self, "origin", _pair("origin", self.origin, 0))
        set_(self, "step", _pair("step", self.step, 1))
        set_(self, "z", int(self.z))
        if self.image_shape is not None:
            set_(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.patch is not None:
            set_(self, "patch", int(self.patch))
        f = self.features
        if f is not None and (f.ndim != 3 or tuple(f.shape[:2]) != self.shape):
            raise ValueError(
                f"features must have shape (H', W', D) with (H', W') = {self.shape!r}, got "
                f"{tuple(f.shape)!r}"
            )

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def of(cls, features: Any, **kwargs: Any) -> FeatureGrid:
        """A grid of ``features`` ``(H', W', D)`` (its shape from theirs); ``kwargs`` as fields."""
        if getattr(features, "ndim", 0) != 3:
            raise ValueError(
                f"features must have shape (H', W', D), got {getattr(features, 'shape', None)!r}"
            )
        return cls(tuple(features.shape[:2]), features=features, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_store(
        cls,
        store: Any,
        z: int | None = None,
        *,
        pre_relu: bool = False,
        flag: str = "z",
        allow_incomplete: bool = False,
    ) -> FeatureGrid:
        """Slice ``z`` of a dense feature store (a path or a :class:`~.store.FeatureStore`).

        Parameters
        ----------
        store : path or FeatureStore
        z : int, optional
            Index along the store's z axis; None is allowed when it has one slice.
            A store of a 2-D image has one slice.
        pre_relu : bool
            The pre-ReLU features instead of the post-ReLU ones.
        flag : str
            How messages name ``z`` (``"--z"``, ``"store z index"``).
        allow_incomplete : bool
            Read a slice with tiles not written yet (NaN there); default False.

        Raises
        ------
        FileNotFoundError
            ``store`` is not a dense feature store.
        IncompleteStoreError
            The slice has tiles not written yet (says how many, where, how to resume).
        ValueError
            ``z`` is out of range, or None for a store of several slices.
        """
        import dask.array as da

        from napari_brainfeatures.features.store import FeatureStore

        if not isinstance(store, FeatureStore):
            store = FeatureStore(store)
        f = store.features(pre_relu=pre_relu)  # (Z, C, Y, X) or (C, Y, X)
        index = pick_z(z, 1 if store.is_2d else f.shape[0], store.path, flag)
        if not allow_incomplete:
            store.require_complete(index)
        if not store.is_2d:
            f = f[index]  # (C, Y, X)
        origin, step = store.attrs["origin"], store.attrs["step"]  # (z, y, x) each
        return cls.of(
            da.moveaxis(f, 0, -1),  # (Y, X, C)
            origin=origin[1:],
            step=step[1:],
            z=int(origin[0]) + index * int(step[0]),
            image_shape=tuple(store.attrs["image"]["shape"]),
            index=None if store.is_2d else index,
            source=str(store.path),
            patch=store.attrs.get("patch_size"),
            store=store,
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        z: int | None = None,
        *,
        flag: str = "z",
        allow_incomplete: bool = False,
    ) -> FeatureGrid:
        """A dense feature store, or a plain zarr array ``(H, W, D)`` / ``(Z, H, W, D)``.

        A plain array (or a zarr group holding one named ``features``) lies on the
        image pixel for pixel: origin 0, step 1.  ``z`` and ``flag`` as in
        :meth:`from_store`, and so is ``allow_incomplete``.

        Raises
        ------
        FileNotFoundError
            Nothing at ``path``.
        ValueError
            ``path`` holds neither a feature store nor such an array, or ``z`` is bad.
        """
        import dask.array as da
        import zarr

        from napari_brainfeatures.features.store import _is_feature_store
        from napari_brainfeatures.io.volume import is_zarr_store

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such feature store: {str(path)!r}")
        if not is_zarr_store(path):
            raise ValueError(
                f"{str(path)!r} is not a feature store (no zarr group found); pass the "
                "STORE.zarr written by 'brainfeatures features' (or a factors.zarr)"
            )
        if _is_feature_store(path):
            return cls.from_store(path, z, flag=flag, allow_incomplete=allow_incomplete)
        node = zarr.open(path, mode="r")
        arr = node["features"] if isinstance(node, zarr.Group) and "features" in node else node
        if not isinstance(arr, zarr.Array) or arr.ndim not in (3, 4):
            raise ValueError(
                f"{str(path)!r} is neither a feature store nor a zarr array of shape (H, W, D) "
                "or (Z, H, W, D)"
            )
        f = da.from_zarr(arr)
        index = pick_z(z, f.shape[0], path, flag) if f.ndim == 4 else None
        if index is not None:
            f = f[index]
        image = tuple(arr.shape[:-1])
        return cls.of(f, z=index or 0, image_shape=image, index=index, source=str(path))

    # -- geometry ---------------------------------------------------------------------------
    def with_features(self, features: Any) -> FeatureGrid:
        """The same grid holding other per-pixel values ``(H', W', C)`` (e.g. coefficients)."""
        return replace(self, features=features)

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Image rows ``(H',)`` and columns ``(W',)`` of the grid points."""
        (h, w), (y0, x0), (sy, sx) = self.shape, self.origin, self.step
        return y0 + sy * np.arange(h), x0 + sx * np.arange(w)

    def radius(self, px: float) -> float:
        """A radius of ``px`` image pixels in grid steps (the finer axis: erosion stays a disk)."""
        return float(px) / float(min(self.step))

    def sigma(self, px: float) -> tuple[float, float]:
        """A Gaussian σ of ``px`` image pixels in grid steps, per axis ``(y, x)``."""
        return (float(px) / self.step[0], float(px) / self.step[1])

    def _plane(self, labels: Any, what: str) -> Any:
        """The 2-D plane ``(Y, X)`` of ``labels`` at this grid's z, checked to cover the grid."""
        ndim = getattr(labels, "ndim", None)
        if ndim is None:
            labels = np.asarray(labels)
            ndim = labels.ndim
        ys, xs = self.pixels()
        if ndim not in (2, 3) or ys[-1] >= labels.shape[-2] or xs[-1] >= labels.shape[-1]:
            (h, w), shape = self.shape, tuple(getattr(labels, "shape", ()))
            raise ValueError(
                f"{what} of shape {shape!r} do not cover a {h}x{w} grid at origin "
                f"{self.origin!r} with step {self.step!r}; use the labels of the image the "
                "features were computed on"
            )
        if ndim == 3:
            if not 0 <= self.z < labels.shape[0]:
                raise ValueError(
                    f"{what} have {labels.shape[0]} slices; the features are at z={self.z}"
                )
            labels = labels[self.z]
        return labels

    def labels_on(self, labels: Any, *, what: str = "labels") -> np.ndarray:
        """A label image read at the grid points: ``labels[z, y0 + sy*i, x0 + sx*j]``.

        Parameters
        ----------
        labels : array ``(Y, X)`` or ``(Z, Y, X)``, numpy, dask or zarr
            Labels of the image the features were computed on; a volume is read at
            this grid's ``z``.  Only the grid's pixels are read.
        what : str
            How errors name the labels (a file, a layer).

        Returns
        -------
        ndarray ``(H', W')``, the labels' dtype
        """
        labels = self._plane(labels, what)
        ys, xs = self.pixels()
        (y0, x0), (sy, sx) = self.origin, self.step
        return np.asarray(labels[y0 : ys[-1] + 1 : sy, x0 : xs[-1] + 1 : sx])

    def context_inside(
        self, tissue: Any, *, patch: int | None = None, what: str = "tissue mask"
    ) -> np.ndarray:
        """Fraction of each grid point's patch window inside tissue ("context inside tissue").

        A box filter of the patch size over the tissue mask, read at the grid points
        (:func:`~napari_brainfeatures.tissue.window_fraction`): 1 deep in tissue, about
        0.5 on a straight cut face, less at a corner.

        Parameters
        ----------
        tissue : array ``(Y, X)`` or ``(Z, Y, X)``
            Tissue mask (non-zero: tissue) of the image; a volume is read at ``z``.
        patch : int, optional
            Patch size in image pixels; default :attr:`patch` (the store's model).
        what : str
            How errors name the mask.

        Returns
        -------
        ndarray ``(H', W')`` float32 in [0, 1]
        """
        from napari_brainfeatures.tissue import window_fraction

        size = self.patch if patch is None else patch
        if size is None:
            raise ValueError(
                "the grid does not know its patch size (features not from a dense feature "
                "store); pass patch= (the model's patch size, e.g. 128)"
            )
        plane = np.asarray(self._plane(tissue, what)) != 0
        return window_fraction(plane, *self.pixels(), int(size))

    def place(
        self, values: Any, *, fill: Any = 0, shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Grid values painted onto the image's pixels, as napari shows them over the image.

        Grid point ``(i, j)`` covers the image pixels nearest to it: those within
        half a step of ``origin + step * (i, j)`` (the area napari draws it on with
        :meth:`layer_kwargs`).  Pixels no grid point covers get ``fill``.

        Parameters
        ----------
        values : array ``(..., H', W')``
            One map, or a stack of them (e.g. ``(k, H', W')`` factor maps).
        fill : scalar
            Value of pixels outside the grid, default 0.
        shape : (int, int), optional
            Image ``(Y, X)``; default the last two of :attr:`image_shape`.

        Returns
        -------
        ndarray ``(..., Y, X)``, the values' dtype
        """
        values = np.asarray(values)
        if values.ndim < 2 or tuple(values.shape[-2:]) != self.shape:
            raise ValueError(
                f"values must end in the grid's shape {self.shape!r}, got {values.shape!r}"
            )
        if shape is None:
            if self.image_shape is None:
                raise ValueError("the grid does not know its image's shape; pass shape=(Y, X)")
            shape = self.image_shape[-2:]  # type: ignore[assignment]
        out = np.full((*values.shape[:-2], *shape), fill, dtype=values.dtype)  # type: ignore[misc]
        index = []
        for o, s, n, size in zip(self.origin, self.step, self.shape, shape, strict=True):  # type: ignore[arg-type]
            i = (2 * (np.arange(size) - o) + s) // (2 * s)  # nearest grid point, ties to the later
            index.append((np.flatnonzero((i >= 0) & (i < n)), i))
        (py, iy), (px, ix) = index
        out[..., py[:, None], px] = values[..., iy[py][:, None], ix[px]]
        return out

    def layer_kwargs(
        self, image_scale: Any = None, image_translate: Any = None
    ) -> dict[str, tuple[float, ...]]:
        """``scale`` and ``translate`` that show a grid map over its image in napari.

        Parameters
        ----------
        image_scale, image_translate : sequence of 2 or 3 floats, optional
            The image layer's (default: scale 1, translate 0, 2-D).  For a 3-D image
            the result is 3-D too, with the grid's slice at :attr:`z`: give such a
            layer data of shape ``(1, H', W')``.
        """
        sc = np.ones(2) if image_scale is None else np.asarray(image_scale, dtype=float)
        tr = np.zeros(len(sc)) if image_translate is None else np.asarray(image_translate, float)
        if sc.shape not in ((2,), (3,)) or tr.shape != sc.shape:
            raise ValueError(
                f"image scale and translate must be 2 or 3 numbers each, got {sc!r}, {tr!r}"
            )
        scale = [sc[-2] * self.step[0], sc[-1] * self.step[1]]
        translate = [tr[-2] + sc[-2] * self.origin[0], tr[-1] + sc[-1] * self.origin[1]]
        if len(sc) == 3:  # one slice of the volume, at its z
            scale, translate = [sc[0], *scale], [tr[0] + sc[0] * self.z, *translate]
        return {
            "scale": tuple(float(v) for v in scale),
            "translate": tuple(float(v) for v in translate),
        }

    # -- provenance -------------------------------------------------------------------------
    def to_attrs(self) -> dict[str, Any]:
        """A JSON-ready description (no features), read back by :meth:`from_attrs`."""
        return {
            "origin": list(self.origin),
            "step": list(self.step),
            "z_image": self.z,
            "z": self.index,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "source": self.source,
            "patch": self.patch,
        }

    @classmethod
    def from_attrs(
        cls, attrs: dict[str, Any], shape: tuple[int, int], *, features: Any = None
    ) -> FeatureGrid:
        """The grid described by :meth:`to_attrs` (``image_shape`` may be absent)."""
        image = attrs.get("image_shape")
        return cls(
            shape,
            origin=tuple(attrs["origin"]),  # type: ignore[arg-type]
            step=tuple(attrs["step"]),  # type: ignore[arg-type]
            z=int(attrs.get("z_image") or 0),
            image_shape=None if image is None else tuple(image),
            features=features,
            index=attrs.get("z"),
            source=attrs.get("source"),
            patch=attrs.get("patch"),
        )
