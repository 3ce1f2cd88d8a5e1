"""npe2 reader: zarr / OME-Zarr / TIFF / TIFF folders / 2-D images as lazy image layers.

Returns napari LayerData tuples; imports no napari.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures.io.volume import (
    IMAGE_NAMES,
    Volume,
    is_zarr_store,
    open_volume,
    sample_contrast_limits,
)

MICROMETRE = "micrometer"  # pint's name, as napari's layer ``units`` takes it
TRUTH_KEY = "brainfeatures_truth"  # layer metadata: a sample's ground truth, not the user's

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """A reader function when ``path`` opens as a volume, else None (napari tries others).

    The path is opened here (lazily: headers and metadata only), so that a file
    this plugin cannot read is declined rather than claimed and then refused.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    try:
        if is_population_store(p):
            return read_volume
        vol = open_volume(p)
    except Exception:  # not ours (or unreadable): let napari fall back to another reader
        return None

    def read(_path: Any) -> list[LayerData]:
        return [layer_data(vol), *ome_label_layers(p)]

    return read


def _ome(path: Path) -> dict[str, Any]:
    """A zarr group's OME attributes (NGFF 0.5 under ``ome``, 0.4 at the top), or {}."""
    import zarr

    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # noqa: BLE001 - an array, or not zarr: no OME labels
        return {}
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, dict) else attrs


def _as_labels(layer: LayerData, ome: dict[str, Any]) -> LayerData:
    """An OME-Zarr label image (``image-label``) as a Labels layer in its own colours."""
    data, kwargs, _ = layer
    kwargs = {k: v for k, v in kwargs.items() if k != "contrast_limits"}
    colours = {
        int(c["label-value"]): tuple(v / 255 for v in c["rgba"])
        for c in (ome.get("image-label") or {}).get("colors") or []
        if isinstance(c, dict) and "label-value" in c and len(c.get("rgba") or []) == 4
    }
    if colours:
        kwargs["colormap"] = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **colours}
    return data, kwargs, "labels"


def ome_label_layers(path: Path) -> list[LayerData]:
    """The label images of an OME-Zarr image (its ``labels/`` group), as Labels layers."""
    names = (_ome(path / "labels").get("labels") or []) if (path / "labels").is_dir() else []
    out = []
    for name in names:
        try:
            vol = open_volume(path / "labels" / str(name))
        except Exception:  # noqa: BLE001 - a damaged label image: the image still opens
            continue
        layer = layer_data(vol)  # with image-label metadata it is a Labels layer already
        data, kwargs, kind = layer if layer[2] == "labels" else _as_labels(layer, {})
        out.append((data, {**kwargs, "name": f"{path.name.split('.')[0]} {name} labels"}, kind))
    return out


def layer_data(vol: Volume) -> LayerData:
    """The image LayerData tuple of an opened volume (multiscale when it has levels).

    ``scale`` is the full-resolution voxel size (``units`` micrometres) when known
    and ``translate`` its offset (OME-Zarr ``translation``); napari derives the lower levels.
    """
    meta = {"brainfeatures": vol.describe()}
    kwargs: dict[str, Any] = {
        "name": vol.name,
        "contrast_limits": sample_contrast_limits(vol),
        "metadata": meta,
    }
    if vol.voxel_size:
        kwargs["scale"] = vol.voxel_size
        kwargs["units"] = (MICROMETRE,) * len(vol.voxel_size)  # the scale bar reads µm
    if any(vol.translation):
        kwargs["translate"] = vol.translation
    data = vol.levels if vol.multiscale else vol.data
    if vol.multiscale:
        kwargs["multiscale"] = True
    ome = _ome(vol.path) if vol.kind == "ome-zarr" else {}
    if "image-label" in ome:  # a label image itself
        return _as_labels((data, kwargs, "image"), ome)
    return (data, kwargs, "image")


def read_volume(path: str | list[str]) -> list[LayerData]:
    """Open ``path`` lazily as one image layer (raises a clear error otherwise).

    A population store (a zarr group with an ``images`` stack of sections, as
    ``brainfeatures sample population`` writes) opens as the layers the
    Latent dock uses instead: :func:`population_layers`.
    """
    if isinstance(path, list):
        path = path[0]
    if is_population_store(Path(path)):
        from napari_brainfeatures.latent.population import read_population

        return population_layers(read_population(path), name=Path(path).stem)
    return [layer_data(open_volume(path)), *ome_label_layers(Path(path))]


def is_population_store(path: Path) -> bool:
    """Whether ``path`` is a zarr group with a 3-D ``images`` array and no volume array."""
    if not is_zarr_store(path):
        return False
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        names = set(group.array_keys())
    except Exception:  # an array, or unreadable: the volume reader says what is wrong
        return False
    return "images" in names and not names & set(IMAGE_NAMES) and group["images"].ndim == 3


def population_layers(pop: dict[str, Any], *, name: str = "sections") -> list[LayerData]:
    """Layers of a population (``read_population``'s dict) for the Latent dock.

    The sections (artifact kinds and known factors in the metadata), the same
    sections without artifacts when present (hidden, tagged ``clean_of`` so the
    dock scores artifact rejection on them) and the ROI labels with their names.
    """
    images = pop["images"]
    hi = float(np.percentile(images[:: max(1, len(images) // 16)], 99.8))
    meta: dict[str, Any] = {}
    for key in ("artifact", "factors"):
        if key in pop:
            meta[key] = np.asarray(pop[key]).tolist()
    if "factor_names" in pop and "factors" in pop:
        meta["factor_names"] = list(pop["factor_names"])
    out: list[LayerData] = [
        (images, {"name": name, "contrast_limits": (0.0, hi), "metadata": meta}, "image")
    ]
    if "clean" in pop:
        out.append((pop["clean"], {"name": f"{name} without artifacts", "visible": False,
                                   "contrast_limits": (0.0, hi),
                                   "metadata": {"clean_of": name}}, "image"))  # fmt: skip
    if "rois" in pop:
        out.append((np.asarray(pop["rois"]), {"name": f"{name} ROIs", "opacity": 0.35,
                                              "metadata": {"roi_names": list(pop["roi_names"])}},
                    "labels"))  # fmt: skip
    return out
