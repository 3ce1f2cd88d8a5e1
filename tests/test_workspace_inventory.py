"""Workspace.inventory: models, feature stores (with completeness), factor and cluster
results, evaluations; leftovers and damaged items are not listed."""

import json

import numpy as np

from helpers import tiny_cnn
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.factors.results import factorise, save_clusters
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.models.cnn import save_cnn
from napari_brainfeatures.progress import run
from napari_brainfeatures.workspace import Workspace


def _fill(ws: Workspace) -> None:
    """One model, a complete and an incomplete store, factors, clusters, an evaluation."""
    net = tiny_cnn()
    model = save_cnn(ws.path("models", "cnn-a"), net, classes=ClassTable.from_names("abc"))
    image = (np.random.default_rng(0).random(ws.shape) * 255).astype(np.uint8)
    full = ws.path("features", "cnn-a-s4.zarr")
    run(compute_feature_map(image, model, out=full, stride=4, tile=4, device="cpu"))
    part = compute_feature_map(image, model, out=ws.path("features", "b.zarr"), stride=4, tile=4)
    next(part), next(part)
    part.close()
    grid = FeatureGrid.open(full, 0)
    fac = run(factorise(grid, 2, seed=0, max_iter=20))
    fac.save(ws.path("results", "nmf") / "factors.zarr")
    labels = np.zeros(grid.shape, np.int32)
    save_clusters(ws.path("results", "kmeans.zarr"), labels, grid, {"k": 2})
    evaluation = {"accuracy": 0.5, "confusion": [[1, 1], [1, 1]], "created": "2026-01-01T00:00"}
    ws.write_json("evaluation-cnn-a.json", evaluation)
    ws.write_json("selection.json", {"pairs": []})  # a sidecar, not a result of its own


def test_inventory_lists_each_kind_with_provenance(tmp_path):
    ws = Workspace.open(tmp_path / "v.brainfeatures", shape=(1, 40, 40))
    _fill(ws)
    (ws.path("models") / ".cnn-b.safetensors.tmp-999999999-abc").write_bytes(b"x")  # leftover
    (ws.path("models") / "broken.safetensors").write_bytes(b"\x00" * 4)  # damaged
    entries = Workspace.open(ws.root, mode="r").inventory()
    kinds = [e.kind for e in entries]
    assert kinds == ["model", "features", "features", "factors", "clusters", "evaluation"]
    model, *stores = entries[:3]
    assert model.name == "cnn-a" and model.provenance["kind"] == "BrainAreaCNN"
    assert model.provenance["config"]["patch_size"] == 32 and model.created
    by_name = {e.name: e for e in stores}
    assert by_name["cnn-a-s4"].complete is True
    assert by_name["cnn-a-s4"].tiles is not None
    assert by_name["cnn-a-s4"].tiles[0] == by_name["cnn-a-s4"].tiles[1]
    assert by_name["b"].complete is False and by_name["b"].tiles is not None
    assert 2 <= by_name["b"].tiles[0] < by_name["b"].tiles[1]  # writes run one tile ahead
    assert by_name["b"].provenance["stride"] == 4
    factors, clusters, evaluation = entries[3:]
    assert factors.name == "nmf" and factors.provenance["k"] == 2
    assert clusters.name == "kmeans" and clusters.provenance["kind"] == "cluster-map"
    assert evaluation.created == "2026-01-01T00:00"
    assert evaluation.provenance["accuracy"] == 0.5


def test_inventory_reads_result_folders_and_writes_nothing(tmp_path):
    ws = Workspace.open(tmp_path / "v.brainfeatures", shape=(1, 8, 8))
    folder = ws.path("results", "analysis") / "report-20260101T000000"
    folder.mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps({"created": "2026-01-01", "model": "m"}))
    (folder / "report.json").write_text(json.dumps({"kind": "not-listed-alone"}))
    other = ws.path("results", "latent") / "traversal-1"
    other.mkdir(parents=True)
    (other / "provenance.json").write_text(json.dumps({"kind": "latent-traversal"}))
    before = sorted(p.stat().st_mtime_ns for p in ws.root.rglob("*"))
    entries = ws.inventory()
    assert [(e.kind, e.name) for e in entries] == [
        ("analysis", "report-20260101T000000"),
        ("latent-traversal", "traversal-1"),
    ]
    assert entries[0].provenance == {"created": "2026-01-01", "model": "m"}
    assert entries[0].complete is None and entries[0].tiles is None
    assert sorted(p.stat().st_mtime_ns for p in ws.root.rglob("*")) == before
