"""The results record: one folder per result, atomic, with provenance; the kinds' writers."""

import json
import os

import numpy as np
import pytest

from napari_brainfeatures.factors.results import Factors, is_factors, open_factors
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.results.kinds import (
    save_clusters_result,
    save_evaluation_result,
    save_factors_result,
)
from napari_brainfeatures.results.maps import open_map_layer
from napari_brainfeatures.results.record import (
    PROVENANCE,
    list_results,
    new_result,
    open_result,
)
from napari_brainfeatures.results.tables import read_table
from napari_brainfeatures.train.evaluation import Evaluation


def _evaluation() -> Evaluation:
    return Evaluation.from_dict(
        {
            "accuracy": 0.75,
            "macro_f1": 0.7,
            "class_names": ["Ctx", "WM"],
            "class_ids": [1, 5],
            "confusion": [[3, 1], [1, 3]],
            "per_class": {
                "Ctx": {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4},
                "WM": {"precision": 0.75, "recall": 0.75, "f1": 0.65, "support": 4},
            },
        }
    )


def test_new_result_writes_provenance_and_payload(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    with new_result(
        tmp_path, "evaluation", "cnn a/b", inputs={"model": model}, parameters={"tta": True}
    ) as out:
        assert out.root.name.startswith(".")  # hidden until finished
        out.json("x.json", {"a": np.float32(0.5), "p": tmp_path})
    assert out.root.parent == tmp_path / "results" / "evaluation"
    assert out.root.name.startswith("cnn_a_b-")
    rec = json.loads((out.root / PROVENANCE).read_text())
    assert rec["kind"] == "evaluation" and rec["files"] == ["x.json"]
    assert rec["inputs"]["model"] == str(model)
    assert len(rec["inputs"]["model_sha256"]) == 64
    assert rec["parameters"] == {"tta": True}
    assert {"version", "created", "machine"} <= set(rec)
    assert json.loads((out.root / "x.json").read_text()) == {"a": 0.5, "p": str(tmp_path)}
    assert [r.path for r in list_results(tmp_path)] == [out.root]


def test_failed_run_leaves_nothing_and_two_runs_never_share_a_folder(tmp_path):
    with pytest.raises(RuntimeError), new_result(tmp_path, "report", "r") as out:
        out.json("half.json", {})
        raise RuntimeError("killed")
    folder = tmp_path / "results" / "report"
    assert list(folder.iterdir()) == []
    with new_result(tmp_path, "report", "r") as a:
        a.json("one.json", 1)
    with new_result(tmp_path, "report", "r") as b:  # same second: another folder
        b.json("two.json", 2)
    assert a.root != b.root
    assert sorted(p.name for p in a.root.iterdir()) == ["one.json", PROVENANCE]
    assert sorted(p.name for p in b.root.iterdir()) == [PROVENANCE, "two.json"]


def test_a_killed_writers_temporary_is_removed_and_never_listed(tmp_path):
    folder = tmp_path / "results" / "clusters"
    folder.mkdir(parents=True)
    dead = folder / ".x-20260101-000000.partial-999999999-abc"  # pid that cannot run
    dead.mkdir()
    assert list_results(tmp_path) == []
    with new_result(tmp_path, "clusters", "x") as out:
        out.json("a.json", 1)
    assert not dead.exists()
    assert [r.path for r in list_results(tmp_path)] == [out.root]


def test_bad_kind_and_file_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        with new_result(tmp_path, "nonsense", "x"):
            pass
    with pytest.raises(ValueError, match="plain file name"):
        with new_result(tmp_path, "report", "x") as out:
            out.json("../escape.json", 1)
    with pytest.raises(ValueError, match="not a result folder"):
        open_result(tmp_path)


def test_result_folder_names_spell_greek_letters_out(tmp_path):
    with new_result(tmp_path, "latent", "β-VAE L=8 β=3") as out:
        out.json("x.json", 1)
    assert out.root.name.startswith("beta-VAE_L_8_beta_3-")  # not '-VAE…', which reads as a flag


def test_evaluation_result(tmp_path):
    path = save_evaluation_result(tmp_path, _evaluation(), name="cnn-1", inputs={"volume": "v"})
    res = open_result(path)
    assert res.kind == "evaluation"
    assert {"evaluation.json", "per_class.csv", "metrics.csv", "confusion.png"} <= set(res.files)
    assert Evaluation.load(res.file("evaluation.json")).accuracy == 0.75
    cols, rows = read_table(res.file("per_class.csv"))
    assert cols[0] == "class" and [r[0] for r in rows] == ["Ctx", "WM"]
    assert res.file("confusion.png").read_bytes()[:4] == b"\x89PNG"


def _factors(k=3, h=6, w=8):
    rng = np.random.default_rng(0)
    maps = rng.random((k, h, w)).astype(np.float32)
    grid = FeatureGrid((h, w), origin=(2, 2), step=(4, 4), z=3, image_shape=(5, 32, 40))
    return Factors(maps, rng.random((k, 4)).astype(np.float32), grid, {"k": k})


def test_factors_result_maps_tables_and_store(tmp_path):
    fac = _factors()
    rois = np.zeros((6, 8), int)
    rois[:3] = 1
    rois[3:, :4] = 2
    path = save_factors_result(
        tmp_path, fac, scale=(2.0, 4.0, 4.0), translate=(6.0, 4.0, 4.0), rois=rois,
        roi_names={1: "Ctx"},
    )  # fmt: skip
    res = open_result(path)
    m = open_map_layer(res.file("factor_maps.zarr"))
    assert m.axes == "czyx" and m.data.shape == (3, 1, 6, 8)
    assert m.scale == (2.0, 4.0, 4.0) and m.translate == (6.0, 4.0, 4.0)
    np.testing.assert_allclose(np.asarray(m.data[:, 0]), fac.maps)
    assert is_factors(res.file("factors.zarr"))  # what `brainfeatures cluster` reads
    assert open_factors(res.file("factors.zarr")).k == 3
    cols, rows = read_table(res.file("mean_activity.csv"))
    assert cols == ["id", "area", "pixels", "F0", "F1", "F2"]
    assert rows[0][:3] == ["1", "Ctx", "24"]
    assert float(rows[0][3]) == pytest.approx(fac.maps[0, :3].mean(), rel=1e-5)
    cols, rows = read_table(res.file("roi_sizes.csv"))
    assert rows[1] == ["2", "area 2", "12", "192"]  # 12 px of 4x4 µm


def test_clusters_result_map_sizes_and_profile(tmp_path):
    lab = np.zeros((4, 5), np.int32)
    lab[:2], lab[2:, :3] = 1, 2
    truth = np.ones((4, 5), np.int32)
    truth[:, 2:] = 3
    path = save_clusters_result(
        tmp_path, lab, scale=(0.5, 0.5), translate=(0.0, 0.0), scores={"ari": 0.5},
        truth=truth, truth_names={1: "L1", 3: "L3"}, parameters={"k": 2},
    )  # fmt: skip
    res = open_result(path)
    m = open_map_layer(res.file("clusters.zarr"))
    assert m.layer == "labels" and m.axes == "yx" and m.data.dtype == np.uint8
    assert set(m.classes) == {1, 2} and m.classes[1][0] == "cluster 1"
    cols, rows = read_table(res.file("cluster_sizes.csv"))
    assert rows == [["1", "cluster 1", "10", "2.5"], ["2", "cluster 2", "6", "1.5"]]
    cols, rows = read_table(res.file("profile.csv"))
    assert cols == ["cluster", "pixels", "L1", "L3"]
    assert rows[0] == ["1", "10", "0.4", "0.6"]
    assert json.loads(res.file("scores.json").read_text()) == {"ari": 0.5}


def test_results_folder_is_readable_by_group(tmp_path):
    old = os.umask(0o022)
    try:
        with new_result(tmp_path, "report", "r") as out:
            out.json("a.json", 1)
    finally:
        os.umask(old)
    assert (out.root / PROVENANCE).stat().st_mode & 0o044 == 0o044
