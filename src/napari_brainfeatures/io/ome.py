"""OME-Zarr (NGFF 0.4 and 0.5) images as ``(Z, Y, X)`` volumes in micrometres.

The metadata is parsed and validated by ``ome_zarr_models`` (its ``ImageAttrs``
models); this module then turns it into what the plugin needs: singleton time /
channel axes dropped (a channel axis of more than one channel is refused),
every level's scale and translation in micrometres (units converted, a
non-length unit refused), and levels checked against their scales (a level
whose shape disagrees with its scale is refused).  A 2-D (Y, X) image opens as
one section.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from napari_brainfeatures.io.base import LENGTH_UNITS, Volume, VolumeError, length_unit_um

__all__ = ["is_ome_zarr", "open_ome_zarr", "parse_multiscale"]


def is_ome_zarr(attrs: Any) -> bool:
    """Whether group attributes hold OME ``multiscales`` (0.4 top level, 0.5 under ``ome``)."""
    ome = attrs.get("ome")
    return bool(attrs.get("multiscales") or (isinstance(ome, dict) and ome.get("multiscales")))


def parse_multiscale(attrs: dict[str, Any], path: Path) -> Any:
    """The first ``Multiscale`` model of the group attributes, validated by ome_zarr_models."""
    import pydantic

    ome = attrs.get("ome")
    if isinstance(ome, dict) and ome.get("multiscales"):
        from ome_zarr_models.v05.image import ImageAttrs

        version, payload = str(ome.get("version", "?")), ome
        if version != "0.5":
            raise VolumeError(
                f"OME-Zarr {str(path)!r} says version {version!r} under 'ome'; NGFF 0.4 "
                "(top-level 'multiscales') and 0.5 ('ome' with version '0.5') are supported"
            )
    else:
        from ome_zarr_models.v04.image import ImageAttrs  # type: ignore[assignment]

        ms = attrs.get("multiscales") or [{}]
        version = ms[0].get("version") if isinstance(ms[0], dict) else None
        if version not in (None, "0.4"):
            raise VolumeError(
                f"OME-Zarr {str(path)!r} is NGFF version {version!r}; only 0.4 and 0.5 are "
                "supported: re-save it with a current writer (e.g. ome-zarr-py)"
            )
        payload = {k: v for k, v in attrs.items() if k in ("multiscales", "omero")}
    try:
        return ImageAttrs.model_validate(payload).multiscales[0]
    except pydantic.ValidationError as err:
        why = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:3]
        )
        raise VolumeError(f"OME-Zarr {str(path)!r} has invalid metadata: {why}") from None


def _vector(transforms: Any, kind: str, n: int, where: str) -> list[float]:
    for t in transforms or ():
        if t.type == kind:
            values = getattr(t, kind, None)
            if values is None:  # a 'path' transform: values stored in a file
                raise VolumeError(f"{where}: a {kind} stored in a file is not supported")
            return [float(v) for v in values]
    return [1.0 if kind == "scale" else 0.0] * n


def open_ome_zarr(group: zarr.Group, path: Path) -> Volume:
    """Open the first multiscale image of an OME-Zarr ``group`` lazily."""
    ms = parse_multiscale(dict(group.attrs), path)
    axes = list(ms.axes)
    names = [str(a.name) for a in axes]
    n = len(axes)
    space = [i for i, a in enumerate(axes) if a.type == "space"]
    notes: list[str] = []
    um = []
    for i in space:
        unit = axes[i].unit
        f = 1.0 if unit is None else length_unit_um(unit)
        if f is None:
            raise VolumeError(
                f"OME-Zarr {str(path)!r}: spatial axis {names[i]!r} has unit {unit!r}, not a "
                f"length; set it to one of {', '.join(LENGTH_UNITS[5:10])}, ..."
            )
        um.append(f)
    units = {axes[i].unit for i in space}
    if None in units:
        notes.append("the axes have no unit: scale read as micrometres")
    elif units != {"micrometer"}:
        notes.append(f"units {', '.join(sorted(map(str, units)))} converted to micrometres")
    g_scale = _vector(ms.coordinateTransformations, "scale", n, f"OME-Zarr {str(path)!r}")
    g_trans = _vector(ms.coordinateTransformations, "translation", n, f"OME-Zarr {str(path)!r}")
    levels, scales, translations, shapes = [], [], [], []
    for ds in ms.datasets:
        where = f"OME-Zarr {str(path)!r} level {ds.path!r}"
        try:
            arr = group[ds.path]
        except KeyError:
            raise VolumeError(f"{where} is listed but missing") from None
        if not isinstance(arr, zarr.Array):
            raise VolumeError(f"{where} is a group, not an array")
        if arr.ndim != n:
            raise VolumeError(
                f"{where} is {arr.ndim}-D with shape {tuple(arr.shape)!r} but the metadata "
                f"lists {n} axes {names!r}"
            )
        s = _vector(ds.coordinateTransformations, "scale", n, where)
        t = _vector(ds.coordinateTransformations, "translation", n, where)
        s, t = (
            [a * b for a, b in zip(s, g_scale, strict=True)],
            [a * b + c for a, b, c in zip(t, g_scale, g_trans, strict=True)],
        )
        if not all(math.isfinite(s[i]) and s[i] > 0 for i in space):
            raise VolumeError(
                f"{where} has scale {s!r} for axes {names!r}; every spatial scale must be a "
                "positive number: fix the scale in its coordinateTransformations"
            )
        shapes.append(tuple(int(v) for v in arr.shape))
        scales.append(s)
        translations.append(t)
        try:
            levels.append(da.from_zarr(arr))
        except Exception as err:
            raise VolumeError(f"cannot read {where}: {err}") from None
    _check_axes_and_levels(path, axes, space, shapes, scales, [d.path for d in ms.datasets])
    idx = tuple(slice(None) if i in space else 0 for i in range(n))
    dropped = [names[i] for i in range(n) if i not in space]
    if dropped:
        notes.append(f"singleton axes {', '.join(dropped)} dropped")
    levels = [lv[idx] for lv in levels]

    thick = scales[0][space[0]] * um[0]  # a 2-D image's section: as thick as its pixel is high

    def zyx(values: list[float], scale: bool) -> tuple[float, float, float]:
        v = [values[i] * f for i, f in zip(space, um, strict=True)]
        if len(v) == 2:  # one section at every level (the levels shrink in Y and X only)
            v = [thick if scale else 0.0, *v]
        return (float(f"{v[0]:.9g}"), float(f"{v[1]:.9g}"), float(f"{v[2]:.9g}"))

    if len(space) == 2:
        levels = [lv[None] for lv in levels]
        notes.append("a 2-D image: opened as one section (Z = 1)")
    level_scales = [zyx(s, True) for s in scales]
    name = ms.name if isinstance(ms.name, str) else ""
    return Volume(levels, path, "ome-zarr", level_scales[0], name=name, attrs=dict(group.attrs),
                  level_scales=level_scales,
                  level_translations=[zyx(t, False) for t in translations],
                  notes=notes)  # fmt: skip


def _check_axes_and_levels(
    path: Path,
    axes: list[Any],
    space: list[int],
    shapes: list[tuple[int, ...]],
    scales: list[list[float]],
    paths: list[str],
) -> None:
    """Refuse non-spatial axes of size > 1 and levels whose shapes disagree with their scales."""
    for i, a in enumerate(axes):
        if i in space or shapes[0][i] == 1:
            continue
        what = {"channel": "channels", "time": "time points"}.get(str(a.type), "entries")
        raise VolumeError(
            f"OME-Zarr {str(path)!r} has {shapes[0][i]} {what} on axis {a.name!r} (shape "
            f"{shapes[0]!r}); only a single grey image is opened: save the "
            f"{'channel' if a.type == 'channel' else 'one'} you want as its own OME-Zarr"
        )
    for k in range(1, len(shapes)):
        for i in range(len(axes)):
            if i in space:
                expected = shapes[0][i] * scales[0][i] / scales[k][i]
                ok = abs(shapes[k][i] - expected) <= 1.0 + 1e-6 * expected
            else:
                expected, ok = shapes[0][i], shapes[k][i] == shapes[0][i]
            if not ok:
                raise VolumeError(
                    f"OME-Zarr {str(path)!r}: levels disagree in shape: level {paths[0]!r} is "
                    f"{shapes[0]!r} with scale {scales[0]!r}, level {paths[k]!r} is "
                    f"{shapes[k]!r} with scale {scales[k]!r} (axis {axes[i].name!r}: "
                    f"about {expected:g} expected); fix the store's levels or their scales"
                )
