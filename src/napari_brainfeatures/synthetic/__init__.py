"""Deterministic synthetic sample data: a micro-CT slab and a population of sections.

:func:`make_microct` mimics the thalamocortical X-ray micro-CT of paper 000 (six
areas, cortical layers, barrels); :func:`make_population` mimics the Allen
auto-fluorescence coronal sections of paper 004 (per-individual factors and
artefacts).  Both are pure functions of their seed.
"""

from napari_brainfeatures.synthetic.microct import (
    DEFAULT_SHAPE,
    LAYER_GROUPS,
    LAYER_NAMES,
    TEST_SHAPE,
    VOXEL_SIZE_UM,
    MicroCT,
    iter_microct,
    iter_write_microct,
    make_microct,
    make_microct_lazy,
    render_microct_box,
    write_microct,
)

__all__ = [
    "DEFAULT_SHAPE", "LAYER_GROUPS", "LAYER_NAMES", "MicroCT", "TEST_SHAPE", "VOXEL_SIZE_UM",
    "iter_microct", "iter_write_microct", "make_microct", "make_microct_lazy",
    "render_microct_box", "write_microct",
]  # fmt: skip
