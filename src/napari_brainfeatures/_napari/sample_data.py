"""npe2 sample data (File → Open Sample): the synthetic micro-CT slab and VAE population.

The micro-CT sample (128 × 1536 × 1024, the benchmarks' size, so that the paper's
128 px patches fit inside every area and the cortical layers are about a patch
thick) is generated once into a zarr cache under ``$BRAINFEATURES_HOME/samples``
and opened lazily from there afterwards.  The
cache is written under a temporary name and renamed when complete, so an
interrupted generation is never mistaken for a finished one.  No napari import.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from napari_brainfeatures._napari.reader import MICROMETRE, TRUTH_KEY, population_layers
from napari_brainfeatures._util.leftovers import clean_leftovers
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.progress import Progress, run
from napari_brainfeatures.synthetic.microct import DEFAULT_SHAPE, GENERATOR_VERSION

LayerData = tuple[Any, dict[str, Any], str]

MICROCT_SHAPE = DEFAULT_SHAPE
POPULATION_N = 256


def samples_home() -> Path:
    """Where generated samples are cached (``$BRAINFEATURES_HOME/samples``)."""
    home = Path(os.environ.get("BRAINFEATURES_HOME", Path.home() / ".napari-brainfeatures"))
    return home / "samples"


def ensure_microct(
    shape: tuple[int, int, int] | None = None, *, seed: int = 0
) -> Generator[Progress, None, Path]:
    """Path of the cached micro-CT sample, generating it first if needed (a generator).

    ``shape`` defaults to :data:`MICROCT_SHAPE`.
    """
    from napari_brainfeatures.synthetic import iter_write_microct

    shape = tuple(shape or MICROCT_SHAPE)  # type: ignore[assignment]
    name = f"microct-v{GENERATOR_VERSION}-seed{seed}-{'x'.join(map(str, shape))}.zarr"
    path = samples_home() / name
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)  # what a killed generation left (another process's is kept)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        yield from iter_write_microct(tmp, shape=shape, seed=seed)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def microct_layers(path: str | Path) -> list[LayerData]:
    """Lazy image + truth layers of a micro-CT sample zarr group."""
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    scale = tuple(attrs.get("voxel_size_um", (1.17, 1.17, 1.17)))
    classes = ClassTable.from_dict(attrs["classes"]) if "classes" in attrs else None
    image = da.from_zarr(group["image"])
    units = (MICROMETRE,) * 3
    areas_kw: dict[str, Any] = {
        "name": "areas (truth)",
        "scale": scale,
        "units": units,
        "opacity": 0.4,
        "metadata": {TRUTH_KEY: True},
    }
    if classes is not None:
        areas_kw["colormap"] = classes.color_dict()
        areas_kw["metadata"]["classes"] = classes.to_dict()
    meta = {"brainfeatures": {"path": str(path), "sample": "microct"}}
    return [
        (
            image,
            {
                "name": "micro-CT (synthetic)",
                "scale": scale,
                "units": units,
                "contrast_limits": (0, 255),
                "metadata": meta,
            },
            "image",
        ),
        (da.from_zarr(group["areas"]), areas_kw, "labels"),
        (
            da.from_zarr(group["layers"]),
            {
                "name": "cortical layers (truth)",
                "scale": scale,
                "units": units,
                "visible": False,
                "metadata": {TRUTH_KEY: True},
            },
            "labels",
        ),
    ]


def sample_microct() -> list[LayerData]:
    """File → Open Sample → Synthetic thalamocortical micro-CT."""
    return microct_layers(run(ensure_microct()))


def sample_population(n: int = POPULATION_N, *, seed: int = 0) -> list[LayerData]:
    """File → Open Sample → Synthetic population of coronal sections."""
    from napari_brainfeatures.synthetic import make_population

    pop = make_population(n, seed=seed)
    fields = ("images", "clean", "rois", "artifact", "factors", "factor_names", "roi_names")
    return population_layers({k: getattr(pop, k) for k in fields}, name="sections (synthetic)")
