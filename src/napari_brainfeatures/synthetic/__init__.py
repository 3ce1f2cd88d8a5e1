"""Deterministic synthetic sample data: a micro-CT slab and a population of sections.

:func:`make_microct` mimics the thalamocortical X-ray micro-CT of paper 000 (six
areas, cortical layers, barrels); :func:`make_population` mimics the Allen
auto-fluorescence coronal sections of paper 004 (per-individual factors and
artefacts).  Both are pure functions of their seed.  The population API is
imported on first use, so the micro-CT does not depend on it.
"""

from typing import Any

from napari_brainfeatures.synthetic.microct import (
    DEFAULT_SHAPE,
    GENERATOR_VERSION,
    LAYER_GROUPS,
    LAYER_NAMES,
    TEST_SHAPE,
    VERSIONS,
    VOXEL_SIZE_UM,
    MicroCT,
    iter_microct,
    iter_write_microct,
    make_microct,
    make_microct_lazy,
    render_microct_box,
    write_microct,
)

_POPULATION = ("ARTIFACT_NAMES", "FACTOR_NAMES", "ROI_NAMES", "Population", "make_population",
               "render_sections")  # fmt: skip

__all__ = [
    "DEFAULT_SHAPE", "GENERATOR_VERSION", "LAYER_GROUPS", "LAYER_NAMES", "MicroCT", "TEST_SHAPE",
    "VERSIONS", "VOXEL_SIZE_UM", "iter_microct", "iter_write_microct", "make_microct",
    "make_microct_lazy", "render_microct_box", "write_microct", *_POPULATION,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _POPULATION:
        from napari_brainfeatures.synthetic import population

        return getattr(population, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
