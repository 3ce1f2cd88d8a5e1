"""The napari labels writer: chunk by chunk (#20), never a narrower dtype, no wrapped id (#20)."""

from __future__ import annotations

import tracemalloc

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from helpers import workspace_held_elsewhere
from napari_brainfeatures._napari.writer import write_labels
from napari_brainfeatures.workspace import Workspace, WorkspaceBusyError


class LazyLabels:
    """Labels computed on request; asking for all of them at once is an error."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.int32), len(shape)
        self.largest = 0  # voxels of the largest block asked for

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole layer was loaded into memory")

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        ranges = [  # only the region asked for is computed
            range(*(i if isinstance(i, slice) else slice(i, i + 1)).indices(s))
            for i, s in zip(index, self.shape, strict=True)
        ]
        size = int(np.prod([len(r) for r in ranges]))
        if size == np.prod(self.shape) and size > 1:
            raise AssertionError("the whole layer was asked for at once")
        self.largest = max(self.largest, size)
        grid = np.ix_(*[np.asarray(r) for r in ranges])
        block = (sum(g * (i + 3) for i, g in enumerate(grid)) % 300).astype(self.dtype)
        drop = tuple(0 if isinstance(i, int | np.integer) else slice(None) for i in index)
        return block[drop]

    def expected(self) -> np.ndarray:
        grid = np.ogrid[tuple(slice(0, s) for s in self.shape)]
        return (sum(g * (i + 3) for i, g in enumerate(grid)) % 300).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_lazy_labels_are_written_without_loading_them(tmp_path, suffix):
    lazy = LazyLabels((5, 600, 700))  # two by two chunks of 512 per slice
    target = tmp_path / f"l{suffix}"
    write_labels(str(target), lazy, {"name": "areas"})
    back = zarr.open_array(str(target))[:] if suffix == ".zarr" else tifffile.imread(target)
    np.testing.assert_array_equal(back, lazy.expected())
    assert back.dtype == np.uint16  # ids up to 299: uint16 (int32 source)
    assert lazy.largest <= 600 * 700  # one slice at most


def test_peak_memory_is_a_few_chunks(tmp_path):
    def layer(shape):
        return da.from_array(LazyLabels(shape), chunks=(1, 512, 512), asarray=False)

    write_labels(str(tmp_path / "warm.zarr"), layer((2, 64, 64)), {})  # imports not counted
    shape = (32, 512, 512)  # 32 MiB as int32, 16 MiB as uint16
    big = layer(shape)  # computing one source chunk takes about 4 MiB (int64 grids)
    tracemalloc.start()
    try:
        write_labels(str(tmp_path / "l.zarr"), big, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for 32 MiB of labels"
    back = zarr.open_array(str(tmp_path / "l.zarr"))
    assert back.dtype == np.uint16 and int(back[31, 511, 511]) == (31 * 3 + 511 * 9) % 300


def test_workspace_labels_keep_uint16_when_saved(tmp_path):
    """#20: every id <= 255 used to rewrite the store as uint8; a later 300 was stored as 44."""
    ws = Workspace.open(tmp_path / "w", shape=(2, 16, 16))
    store = ws.labels()
    store[0, :4, :4] = 5
    meta = {"name": "ct areas", "metadata": {"brainfeatures_workspace": str(ws.root)}}
    stamp = (ws.labels_path / "zarr.json").stat().st_mtime_ns
    write_labels(str(ws.labels_path), store, meta)  # onto itself: nothing to write
    assert (ws.labels_path / "zarr.json").stat().st_mtime_ns == stamp
    as_numpy = np.asarray(store[:]).astype(np.int64)  # a copy of the layer, ids <= 255
    write_labels(str(ws.labels_path), as_numpy, {"name": "ct areas"})
    again = zarr.open_array(str(ws.labels_path), mode="r+")
    assert again.dtype == np.uint16 and again.chunks == (1, 16, 16)  # the store's, kept
    again[1, 0, 0] = 300
    assert int(ws.labels()[1, 0, 0]) == 300 and int(ws.labels()[0, 0, 0]) == 5
    ws.close()


def test_dtype_never_narrower_than_target_or_class_table(tmp_path):
    small = np.ones((2, 4, 4), np.uint8)
    write_labels(str(tmp_path / "a.zarr"), small, {})  # a plain uint8 layer stays uint8
    assert zarr.open_array(str(tmp_path / "a.zarr")).dtype == np.uint8
    with_table = {"metadata": {"classes": {"classes": []}}}
    for name in ("b.zarr", "b.tif"):
        write_labels(str(tmp_path / name), small, with_table)  # a class table: ids to 65535
    assert zarr.open_array(str(tmp_path / "b.zarr")).dtype == np.uint16
    assert tifffile.imread(tmp_path / "b.tif").dtype == np.uint16
    write_labels(str(tmp_path / "b.zarr"), small, {})  # an old uint16 target stays uint16
    assert zarr.open_array(str(tmp_path / "b.zarr")).dtype == np.uint16
    big = small.astype(np.int32) * 300
    write_labels(str(tmp_path / "a.zarr"), big, {})  # uint8 target, id 300: widened, not 44
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"))[:], big)


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
@pytest.mark.parametrize("bad", [70000, -1])
def test_ids_that_do_not_fit_are_refused_not_wrapped(tmp_path, suffix, bad):
    target = tmp_path / f"l{suffix}"
    write_labels(str(target), np.ones((2, 4, 4), np.uint16), {})
    labels = np.ones((2, 4, 4), np.int32)
    labels[1, 2, 3] = bad
    with pytest.raises(ValueError, match=f"label id {bad} does not fit uint16.*0..65535"):
        write_labels(str(target), labels, {})
    back = zarr.open_array(str(target))[:] if suffix == ".zarr" else tifffile.imread(target)
    np.testing.assert_array_equal(back, np.ones((2, 4, 4)))  # the old file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_workspace_labels_of_another_writer_or_shape_are_refused(tmp_path):
    ws = Workspace.open(tmp_path / "w", shape=(2, 8, 8))
    ws.labels()[0, 0, 0] = 1
    ws.close()
    with pytest.raises(ValueError, match="cannot replace"):
        write_labels(str(ws.labels_path), np.zeros((2, 8, 9), np.uint16), {})
    with workspace_held_elsewhere(ws.root) as holder:
        with pytest.raises(WorkspaceBusyError, match=f"process {holder.pid}"):
            write_labels(str(ws.labels_path), np.zeros((2, 8, 8), np.uint16), {})
    assert int(Workspace.open(ws.root, mode="r").labels()[0, 0, 0]) == 1
