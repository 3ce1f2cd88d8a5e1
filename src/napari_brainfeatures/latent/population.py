"""A population of 2-D sections: validation, reading and pre-processing.

Pre-processing follows the population paper (paper 004, §3.1): each section's
brightness is scaled to the dataset's average brightness, then pixels brighter
than ``clip`` (3.8) times that average are set to that maximum.  For the
sigmoid decoder the result is divided by the maximum, so every pixel lies in
[0, 1] (``0`` black, ``1`` = 3.8× the average brightness).  The constants
(``mean``, ``clip``) are kept with a trained model so new sections are mapped
the same way (:func:`preprocess_for`).

The paper's linear baseline, :class:`~napari_brainfeatures.latent.pca.PCABaseline`,
lives in :mod:`napari_brainfeatures.latent.pca`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "as_stack",
    "center_crop",
    "crop_offset",
    "check_population_size",
    "check_rois",
    "preprocess",
    "preprocess_for",
    "read_population",
    "roi_names_for",
]


def as_stack(images: ArrayLike | Sequence[ArrayLike], *, name: str = "images") -> NDArray[Any]:
    """Validate a population and return it as one ``(N, H, W)`` array.

    Parameters
    ----------
    images : array (N, H, W) or sequence of (H, W) arrays
        The sections; all must have the same shape.
    name : str
        Used in error messages.

    Raises
    ------
    ValueError
        Mixed section sizes, wrong dimensionality, an empty population or
        non-finite values.
    """
    if isinstance(images, list | tuple):
        if not images:
            raise ValueError(f"{name} is empty: pass at least one section")
        shapes = sorted({tuple(np.shape(im)) for im in images})
        if len(shapes) > 1:
            raise ValueError(
                f"{name} mixes section sizes {shapes!r}: crop or resample every section to "
                "one (H, W) first (the network has a fixed input size)"
            )
        images = np.stack([np.asarray(im) for im in images])
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) sections, got shape {arr.shape!r}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one section")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype!r}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; fill or drop those sections")
    return arr


def crop_offset(
    shape: Sequence[int], crop: Sequence[int], *, name: str = "sections"
) -> tuple[int, int]:
    """``(top, left)`` of the centre ``crop`` (h, w) in sections of ``shape`` (…, H, W).

    Raises
    ------
    ValueError
        When the sections are smaller than ``crop`` on either axis.
    """
    (H, W), (h, w) = (int(s) for s in tuple(shape)[-2:]), (int(s) for s in crop)
    if H < h or W < w:
        raise ValueError(
            f"{name} of {H}×{W} are smaller than the model's {h}×{w} input: use sections of "
            "at least that size (or train a model on these)"
        )
    return (H - h) // 2, (W - w) // 2


def center_crop(arr: Any, shape: Sequence[int], *, name: str = "sections") -> Any:
    """The centre ``shape`` (h, w) of the last two axes of ``arr`` (a view for numpy arrays).

    The paper centre-crops the Allen atlas's 320×456 coronal sections to
    320×448 to fit its network; sections larger than a model's input are cut
    the same way.  Returns ``arr`` itself when it already has that shape.

    Raises
    ------
    ValueError
        When ``arr`` is smaller than ``shape`` on either axis.
    """
    top, left = crop_offset(arr.shape, shape, name=name)
    h, w = (int(s) for s in shape)
    if arr.shape[-2:] == (h, w):
        return arr
    return arr[..., top : top + h, left : left + w]


def check_population_size(
    shape: Sequence[int], *, name: str = "the population", memory: int | None = None
) -> None:
    """Refuse a population whose float32 working copies would not fit in memory.

    Pre-processing and training hold about three float32 copies of the
    sections (the raw values, the scaled sections, the training tensors).
    A micro-CT volume picked by mistake (10⁹–10¹⁰ voxels) is refused here,
    before any of it is read, instead of filling the memory of the viewer.

    Parameters
    ----------
    shape : sequence of int
        ``(N, H, W)`` (or ``(H, W)``, one section).
    name : str
        Used in the message.
    memory : int, optional
        Bytes of memory; default the machine's physical memory.

    Raises
    ------
    ValueError
        When three float32 copies need more than half of ``memory``.
    """
    import psutil  # a napari dependency

    dims = [int(s) for s in shape]
    if len(dims) == 2:
        dims = [1, *dims]
    if len(dims) != 3:
        raise ValueError(f"{name} must be (N, H, W) sections, got shape {tuple(dims)!r}")
    need = 3 * 4 * int(np.prod(dims, dtype=np.int64))
    total = int(memory if memory is not None else psutil.virtual_memory().total)
    if need > total // 2:
        n, h, w = dims
        raise ValueError(
            f"{name} ({n} sections of {h}×{w}) would need about {need / 2**30:.1f} GiB as "
            f"float32 while training, more than half of this machine's {total / 2**30:.1f} "
            "GiB: is it a volume rather than a stack of 2-D sections? Use fewer sections, or "
            "crop or downsample them (the paper's sections are 320×448)"
        )


def check_rois(rois: ArrayLike, image_shape: tuple[int, ...]) -> NDArray[np.integer[Any]]:
    """Validate an ROI label map ``(H, W)`` (0 = background) against the section shape."""
    arr = np.asarray(rois)
    if arr.shape != tuple(image_shape):
        raise ValueError(
            f"ROI map shape {arr.shape!r} does not match the sections' (H, W) "
            f"{tuple(image_shape)!r}: use the atlas labels of the same section size"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ROI map must hold integer label ids, got dtype {arr.dtype!r}")
    return arr


def roi_names_for(ids: Sequence[int], names: Sequence[str] | None) -> list[str]:
    """Names of ROI ``ids``: ``names`` lists them in id order, or is indexed by id (0 = background).

    Falls back to ``"ROI <id>"`` when ``names`` fits neither reading.
    """
    ids = [int(i) for i in ids]
    if names is not None and len(names) == len(ids):
        return [str(n) for n in names]
    if names is not None and ids and len(names) > max(ids):
        return [str(names[i]) for i in ids]
    return [f"ROI {i}" for i in ids]


def read_population(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a population zarr group (as written by ``brainfeatures sample population``).

    Returns
    -------
    dict
        ``images`` (N, H, W) (required); when present ``clean`` (N, H, W),
        ``rois`` (H, W), ``factors`` (N, F), ``artifact`` (N,), all numpy;
        ``roi_names`` and ``factor_names`` lists from the group attributes
        (default: ``"ROI <id>"`` / ``"factor <i>"``).
    """
    import zarr

    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"population store {p!r} does not exist")
    try:
        group: Any = zarr.open_group(p, mode="r")
    except Exception as err:  # zarr raises several types for a non-group path
        raise ValueError(f"{p!r} is not a zarr group of a population: {err}") from None
    names = set(group.array_keys())
    if "images" not in names:
        raise ValueError(
            f"{p!r} has no 'images' array (found {sorted(names)!r}); write one with "
            "'brainfeatures sample population'"
        )
    check_population_size(group["images"].shape, name=f"{p!r}")
    out: dict[str, Any] = {"images": as_stack(group["images"][...])}
    shape = out["images"].shape
    for key in ("clean", "rois", "factors", "artifact"):
        if key in names:
            out[key] = np.asarray(group[key][...])
    if "clean" in out and out["clean"].shape != shape:
        raise ValueError(f"'clean' {out['clean'].shape!r} does not match 'images' {shape!r}")
    if "rois" in out:
        check_rois(out["rois"], shape[1:])
    attrs = dict(group.attrs)
    ids = sorted(int(i) for i in np.unique(out["rois"]) if i) if "rois" in out else []
    out["roi_names"] = list(attrs.get("roi_names") or [f"ROI {i}" for i in ids])
    n_f = out["factors"].shape[1] if "factors" in out and out["factors"].ndim == 2 else 0
    out["factor_names"] = list(attrs.get("factor_names") or [f"factor {i}" for i in range(n_f)])
    return out


def preprocess(
    images: ArrayLike | Sequence[ArrayLike],
    *,
    mean: float | None = None,
    clip: float = 3.8,
) -> tuple[NDArray[np.float32], dict[str, float]]:
    """Scale sections to the dataset brightness, clip bright leakage, map to [0, 1].

    Parameters
    ----------
    images : array (N, H, W) or sequence of (H, W) arrays
        Raw sections, non-negative intensities.
    mean : float, optional
        Target brightness.  Default: the dataset average (the mean of the
        per-section means).  Pass a trained model's ``info["mean"]`` to map
        new sections the same way.
    clip : float
        Pixels above ``clip × mean`` (after brightness scaling) are set to it;
        default 3.8 (the paper's).

    Returns
    -------
    scaled : float32 array (N, H, W)
        In [0, 1]: ``min(x · mean / mean_i, clip · mean) / (clip · mean)``,
        negative values set to 0.  A blank section (mean 0) stays 0.
    info : dict
        ``{"mean": float, "clip": float}``, JSON-ready.
    """
    arr = as_stack(images).astype(np.float32, copy=False)
    if not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive factor of the mean brightness, got {clip!r}")
    per_image = arr.reshape(len(arr), -1).mean(axis=1, dtype=np.float64)  # (N,)
    if mean is None:
        mean = float(per_image.mean())
    if not (np.isfinite(mean) and mean > 0):
        raise ValueError(
            f"the target brightness must be positive, got mean={mean!r} "
            "(are the sections blank or negative?)"
        )
    gain = np.where(per_image > 0, mean / np.where(per_image > 0, per_image, 1.0), 0.0)
    top = clip * mean
    scaled = arr * gain.astype(np.float32)[:, None, None]  # (N, H, W)
    np.clip(scaled, 0.0, top, out=scaled)
    scaled /= np.float32(top)
    return scaled, {"mean": float(mean), "clip": float(clip)}


def preprocess_for(
    images: ArrayLike | Sequence[ArrayLike], meta: Mapping[str, Any] | None
) -> NDArray[np.float32]:
    """Sections ``(N, H, W)`` pre-processed as a model's training sections were.

    Parameters
    ----------
    images : array (N, H, W) or sequence of (H, W) arrays
        Raw sections.
    meta : mapping or None
        A model file's metadata; its ``"preprocessing"`` entry (the ``info``
        :func:`preprocess` returned in training: ``mean``, ``clip``) maps the
        sections.  Without it: the sections' own mean brightness, clip 3.8.

    Returns
    -------
    float32 array (N, H, W)
        In [0, 1], as :func:`preprocess` gives.
    """
    pre = (meta or {}).get("preprocessing") or {}
    return preprocess(images, mean=pre.get("mean"), clip=pre.get("clip", 3.8))[0]
