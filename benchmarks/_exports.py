"""``exports_valid`` for the ``results`` benchmark: every OME-Zarr export checked twice.

A workspace gets the results the docks keep (factor maps with a channel per factor,
a cluster label map, both one slice of a volume placed at its z, and a 2-D map),
each is exported as OME-Zarr with :func:`napari_brainfeatures.results.export.export_result`,
and every image (and label image) written is

- validated by ome-zarr-models, an implementation of the specification independent
  of the writer (ome-zarr-py), and
- reopened by the package's own reader (``io.volume.open_volume``), which must give
  the map's shape, voxel size (the map's scale), translation and micrometre axes.

``exports_valid`` is true when every check passes; the failures are listed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def _results(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Kept results and what each exported image must reopen as."""
    from napari_brainfeatures.factors.results import Factors
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.results.kinds import save_clusters_result, save_factors_result

    rng = np.random.default_rng(0)
    h, w = 300, 280
    maps = rng.random((3, h, w)).astype(np.float32)
    fac = Factors(maps, rng.random((3, 8)).astype(np.float32), FeatureGrid((h, w), step=(4, 4)))
    vol = {"scale": (2.34, 4.68, 4.68), "translate": (11.7, 2.34, 2.34)}
    lab = (np.arange(h)[:, None] // 100 + 1 + np.zeros((1, w), int)).astype(np.int32)
    flat = {"scale": (0.5, 0.5), "translate": (0.0, 0.0)}
    want_vol = {"shape": (1, h, w), "voxel": vol["scale"], "translation": vol["translate"]}
    want_flat = {"shape": (1, h, w), "voxel": (None, 0.5, 0.5), "translation": (0.0, 0.0, 0.0)}
    return [
        (save_factors_result(root, fac, **vol), want_vol),
        (save_clusters_result(root, lab, **vol, scores={"k": 3}), want_vol),
        (save_clusters_result(root, lab, **flat), want_flat),
    ]


def _check(path: Path, want: dict[str, Any]) -> list[str]:
    """What is wrong with one exported image (empty: valid and reopens as it should)."""
    import zarr

    from napari_brainfeatures.io.volume import open_volume
    from napari_brainfeatures.results.export import validate_ome_zarr

    problems = []
    try:
        validate_ome_zarr(path)
    except ValueError as err:
        problems.append(f"invalid: {str(err)[:200]}")
    vol = open_volume(path)
    if tuple(vol.shape) != want["shape"]:
        problems.append(f"shape {vol.shape} != {want['shape']}")
    for got, exp, what in ((vol.voxel_size, want["voxel"], "voxel size"),
                           (vol.translation, want["translation"], "translation")):  # fmt: skip
        ok = got is not None and all(
            e is None or abs(g - e) < 1e-6 for g, e in zip(got, exp, strict=True)
        )
        if not ok:
            problems.append(f"{what} {got} != {exp}")
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)["ome"]["multiscales"][0]
    units = {a.get("unit") for a in attrs["axes"]}
    if units != {"micrometer"}:
        problems.append(f"axis units {units}")
    return problems


def exports_valid(out: Path) -> dict[str, Any]:
    """Export kept results as OME-Zarr; validate and reopen every image written."""
    from napari_brainfeatures.results.export import export_result

    root = out / "exports.brainfeatures"
    t0 = time.perf_counter()
    checked, failed = 0, {}
    for i, (result, want) in enumerate(_results(root)):
        for path in export_result(result, out / "exported" / str(i), ["ome-zarr"]):
            labels = path / "labels"
            images = (
                [path, *sorted(p for p in labels.iterdir() if p.is_dir())]
                if labels.is_dir()
                else [path]
            )
            for image in images:
                checked += 1
                problems = _check(image, want)
                if problems:
                    failed[str(image.relative_to(out))] = problems
    return {
        "exports_valid": checked > 0 and not failed,
        "exports_checked": checked,
        "exports_failed": failed,
        "exports_s": round(time.perf_counter() - t0, 2),
    }
