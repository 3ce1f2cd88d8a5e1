"""Overwrites never destroy: stores, models, factor and cluster folders are built beside
and swapped in at the end; stores are named by job and never replaced while in use;
incomplete stores are refused (or flagged); labels never wrap an id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from helpers import TINY_CNN, tiny_cnn
from napari_brainfeatures import cli
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.inuse import StoreInUseError, hold
from napari_brainfeatures.features.plan import store_name
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.features.store import FeatureStore, IncompleteStoreError
from napari_brainfeatures.models.cnn import save_cnn
from napari_brainfeatures.progress import run
from napari_brainfeatures.workspace import Workspace

OPTS = {"tile": 4, "device": "cpu"}


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (metadata included): equal means untouched."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


@pytest.fixture
def image():
    return (np.random.default_rng(0).random((2, 36, 36)) * 255).astype(np.uint8)


@pytest.fixture
def store(tmp_path, image):
    out = tmp_path / "feats" / "s.zarr"
    run(compute_feature_map(image, tiny_cnn(), out=out, stride=4, **OPTS))
    return out


# -- feature stores ---------------------------------------------------------------------------
def test_overwrite_builds_beside_and_swaps_at_the_end(store, image):
    before = tree_bytes(store)
    gen = compute_feature_map(image, tiny_cnn(seed=1), out=store, stride=3, overwrite=True, **OPTS)
    for _ in range(3):
        rec = next(gen)
        assert tree_bytes(store) == before  # the old store is whole while the new one grows
        assert rec.payload.store != store and rec.payload.store.parent == store.parent
    gen.close()  # Cancel: the unfinished replacement is dropped
    assert tree_bytes(store) == before and siblings(store) == []
    new = run(
        compute_feature_map(image, tiny_cnn(seed=1), out=store, stride=3, overwrite=True, **OPTS)
    )
    assert new.path == store and new.stride == 3 and new.complete
    assert siblings(store) == []  # nothing left beside


def test_a_store_in_use_is_never_replaced(store, image):
    grid = FeatureGrid.open(store, 0)  # what the Factors dock keeps while it shows factors
    with pytest.raises(StoreInUseError, match="in use"):
        run(
            compute_feature_map(
                image, tiny_cnn(seed=1), out=store, stride=3, overwrite=True, **OPTS
            )
        )
    assert FeatureStore(store).stride == 4
    del grid
    with hold(store), pytest.raises(StoreInUseError):
        run(
            compute_feature_map(
                image, tiny_cnn(seed=1), out=store, stride=3, overwrite=True, **OPTS
            )
        )
    run(compute_feature_map(image, tiny_cnn(seed=1), out=store, stride=3, overwrite=True, **OPTS))
    assert FeatureStore(store).stride == 3  # released: replaced


def test_a_store_that_comes_into_use_during_the_run_is_kept(store, image):
    gen = compute_feature_map(image, tiny_cnn(seed=1), out=store, stride=3, overwrite=True, **OPTS)
    next(gen)
    with hold(store):
        new = run(gen)
    assert FeatureStore(store).stride == 4  # the store in use stayed
    assert new.path != store and new.path.name.startswith("s-") and new.stride == 3


def test_store_names_differ_by_model_stride_and_region():
    shape = (10, 64, 64)
    one = store_name("m.safetensors", stride=4, region=3, shape=shape)
    assert one == "m-s4-z3_4.zarr"
    assert store_name("m", stride=4, region=(0, 5), shape=shape) == "m-s4-z0_5.zarr"
    assert store_name("m", stride=4, region=None, shape=shape) == "m-s4-z0_10.zarr"
    assert store_name("m", stride=3, region=3, shape=shape) != one
    box = store_name("m", stride=4, region={"z": 3, "y": (0, 32), "x": (0, 64)}, shape=shape)
    other = store_name("m", stride=4, region={"z": 3, "y": (32, 64), "x": (0, 64)}, shape=shape)
    assert box.startswith("m-s4-z3_4-r") and box != other
    assert store_name("m", stride=4, shape=(64, 64)) == "m-s4.zarr"  # 2-D: the old name


def test_a_z_range_after_a_slice_gets_its_own_store(tmp_path, image):
    net = tiny_cnn()
    for region in (1, (0, 2)):
        out = tmp_path / store_name("m", stride=4, region=region, shape=image.shape)
        run(compute_feature_map(image, net, out=out, stride=4, region=region, **OPTS))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-s4-z0_2.zarr", "m-s4-z1_2.zarr"]


# -- incomplete stores ------------------------------------------------------------------------
@pytest.fixture
def partial(tmp_path, image):
    out = tmp_path / "part.zarr"
    gen = compute_feature_map(image, tiny_cnn(), out=out, stride=4, **OPTS)
    for _ in range(3):
        next(gen)
    gen.close()
    return out


def test_incomplete_store_is_refused_with_counts_region_and_resume(partial):
    with pytest.raises(IncompleteStoreError) as err:
        FeatureGrid.open(partial, 0)
    text = str(err.value)
    assert "of 9 tiles written in z index 0" in text and "z 0..1, y 0..35, x 0..35" in text
    assert "resume" in text and f"--out {partial} --stride 4 --z-range 0 2" in text
    assert 2 <= err.value.done < err.value.total == 9
    grid = FeatureGrid.open(partial, 0, allow_incomplete=True)
    assert np.isnan(np.asarray(grid.features)).any()
    with pytest.raises(IncompleteStoreError, match="0 of 9 tiles written in z index 1"):
        FeatureGrid.open(partial, 1)


def test_factors_and_cluster_cli_refuse_or_flag_an_incomplete_store(partial, tmp_path, capsys):
    out = tmp_path / "f"
    assert cli.main(["factors", str(partial), "--z", "0", "--k", "2", "--out", str(out)]) == 2
    assert "incomplete" in capsys.readouterr().err and not out.exists()
    assert cli.main(["cluster", str(partial), "--z", "0", "--k", "2", "--out", str(out)]) == 2
    assert "resume" in capsys.readouterr().err
    args = ["factors", str(partial), "--z", "0", "--k", "2", "--max-iter", "20"]
    assert cli.main([*args, "--out", str(out), "--allow-incomplete"]) == 0
    err = capsys.readouterr()
    assert "warning: --allow-incomplete: the feature store" in err.err
    summary = json.loads(err.out.strip().splitlines()[-1])
    assert summary["incomplete"]["tiles"] == 9 and summary["incomplete"]["tiles_done"] < 9
    attrs = zarr.open_group(out / "factors.zarr", mode="r").attrs["brainfeatures"]
    assert attrs["incomplete"]["tiles"] == 9  # the result itself says so


# -- result folders ---------------------------------------------------------------------------
def test_factors_out_never_mixes_two_runs(store, tmp_path, capsys):
    out = tmp_path / "f"
    out.mkdir()
    (out / "selection.json").write_text("{}")  # an earlier run's, with ROIs
    (out / "rgb.png").write_bytes(b"old")
    (out / "factor_07.png").write_bytes(b"old")
    args = ["factors", str(store), "--z", "0", "--k", "2", "--max-iter", "20", "--out", str(out)]
    assert cli.main(args) == 2  # files under a result's name: never replaced unasked
    assert "--overwrite" in capsys.readouterr().err and (out / "rgb.png").read_bytes() == b"old"
    args.append("--overwrite")
    assert cli.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "factor_00.png",
        "factor_01.png",
        "factors.zarr",
    ]
    assert siblings(out) == ["feats"]  # no temporary left beside
    (out / "notes.txt").write_text("mine")  # the user's files in the folder are kept
    (out / "drafts").mkdir()
    (out / "drafts" / "a.txt").write_text("draft")
    assert cli.main(args) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "drafts" / "a.txt").exists()
    cluster = ["cluster", str(out / "factors.zarr"), "--k", "2", "--out", str(out)]
    assert cli.main(cluster) == 0  # clusters beside the factors they were made of
    assert {"factors.zarr", "clusters.zarr", "clusters.json"} <= {p.name for p in out.iterdir()}
    assert cli.main([*cluster[:-1], str(out / "factors.zarr")]) == 2  # not into its input
    before = tree_bytes(store)
    assert cli.main([*args[:-2], str(store.parent)]) == 0  # beside its input: the store stays
    assert tree_bytes(store) == before and (store.parent / "factors.zarr").is_dir()
    assert FeatureStore(store).complete
    zarr.open_group(str(tmp_path / "image.zarr"), mode="w")  # the user's image store
    assert cli.main([*args[:-2], str(tmp_path / "image.zarr" / "figs")]) == 2
    assert "inside the zarr store" in capsys.readouterr().err
    assert not (tmp_path / "image.zarr" / "figs").exists()
    (out / "factors_clusters").mkdir()  # clusters of the factors in out ...
    zarr.open_group(str(out / "factors_clusters" / "clusters.zarr"), mode="w")
    assert cli.main(args) == 0  # ... which this run replaces
    assert "factors_clusters holds clusters of the factors this run replaced" in (
        capsys.readouterr().err
    )


# -- models -----------------------------------------------------------------------------------
def _patches(n: int = 16, seed: int = 0):
    from napari_brainfeatures.train.patches import PatchSet

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.normal(60, 20, (n, 32, 32)) + 50 * y[:, None, None]).clip(0, 255).astype(np.uint8)
    centres = np.zeros((n, 3), np.int64)
    centres[:, 0] = seed  # one slice per set: training and validation never overlap
    return PatchSet(x, (y + 1).astype(np.int64), centres, ClassTable.from_names("abc"))


def test_train_overwrite_replaces_the_model_only_at_the_end(tmp_path):
    from napari_brainfeatures.train.fit import train_cnn

    target = save_cnn(tmp_path / "cnn", tiny_cnn(seed=5), classes=ClassTable.from_names("abc"))
    before = target.read_bytes()
    cfg = TINY_CNN
    kw = {"config": cfg, "batch_size": 8, "device": "cpu", "num_threads": 1, "seed": 0}
    gen = train_cnn(_patches(), _patches(seed=1), epochs=4, checkpoint_path=target, **kw)
    ends = 0
    for rec in gen:
        ends += "val_acc" in rec.values
        if ends == 2:
            break
    assert target.read_bytes() == before  # best models so far are kept beside
    assert any(n.startswith(".cnn.safetensors.partial-") for n in siblings(target))
    gen.close()  # Cancel: the earlier model stays, the best so far goes
    assert target.read_bytes() == before and siblings(target) == []
    res = run(train_cnn(_patches(), _patches(seed=1), epochs=2, checkpoint_path=target, **kw))
    assert res.path == target and target.read_bytes() != before and siblings(target) == []


# -- labels -----------------------------------------------------------------------------------
def test_labels_beyond_an_old_narrow_store_are_refused(tmp_path):
    ws = Workspace.open(tmp_path / "w.brainfeatures", shape=(2, 8, 8))
    zarr.create_array(str(ws.labels_path), shape=(2, 8, 8), dtype="uint8", fill_value=0)
    block = np.full((1, 8, 8), 300, np.uint16)
    with pytest.raises(ValueError, match=r"label id 300 does not fit .*\(uint8, ids 0..255\)"):
        ws.save_labels(block, region=(slice(0, 1), slice(None), slice(None)))
    assert not np.asarray(ws.labels(mode="r")).any()  # nothing written, nothing wrapped
    ws.save_labels((block // 2).astype(np.uint8), region=(slice(0, 1), slice(None), slice(None)))
    assert int(ws.labels(mode="r")[0, 0, 0]) == 150


# -- a real kill -9 ---------------------------------------------------------------------------
_KILLED = """
import sys, numpy as np
from napari_brainfeatures.features.run import compute_feature_map
img = (np.random.default_rng(0).random((2, 36, 36)) * 255).astype(np.uint8)
for rec in compute_feature_map(img, sys.argv[1], out=sys.argv[2], stride=3, tile=4,
                               overwrite=True, device="cpu"):
    print("tile", flush=True)
    sys.stdin.readline()  # one tile per line the test sends: killed mid-run
"""


def test_kill_9_during_an_overwrite_leaves_the_old_store(store, tmp_path, image):
    model = save_cnn(tmp_path / "m", tiny_cnn(seed=2), classes=ClassTable.from_names("abc"))
    before = tree_bytes(store)
    p = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(model), str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdin is not None
        for _ in range(2):
            assert p.stdout.readline().strip() == "tile"
            p.stdin.write("\n")
            p.stdin.flush()
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert tree_bytes(store) == before and FeatureStore(store).complete
    assert [n for n in siblings(store) if ".partial-" in n]  # the killed run's, beside
    run(compute_feature_map(image, tiny_cnn(), out=store, stride=4, **OPTS))  # the old job
    assert siblings(store) == [] and tree_bytes(store) == before  # cleaned, nothing redone
    new = run(compute_feature_map(image, model, out=store, stride=3, overwrite=True, **OPTS))
    assert new.complete and siblings(store) == []


def test_headless_factors_and_clusters_are_kept_for_export(tmp_path, capsys):
    """The command line keeps its results in the image's workspace, as the docks do."""
    from napari_brainfeatures.classes import ClassTable, default_table
    from napari_brainfeatures.models.cnn import save_cnn
    from napari_brainfeatures.results.record import list_results

    rng = np.random.default_rng(0)
    image = (rng.random((2, 48, 48)) * 200).astype(np.uint8)
    image[:, :, 24:] //= 3
    group = zarr.open_group(str(tmp_path / "ct.zarr"), mode="w")
    group.create_array("image", data=image)
    areas = np.ones_like(image)
    areas[:, :, 24:] = 2
    group.create_array("areas", data=areas)
    three = ClassTable(default_table().classes[:3])
    model = save_cnn(tmp_path / "m.safetensors", tiny_cnn(), classes=three)
    feat = tmp_path / "feat.zarr"
    run = ["features", str(model), str(tmp_path / "ct.zarr"), "--z", "1", "--stride", "4"]
    assert cli.main([*run, "--out", str(feat)]) == 0
    rois = ["--rois", str(tmp_path / "ct.zarr" / "areas")]
    assert cli.main(["factors", str(feat), "--k", "2", "--max-iter", "20", *rois]) == 0
    kept = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kept"]
    ws = tmp_path / "ct.brainfeatures"
    assert kept and Path(kept).parent.parent == ws / "results"
    assert (ws / "workspace.json").exists()  # a whole workspace: the docks open it later
    sizes = (Path(kept) / "roi_sizes.csv").read_text()
    assert "Ctx" in sizes and "HypoTh" in sizes  # the workspace's class names, as the docks
    assert cli.main(["cluster", str(tmp_path / "feat_factors" / "factors.zarr"), "--k", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kept"]
    assert [r.kind for r in list_results(ws)] == ["factors", "clusters"]
    assert cli.main(["export", str(ws), "--to", str(tmp_path / "out")]) == 0
    written = json.loads(capsys.readouterr().out)["written"]
    assert any(p.endswith(".ome.zarr") for p in written)


def test_features_warns_when_the_image_pixels_are_not_the_models(tmp_path, capsys):
    from napari_brainfeatures.classes import ClassTable, default_table
    from napari_brainfeatures.models.cnn import save_cnn

    image = (np.random.default_rng(0).random((1, 40, 40)) * 200).astype(np.uint8)
    arr = zarr.open_group(str(tmp_path / "big.zarr"), mode="w").create_array("image", data=image)
    arr.attrs["voxel_size_um"] = [4.68, 4.68, 4.68]
    three = ClassTable(default_table().classes[:3])
    meta = {"voxel_size_um": [1.17, 1.17, 1.17]}
    model = save_cnn(tmp_path / "m.safetensors", tiny_cnn(), classes=three, meta=meta)
    argv = ["features", str(model), str(tmp_path / "big.zarr"), "--out", str(tmp_path / "f.zarr")]
    assert cli.main(argv) == 0
    assert "the model learnt on 1.17 µm pixels" in capsys.readouterr().err
