"""Exports of a result that other tools read: OME-Zarr, TIFF, CSV, PNG/SVG.

- ``ome-zarr``: each map as an OME-Zarr 0.5 multiscale image written by
  ome-zarr-py (axes in micrometres, the map's scale and translation on every
  level); a label map also as OME-Zarr labels (``labels/NAME``) with its colours
  and names in ``image-label``.  A map with channels (NMF factors) gives one
  image per channel.  Every export is validated by ome-zarr-models (an
  independent implementation of the specification) before it is reported.
- ``tiff``: each map as an ImageJ TIFF (``ZCYX``) with its pixel size (resolution in
  µm) and z spacing.
- ``csv``: the result's tables, and its JSON numbers flattened (``metrics_json.csv``).
- ``png``: its figures (PNG and SVG).

Each file is written under a hidden name and renamed into place, so an export
never leaves half a file where another tool would read it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.results.maps import MapLayer, open_map_layer
from napari_brainfeatures.results.record import Result, open_result

__all__ = ["FORMATS", "export_result", "validate_ome_zarr"]

FORMATS = ("ome-zarr", "tiff", "csv", "png")
MIN_LEVEL_PX = 64  # a pyramid level is made while its smaller side keeps this many pixels


def export_result(
    result: str | os.PathLike[str] | Result,
    to: str | os.PathLike[str],
    formats: Iterable[str] = FORMATS,
) -> list[Path]:
    """Write the exports of one result folder into ``to`` (created); returns what was written.

    Parameters
    ----------
    result : path or Result
        A folder under ``<workspace>/results/<kind>/``.
    to : path
        The folder to write into.  A file of the same name written earlier is
        replaced; other files there are left alone.
    formats : iterable of {"ome-zarr", "tiff", "csv", "png"}
        Default: all.

    Raises
    ------
    ValueError
        An unknown format, or a folder that is not a result.
    """
    res = result if isinstance(result, Result) else open_result(result)
    formats = list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be some of {FORMATS!r}, got {formats!r}")
    out = Path(to).expanduser()
    if out.resolve() == res.path.resolve() or res.path.resolve() in out.resolve().parents:
        raise ValueError(
            f"export into a folder outside the result {str(res.path)!r}, got {str(out)!r}"
        )
    out.mkdir(parents=True, exist_ok=True)
    maps = [
        open_map_layer(res.path / f)
        for f in res.files
        if f.endswith(".zarr") and _is_map(res.path / f)
    ]
    written: list[Path] = []
    for fmt in formats:
        if fmt == "ome-zarr":
            for m in maps:
                written += _ome_zarr(m, out)
        elif fmt == "tiff":
            written += [_tiff(m, out) for m in maps]
        elif fmt == "csv":
            written += _csv(res, out)
        else:
            written += [_copy(res.path / f, out) for f in res.files if f.endswith((".png", ".svg"))]
    return written


def _is_map(path: Path) -> bool:
    try:
        open_map_layer(path)
    except ValueError:
        return False
    return True


def _into(target: Path, write: Any) -> Path:
    """``write(tmp)`` beside ``target``, then rename it into place (an old one replaced)."""
    clean_leftovers(target)
    tmp = temp_path(target)
    try:
        write(tmp)
        if target.is_dir() and not target.is_symlink():
            old = temp_path(target, "old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return target


def _copy(src: Path, out: Path) -> Path:
    return _into(out / src.name, lambda tmp: shutil.copyfile(src, tmp))


# -- OME-Zarr ------------------------------------------------------------------------------------
def _factors(shape: tuple[int, ...]) -> list[int]:
    small, out, f = min(shape[-2:]), [], 2
    while small // f >= MIN_LEVEL_PX:
        out.append(f)
        f *= 2
    return out


def _shift(group: Any, translate: list[float]) -> None:
    """Add ``translate`` (µm, spatial axes) to every level's translation (ome-zarr-py writes 0)."""
    attrs = dict(group.attrs)
    for ms in attrs["ome"]["multiscales"]:
        for ds in ms["datasets"]:
            for t in ds["coordinateTransformations"]:
                if t["type"] == "translation":
                    n = len(translate)
                    head = t["translation"][:-n]
                    t["translation"] = head + [
                        a + b for a, b in zip(t["translation"][-n:], translate, strict=True)
                    ]
    group.attrs.update(attrs)


def _ome_zarr(m: MapLayer, out: Path) -> list[Path]:
    data = np.asarray(m.data)
    if "c" in m.axes:
        names = m.channels or [str(i) for i in range(data.shape[0])]
        return [
            _into(
                out / f"{m.name}-{_safe(n)}.ome.zarr",
                lambda tmp, a=a, n=n: _write_ome(tmp, a, m, name=f"{m.name}-{n}"),
            )
            for n, a in zip(names, data, strict=True)
        ]
    return [_into(out / f"{m.name}.ome.zarr", lambda tmp: _write_ome(tmp, data, m))]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _write_ome(path: Path, data: np.ndarray, m: MapLayer, name: str | None = None) -> None:
    """One OME-Zarr image of ``data`` with ``m``'s geometry, named ``name`` (default ``m``'s)."""
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image, write_labels

    axes = m.spatial
    scale = dict(zip(axes, m.scale, strict=True))
    units = {a: m.units for a in axes}
    factors = _factors(data.shape)
    group = zarr.open_group(str(path), mode="w")
    image = data.astype(np.float32) if m.layer == "image" else data
    method = Methods.NEAREST if m.layer == "labels" else Methods.RESIZE
    write_image(image, group, axes=axes, scale=scale, axes_units=units, scale_factors=factors,
                method=method, name=name or m.name)  # fmt: skip
    _shift(group, list(m.translate))
    if m.layer == "labels":
        classes = sorted(m.classes.items())
        meta = {
            "colors": [
                {"label-value": i, "rgba": [round(255 * c) for c in rgba]}
                for i, (_, rgba) in classes
            ],
            "properties": [{"label-value": i, "name": nm} for i, (nm, _) in classes],
            "source": {"image": "../../"},  # the image it labels (readers tie them by it)
        }
        write_labels(data, group, name=m.name, axes=axes, scaler=None, scale_factors=factors,
                     scale=scale, axes_units=units, label_metadata=meta)  # fmt: skip
        _shift(group[f"labels/{m.name}"], list(m.translate))
        labels = group["labels"]
        ome = dict(labels.attrs.get("ome", {}))
        labels.attrs["ome"] = {"version": "0.5", **ome}  # ome-zarr-py 0.18 leaves it out
    validate_ome_zarr(path)


def validate_ome_zarr(path: str | os.PathLike[str]) -> Any:
    """Validate an OME-Zarr image (and its labels) with ome-zarr-models; returns its model.

    Raises
    ------
    ValueError
        The group does not validate (the validator's message).
    """
    import zarr
    from ome_zarr_models import open_ome_zarr

    try:
        return open_ome_zarr(zarr.open_group(str(path), mode="r"))
    except Exception as err:  # the validator raises several kinds
        raise ValueError(f"{str(path)!r} is not valid OME-Zarr: {str(err)[:500]}") from None


# -- TIFF and CSV --------------------------------------------------------------------------------
def _tiff(m: MapLayer, out: Path) -> Path:
    import tifffile

    data = np.asarray(m.data)
    if "c" not in m.axes:
        data = data[None]  # (1, [Z,] Y, X)
    if "z" not in m.axes:
        data = data[:, None]  # (C, 1, Y, X)
    data = np.moveaxis(data, 0, 1)  # (Z, C, Y, X): ImageJ's order
    if m.layer == "image":
        data = data.astype(np.float32)
    elif data.dtype.itemsize > 2:
        data = data.astype(np.uint16 if data.max(initial=0) < 65536 else np.float32)
    sy, sx = m.scale[-2:]
    ty, tx = m.translate[-2:] if m.translate else (0.0, 0.0)
    # ImageJ's calibration origin, in pixels: where the map lies on its image
    meta: dict[str, Any] = {"axes": "ZCYX", "unit": "um", "xorigin": -tx / sx, "yorigin": -ty / sy}
    if "z" in m.axes:
        meta["spacing"] = float(m.scale[0])
        meta["zorigin"] = -float(m.translate[0] if m.translate else 0.0) / float(m.scale[0])
    if m.channels:  # one name per plane, planes in ZCYX order
        meta["Labels"] = [str(c) for _ in range(data.shape[0]) for c in m.channels]

    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=meta)

    return _into(out / f"{m.name}.tif", write)


def _flat(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        yield prefix, " ".join(str(v) for v in value)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _flat(f"{prefix}[{i}]", v)
    else:
        yield prefix, value


def _csv(res: Result, out: Path) -> list[Path]:
    from napari_brainfeatures.results.tables import write_table

    written = [_copy(res.path / f, out) for f in res.files if f.endswith(".csv")]
    for f in res.files:
        if f.endswith(".json"):
            rows = [list(kv) for kv in _flat("", json.loads((res.path / f).read_text("utf-8")))]
            target = out / f"{f.removesuffix('.json')}_json.csv"
            written.append(
                _into(target, lambda tmp, rows=rows: write_table(tmp, ["key", "value"], rows))
            )
    return written
