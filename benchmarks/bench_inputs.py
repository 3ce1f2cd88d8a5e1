"""Open what neuroanatomists have: inputs written by other libraries, checked against the truth.

Each input is written into ``out`` with another library (imageio/PIL, tifffile,
zarr, ome-zarr-py, hand-written NGFF JSON), then opened with ``open_volume``.
Its shape and voxel size in micrometres are compared with what was written
(voxel size None where the file records none).  Reported: ``formats_tried``,
``formats_opened``, a per-format table and ``wrong_voxel_size`` (must be 0),
``wrong_shape``, ``wrong_values`` (first slice compared with the data) and
``wrong_outcome`` (a good input refused or a bad one, three channels, opened).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Truth = tuple[tuple[int, int, int], tuple[float, float, float] | None, np.ndarray]


def _section(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 250, size=(h, w), dtype=np.uint8)


def _writers(n_z: int, h: int, w: int) -> dict[str, Callable[[Path], tuple[Path, Truth]]]:
    import imageio.v3 as iio
    import tifffile
    import zarr
    from PIL import Image

    sec = _section(h, w)
    vol = np.stack([np.roll(sec, i, axis=1) for i in range(n_z)])

    def png(d: Path) -> tuple[Path, Truth]:
        Image.fromarray(sec).save(d / "s.png", dpi=(25_400 / 0.65, 25_400 / 0.65))
        return d / "s.png", ((1, h, w), (0.65, 0.65, 0.65), sec)

    def jpeg(d: Path) -> tuple[Path, Truth]:
        iio.imwrite(d / "s.jpg", np.dstack([sec] * 3), quality=100)
        return d / "s.jpg", ((1, h, w), None, sec)

    def jpeg_72dpi(d: Path) -> tuple[Path, Truth]:
        """An image editor's default resolution: no pixel size (unknown), not 352.8 µm."""
        Image.fromarray(sec).save(d / "s.jpg", dpi=(72, 72), quality=100)
        return d / "s.jpg", ((1, h, w), None, sec)

    def ome_tiff_pyramid(d: Path) -> tuple[Path, Truth]:
        """A pyramid in SubIFDs, as QuPath and bfconvert write."""
        meta = {"axes": "ZYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65,
                "PhysicalSizeZ": 2.5}  # fmt: skip
        with tifffile.TiffWriter(d / "p.ome.tif", bigtiff=True) as tif:
            tif.write(vol, subifds=2, tile=(16, 16), compression="zlib", metadata=meta)
            for k in (2, 4):
                tif.write(vol[:, ::k, ::k], subfiletype=1, tile=(16, 16), compression="zlib")
        return d / "p.ome.tif", ((n_z, h, w), (2.5, 0.65, 0.65), sec)

    def tiff_2d(d: Path) -> tuple[Path, Truth]:
        tifffile.imwrite(d / "s.tif", sec, resolution=(2.0, 2.0), resolutionunit="MICROMETER")
        return d / "s.tif", ((1, h, w), (0.5, 0.5, 0.5), sec)

    def imagej_1slice(d: Path) -> tuple[Path, Truth]:
        tifffile.imwrite(d / "s.tif", sec[None], imagej=True, resolution=(1 / 1.17, 1 / 1.17),
                         metadata={"unit": "um", "spacing": 1.17})  # fmt: skip
        return d / "s.tif", ((1, h, w), (1.17, 1.17, 1.17), sec)

    def tiff_3d(d: Path) -> tuple[Path, Truth]:
        tifffile.imwrite(d / "v.tif", vol, imagej=True, resolution=(1 / 0.8, 1 / 0.8),
                         metadata={"unit": "um", "spacing": 2.0, "axes": "ZYX"})  # fmt: skip
        return d / "v.tif", ((n_z, h, w), (2.0, 0.8, 0.8), sec)

    def tiff_folder(d: Path) -> tuple[Path, Truth]:
        for i, s in enumerate(vol):
            tifffile.imwrite(d / f"z_{i}.tif", s)
        return d, ((n_z, h, w), None, sec)

    def folder_one_stack(d: Path) -> tuple[Path, Truth]:
        tifffile.imwrite(d / "stack.tif", vol, imagej=True, metadata={"axes": "ZYX"})
        return d, ((n_z, h, w), None, sec)

    def zarr_v(fmt: int) -> Callable[[Path], tuple[Path, Truth]]:
        def write(d: Path) -> tuple[Path, Truth]:
            z = zarr.create_array(str(d / "v.zarr"), data=vol, zarr_format=fmt)  # type: ignore[arg-type]
            z.attrs["voxel_size_um"] = [1.17, 1.17, 1.17]
            return d / "v.zarr", ((n_z, h, w), (1.17, 1.17, 1.17), sec)

        return write

    def ome_py(version: str, data: np.ndarray, axes: str, units: str, scale: tuple) -> Any:
        def write(d: Path) -> tuple[Path, Truth]:
            from ome_zarr.format import FormatV04, FormatV05
            from ome_zarr.writer import write_image

            fmt = FormatV04() if version == "0.4" else FormatV05()
            g = zarr.open_group(str(d / "o.ome.zarr"), mode="w", zarr_format=fmt.zarr_format)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sc, un = dict(zip("zyx", scale, strict=True)), dict.fromkeys("zyx", units)
                write_image(data, g, fmt=fmt, axes=axes, scale=sc, axes_units=un,
                            scale_factors=(2, 4))  # fmt: skip
            f = {"micrometer": 1.0, "nanometer": 1e-3}[units]
            return d / "o.ome.zarr", ((n_z, h, w), tuple(s * f for s in scale), sec)

        return write

    def bossdb_like(d: Path) -> tuple[Path, Truth]:
        """An x/y-only pyramid in nm with a translation, metadata built by ome_zarr_models."""
        from ome_zarr_models.v04.axes import Axis
        from ome_zarr_models.v04.image import ImageAttrs
        from ome_zarr_models.v04.multiscales import Dataset, Multiscale

        g = zarr.open_group(str(d / "boss.zarr"), mode="w", zarr_format=2)
        datasets = []
        for k in range(3):
            g.create_array(f"{k}", data=vol[:, :: 2**k, :: 2**k])
            half = 2.0 * (2**k - 1)  # nm: the centre of a 2**k-wide pixel of 4 nm ones
            datasets.append(Dataset.build(path=f"{k}", scale=[40.0, 4.0 * 2**k, 4.0 * 2**k],
                                          translation=[0.0, half, half]))  # fmt: skip
        ms = Multiscale(axes=[Axis(name=a, type="space", unit="nanometer") for a in "zyx"],
                        datasets=tuple(datasets), version="0.4")  # fmt: skip
        g.attrs.update(ImageAttrs(multiscales=[ms]).model_dump(mode="json", exclude_none=True))
        return d / "boss.zarr", ((n_z, h, w), (0.04, 0.004, 0.004), sec)

    return {
        "png": png,
        "jpeg": jpeg,
        "jpeg_72dpi": jpeg_72dpi,
        "tiff_2d": tiff_2d,
        "imagej_1slice_tiff": imagej_1slice,
        "tiff_3d": tiff_3d,
        "ome_tiff_pyramid": ome_tiff_pyramid,
        "tiff_folder": tiff_folder,
        "folder_one_multipage_tiff": folder_one_stack,
        "zarr_v2": zarr_v(2),
        "zarr_v3": zarr_v(3),
        "ome_zarr_0.4_5d_ome_zarr_py": ome_py("0.4", vol[None, None], "tczyx", "micrometer",
                                               (2.0, 0.5, 0.5)),
        "ome_zarr_0.5_ome_zarr_py": ome_py("0.5", vol, "zyx", "micrometer", (1.0, 1.0, 1.0)),
        "ome_zarr_nm": ome_py("0.4", vol, "zyx", "nanometer", (500.0, 250.0, 250.0)),
        "bossdb_xy_pyramid": bossdb_like,
        # must be refused with a reason: three channels are not one grey volume
        "ome_zarr_3_channels": ome_py("0.4", np.stack([vol] * 3)[None], "tczyx", "micrometer",
                                      (1.0, 1.0, 1.0)),
    }  # fmt: skip


MUST_REFUSE = ("ome_zarr_3_channels",)


def _same_voxel(got: Any, want: Any) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return bool(np.allclose(got, want, rtol=1e-4, atol=0))


def run(quick: bool, out: Path) -> dict:
    from napari_brainfeatures.io.volume import open_volume

    n_z, h, w = (4, 64, 80) if quick else (16, 512, 640)
    table: dict[str, dict[str, Any]] = {}
    wrong_voxel = wrong_shape = wrong_values = wrong_outcome = 0
    for name, write in _writers(n_z, h, w).items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        path, (shape, voxel, first) = write(folder)
        row: dict[str, Any] = {"expected_shape": list(shape), "expected_voxel_um": voxel}
        t0 = time.perf_counter()
        try:
            vol = open_volume(path)
        except Exception as err:  # a refusal is a result: record its message
            row.update(opened=False, refused=f"{type(err).__name__}: {err}")
            wrong_outcome += name not in MUST_REFUSE
            table[name] = row
            continue
        wrong_outcome += name in MUST_REFUSE
        row["open_s"] = round(time.perf_counter() - t0, 4)
        got = vol.data[0].compute()
        tol = 3 if name.startswith("jpeg") else 0  # lossy
        values_ok = got.shape == first.shape and np.abs(got.astype(int) - first).mean() <= tol
        row.update(opened=True, shape=list(vol.shape), voxel_um=vol.voxel_size,
                   kind=vol.kind, levels=len(vol.levels), notes=vol.notes,
                   shape_ok=vol.shape == shape, voxel_ok=_same_voxel(vol.voxel_size, voxel),
                   values_ok=bool(values_ok))  # fmt: skip
        wrong_voxel += not row["voxel_ok"]
        wrong_shape += not row["shape_ok"]
        wrong_values += not row["values_ok"]
        table[name] = row
    return {
        "formats_tried": len(table),
        "formats_opened": sum(r["opened"] for r in table.values()),
        "wrong_voxel_size": wrong_voxel,
        "wrong_shape": wrong_shape,
        "wrong_values": wrong_values,
        "wrong_outcome": wrong_outcome,  # opened what must be refused, or refused a good one
        "section_shape": [h, w],
        "n_z": n_z,
        "formats": table,
        **_single_section(quick, out),
    }


def _single_section(quick: bool, out: Path) -> dict[str, Any]:
    """A user's one annotated section: train and test on it by spatial blocks (guard one patch),
    beside three slices of a volume with the same budget (``bench_train_cnn``)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train_cnn import single_section_vs_slices

    folder = out / "single_section"
    folder.mkdir(parents=True, exist_ok=True)
    return single_section_vs_slices(quick, folder)
