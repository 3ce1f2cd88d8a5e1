import os

import numpy as np
import pytest
import zarr

from napari_brainfeatures.cli import main
from napari_brainfeatures.io.convert import convert_to_ome_zarr, n_levels_for
from napari_brainfeatures.io.volume import open_volume
from napari_brainfeatures.progress import run


def test_tiff_to_multiscale_ome_zarr(tiff_stack, volume, tmp_path):
    out = run(
        convert_to_ome_zarr(tiff_stack, tmp_path / "o.ome.zarr", chunks=(2, 16, 16), levels=3)
    )
    vol = open_volume(out)
    assert vol.kind == "ome-zarr" and vol.multiscale
    assert [lv.shape for lv in vol.levels] == [(6, 40, 50), (6, 20, 25), (6, 10, 12)]
    assert vol.voxel_size == pytest.approx((1.17, 1.17, 1.17))
    np.testing.assert_array_equal(vol.data.compute(), volume)
    expected = volume[:, :40, :50].astype(np.float32).reshape(6, 20, 2, 25, 2).mean((2, 4))
    np.testing.assert_allclose(vol.levels[1].compute(), np.round(expected), atol=0)
    assert not list(tmp_path.glob(".*partial*"))


def test_refuses_to_overwrite(tiff_stack, tmp_path):
    target = tmp_path / "o.ome.zarr"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists"):
        run(convert_to_ome_zarr(tiff_stack, target))
    assert (target / "keep.txt").read_text() == "mine"


def test_overwrite_never_deletes_the_input_or_other_files(
    tiff_stack, tiff_folder, tmp_path, capsys
):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "stack.tif").write_bytes(tiff_stack.read_bytes())
    (victim / "notes.txt").write_text("x")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("y")
    cases = [
        (victim / "stack.tif", victim, "is or contains the input"),
        (tiff_folder, tiff_folder, "is or contains the input"),
        (tiff_stack, tiff_stack, "is or contains the input"),
        (tiff_folder, plain, "not a zarr store"),
        (tiff_folder, plain / "notes.txt", "not a folder"),
    ]
    for src, out, why in cases:
        assert main(["convert", str(src), str(out), "--overwrite"]) == 2
        assert why in capsys.readouterr().err
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt", "stack.tif"]
    assert len(list(tiff_folder.iterdir())) == 6 and tiff_stack.stat().st_size > 0
    assert (plain / "notes.txt").read_text() == "y"
    store = run(convert_to_ome_zarr(tiff_stack, tmp_path / "o.ome.zarr", levels=1))
    with pytest.raises(FileExistsError, match="is or contains the input"):
        run(convert_to_ome_zarr(store, store, overwrite=True))
    with pytest.raises(FileExistsError, match="inside the input store"):
        run(convert_to_ome_zarr(store, store / "0", overwrite=True))
    assert open_volume(store).shape == (6, 40, 50)


def test_overwrite_replaces_a_store_only_when_done(tiff_stack, tiff_folder, tmp_path):
    target = tmp_path / "o.ome.zarr"
    run(convert_to_ome_zarr(tiff_stack, target, chunks=(2, 16, 16), levels=1))
    gen = convert_to_ome_zarr(tiff_folder, target, chunks=(2, 16, 16), levels=1, overwrite=True)
    next(gen)
    gen.close()  # cancelled half-way: the old store stays, no leftovers
    assert zarr.open_group(target).attrs["napari_brainfeatures"]["source"] == str(tiff_stack)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.zarr", "slices", "stack.tif"]
    run(convert_to_ome_zarr(tiff_folder, target, chunks=(2, 16, 16), levels=1, overwrite=True))
    assert zarr.open_group(target).attrs["napari_brainfeatures"]["source"] == str(tiff_folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.zarr", "slices", "stack.tif"]


def test_n_levels():
    assert n_levels_for((1, 300, 300)) == 1
    assert n_levels_for((1, 1420, 5805)) == 3


def test_cli_convert_and_info(tiff_folder, tmp_path, capsys):
    assert main(["convert", str(tiff_folder), str(tmp_path / "f.ome.zarr"), "--levels", "2"]) == 0
    assert main(["info", str(tmp_path / "f.ome.zarr")]) == 0
    out = capsys.readouterr().out
    assert '"kind": "ome-zarr"' in out
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_interrupt_leaves_no_partial_and_keeps_the_old_store(
    tiff_stack, tiff_folder, tmp_path, monkeypatch
):
    import napari_brainfeatures.io.convert as convert

    target = tmp_path / "o.ome.zarr"
    run(convert_to_ome_zarr(tiff_stack, target, chunks=(2, 16, 16), levels=1))

    def ctrl_c(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "_downsample_yx", ctrl_c)  # after level 0 is written
    with pytest.raises(KeyboardInterrupt):
        run(convert_to_ome_zarr(tiff_folder, target, chunks=(2, 16, 16), levels=2, overwrite=True))
    assert zarr.open_group(target).attrs["napari_brainfeatures"]["source"] == str(tiff_stack)
    assert not list(tmp_path.glob(".*partial*"))


def test_stale_partials_of_the_target_are_removed(tiff_stack, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".o.ome.zarr.partial-{dead}"
    alive = tmp_path / f".o.ome.zarr.partial-{os.getppid()}"  # another run still writing
    other = tmp_path / f".other.ome.zarr.partial-{dead}"  # not our target
    for p in (stale, alive, other):
        (p / "0").mkdir(parents=True)
    run(convert_to_ome_zarr(tiff_stack, tmp_path / "o.ome.zarr", levels=1))
    assert not stale.exists() and alive.exists() and other.exists()


def test_bad_voxel_size_refused_and_unknown_one_warned(tiff_folder, tmp_path, capsys):
    out = tmp_path / "o.ome.zarr"
    for bad in ((0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0)):
        with pytest.raises(ValueError, match=r"three positive micrometre values .* got"):
            run(convert_to_ome_zarr(tiff_folder, out, voxel_size=bad))
    assert not out.exists() and not list(tmp_path.glob(".o.ome.zarr.partial*"))
    assert main(["convert", str(tiff_folder), str(out), "--levels", "1"]) == 0
    assert "has no voxel size; writing 1 µm" in capsys.readouterr().err
