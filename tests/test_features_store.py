"""The feature store: resume to identical bytes, refusal of foreign stores, write errors,
the distributed runner and the command line."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from helpers import TINY_CNN
from napari_brainfeatures import cli
from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.features.store import FeatureStore, StoreMismatchError, done_tiles
from napari_brainfeatures.models.cnn import BrainAreaCNN, save_cnn
from napari_brainfeatures.progress import run

TINY = TINY_CNN
OPTS = {"tile": 8, "which": ("features", "features_pre", "probs", "areas")}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return BrainAreaCNN(TINY).eval()


@pytest.fixture
def image():
    return (np.random.default_rng(0).random((2, 30, 27)) * 255).astype(np.uint8)


def chunk_bytes(store: Path) -> dict[str, bytes]:
    """Every data chunk file of a store (metadata excluded)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, model, image):
    fresh = tmp_path / "fresh.zarr"
    run(compute_feature_map(image, model, out=fresh, **OPTS))
    store = tmp_path / "resumed.zarr"
    gen = compute_feature_map(image, model, out=store, **OPTS)
    for _ in range(5):
        next(gen)
    gen.close()  # interrupted between tiles
    done = done_tiles(store)
    total = 2 * 4 * 4
    assert 5 <= len(done) < total
    assert not FeatureStore(store).complete
    # A half-written tile: chunks of a tile that is not marked done are garbage / partial.
    kz, ty, tx = next(t for t in sorted(np.ndindex(2, 4, 4)) if t not in done)
    for name, junk in (("features", b"\x00garbage"), ("probs", b"")):
        chunk = store / name / "c" / str(kz) / "0" / str(ty) / str(tx)
        chunk.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_bytes(junk)
    records = []
    result = run(compute_feature_map(image, model, out=store, **OPTS), records.append)
    assert records[0].message.startswith("resuming")
    assert len(records) == 1 + total - len(done)
    assert result.complete
    assert chunk_bytes(store) == chunk_bytes(fresh)
    # Rerunning a complete store computes nothing.
    assert len(list(compute_feature_map(image, model, out=store, **OPTS))) == 1


def test_store_of_another_job_is_refused_then_overwritten(tmp_path, model, image):
    out = tmp_path / "s.zarr"
    run(compute_feature_map(image, model, out=out, **OPTS))
    torch.manual_seed(1)
    other = BrainAreaCNN(TINY).eval()
    for kwargs in ({"stride": 2}, {"region": 1}, {"edge": "zero"}):
        with pytest.raises(StoreMismatchError, match="overwrite=True"):
            run(compute_feature_map(image, model, out=out, **OPTS, **kwargs))
    with pytest.raises(StoreMismatchError, match="model_id"):
        run(compute_feature_map(image, other, out=out, **OPTS))
    assert FeatureStore(out).complete  # untouched
    new = run(compute_feature_map(image, other, out=out, stride=2, overwrite=True, **OPTS))
    assert new.stride == 2 and new.shape == (2, 15, 14)


def test_foreign_folder_is_never_deleted(tmp_path, model, image):
    out = tmp_path / "mine.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a feature store"):
        run(compute_feature_map(image, model, out=out, overwrite=True, **OPTS))
    assert (out / "notes.txt").read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_gives_a_clear_error(tmp_path, model, image):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            run(compute_feature_map(image, model, out=ro / "f.zarr", **OPTS))
    finally:
        ro.chmod(0o755)


def test_unwritable_output_gives_a_clear_error_even_as_root(tmp_path, model, image, monkeypatch):
    def refuse(self, data):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", refuse)  # the writability probe
    with pytest.raises(PermissionError, match="not writable"):
        run(compute_feature_map(image, model, out=tmp_path / "f.zarr", **OPTS))
    assert not (tmp_path / "f.zarr").exists()


def test_full_disk_fails_cleanly_and_resumes(tmp_path, model, image, monkeypatch):
    fresh = tmp_path / "fresh.zarr"
    run(compute_feature_map(image, model, out=fresh, **OPTS))
    out = tmp_path / "full.zarr"
    original = zarr.storage.LocalStore.set
    calls = {"n": 0}

    async def failing_set(self, key, value):
        if key.startswith("probs/c/"):
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", failing_set)
    with pytest.raises(OSError, match="disk is full") as info:
        run(compute_feature_map(image, model, out=out, **OPTS))
    assert info.value.errno == errno.ENOSPC
    done = done_tiles(out)
    assert len(done) == 3  # the failing tile (features written, probs not) is not marked
    monkeypatch.setattr(zarr.storage.LocalStore, "set", original)
    run(compute_feature_map(image, model, out=out, **OPTS))
    assert chunk_bytes(out) == chunk_bytes(fresh)


def test_feature_store_accessors(tmp_path, model, image):
    classes = ClassTable(default_table().classes[:3])
    store = run(
        compute_feature_map(
            image[0], model, out=tmp_path / "a.zarr", stride=2, tile=8, classes=classes
        )
    )
    assert store.shape == (15, 14) and store.is_2d
    assert store.features().shape == (8, 15, 14)
    assert store.feature_rows().shape == (15 * 14, 8)
    rows = np.asarray(store.feature_rows())
    assert np.array_equal(rows[14 + 3], np.asarray(store.features())[:, 1, 3])
    assert (np.asarray(store.features()) >= 0).all()
    conf = np.asarray(store.confidence())
    assert conf.shape == (15, 14) and (conf >= 1 / 3 - 1e-6).all()
    assert store.progress() == (4, 4)
    assert store.valid().shape == (15, 14) and bool(store.valid().all())
    assert store.layer_kwargs() == {"scale": (2.0, 2.0), "translate": (0.0, 0.0)}
    attrs = store.attrs
    assert attrs["model_id"] and attrs["edge"] == "reflect" and attrs["halo"] == [16, 15]
    assert store.classes.names == ["Ctx", "HypoTh", "Str"]
    with pytest.raises(KeyError, match="features_pre"):
        store.features(pre_relu=True)
    with pytest.raises(FileNotFoundError):
        FeatureStore(tmp_path)


@pytest.mark.slow
def test_distributed_local_cluster_gives_the_same_bytes(tmp_path, model, image):
    from napari_brainfeatures.features.distributed import compute_feature_map_distributed

    single = tmp_path / "single.zarr"
    run(compute_feature_map(image, model, out=single, **OPTS))
    out = tmp_path / "dist.zarr"
    records = []
    store = run(
        compute_feature_map_distributed(image, model, out=out, n_workers=2, **OPTS),
        records.append,
    )
    assert store.complete and len(records) == 32
    assert chunk_bytes(out) == chunk_bytes(single)


def test_unreachable_scheduler_is_a_clear_error(tmp_path, model, image):
    from napari_brainfeatures.features.distributed import compute_feature_map_distributed

    gen = compute_feature_map_distributed(
        image, model, out=tmp_path / "d.zarr", scheduler="tcp://127.0.0.1:9", timeout=1, **OPTS
    )
    with pytest.raises(ConnectionError, match="no dask scheduler answered"):
        run(gen)


def test_cli_features_end_to_end(tmp_path, model, image, capsys):
    classes = ClassTable(default_table().classes[:3])
    model_path = save_cnn(tmp_path / "m.safetensors", model, classes=classes)
    zarr.save_array(str(tmp_path / "img.zarr"), image)
    out = tmp_path / "f.zarr"
    argv = [
        "features",
        str(model_path),
        str(tmp_path / "img.zarr"),
        "--out",
        str(out),
        "--z",
        "1",
        "--stride",
        "3",
        "--tile",
        "8",
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["complete"] and summary["shape"] == [1, 10, 9]
    assert "[1/" in captured.err  # progress on stderr
    store = FeatureStore(out)
    assert store.classes.names == ["Ctx", "HypoTh", "Str"]
    assert store.attrs["model"]["file_sha256"]
    assert set(np.unique(np.asarray(store.areas))) <= {1, 2, 3}
    # Another stride into the same store: a clear error, exit status 2.
    assert cli.main([*argv[:-4], "--stride", "2"]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_numpy_zarr_and_dask_images_give_the_same_bytes(tmp_path, model, image):
    import dask.array as da

    z = zarr.create_array(
        str(tmp_path / "img.zarr"), shape=image.shape, chunks=(1, 7, 9), dtype=image.dtype
    )
    z[:] = image
    stores = {}
    for name, img in (("np", image), ("zarr", z), ("dask", da.from_zarr(z))):
        stores[name] = tmp_path / f"{name}.zarr"
        run(compute_feature_map(img, model, out=stores[name], **OPTS))
    assert chunk_bytes(stores["np"]) == chunk_bytes(stores["zarr"]) == chunk_bytes(stores["dask"])
