import json

import numpy as np
import pytest

from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.workspace import (
    Workspace,
    WorkspaceError,
    default_workspace_path,
    write_json_atomic,
)


def test_create_reopen_and_labels_persist(tmp_path):
    ws = Workspace.open(tmp_path / "w.brainfeatures", shape=(3, 20, 30), data_path="/d/x.zarr")
    assert ws.classes == default_table()
    labels = ws.labels()
    labels[1, 2:5, 3:7] = 4
    again = Workspace.open(tmp_path / "w.brainfeatures", shape=(3, 20, 30))
    stored = np.asarray(again.labels()[:])
    assert stored.dtype == np.uint16 and stored.sum() == 4 * 12
    assert json.loads((tmp_path / "w.brainfeatures" / "workspace.json").read_text())["shape"] == [
        3,
        20,
        30,
    ]


def test_shape_mismatch_is_refused(tmp_path):
    Workspace.open(tmp_path / "w", shape=(3, 20, 30))
    with pytest.raises(WorkspaceError, match="shape"):
        Workspace.open(tmp_path / "w", shape=(3, 20, 31))


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "thesis.docx").write_text("precious")
    with pytest.raises(WorkspaceError, match="not a workspace"):
        Workspace.open(tmp_path / "f", shape=(1, 2, 3))
    assert (tmp_path / "f" / "thesis.docx").read_text() == "precious"


def test_class_table_round_trip(tmp_path):
    ws = Workspace.open(tmp_path / "w", shape=(1, 4, 4))
    ws.save_classes(ws.classes.add("L4 barrels").rename(1, "SSp"))
    again = Workspace.open(tmp_path / "w")
    assert again.classes.names[0] == "SSp" and again.classes.names[-1] == "L4 barrels"


def test_corrupt_files_raise(tmp_path):
    ws = Workspace.open(tmp_path / "w", shape=(1, 4, 4))
    (ws.root / "classes.json").write_text("{broken")
    with pytest.raises(WorkspaceError, match="class table"):
        _ = ws.classes
    (ws.root / "workspace.json").write_text("{broken")
    with pytest.raises(WorkspaceError, match="corrupt"):
        Workspace.open(ws.root)


def test_save_labels_region(tmp_path):
    ws = Workspace.open(tmp_path / "w", shape=(2, 8, 8))
    ws.save_labels(np.full((4, 4), 2), region=(1, slice(0, 4), slice(4, 8)))
    assert int(np.asarray(ws.labels()[:]).sum()) == 32
    with pytest.raises(ValueError, match="0..65535"):
        ws.save_labels(np.full((4, 4), -1), region=(1, slice(0, 4), slice(4, 8)))


def test_atomic_json_leaves_no_temp(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask):
    """mkstemp makes 0600 files; results and models follow the umask like any file."""
    import os

    from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, save_cnn

    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        model = save_cnn(
            tmp_path / "m",
            BrainAreaCNN(CNNConfig(patch_size=64, n_classes=2)),
            classes=ClassTable.from_names(["a", "b"]),
        )
    finally:
        os.umask(old)
    want = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == want
    assert model.stat().st_mode & 0o777 == want


def test_default_paths(tmp_path, monkeypatch):
    assert default_workspace_path(tmp_path / "brain.ome.zarr").name == "brain.brainfeatures"
    monkeypatch.setenv("BRAINFEATURES_HOME", str(tmp_path))
    p = default_workspace_path(None, name="sample: micro/ct")
    assert p.parent == tmp_path / "workspaces" and "/" not in p.name


def test_an_array_inside_a_zarr_store_gets_a_workspace_beside_the_store(tmp_path):
    import zarr

    from napari_brainfeatures.io.volume import IMAGE_NAMES
    from napari_brainfeatures.workspace import _IMAGE_ARRAYS

    assert _IMAGE_ARRAYS == IMAGE_NAMES  # the group's default array shares its workspace
    g = zarr.open_group(str(tmp_path / "ct.zarr"), mode="w")
    g.create_array("image", shape=(2, 8, 8), dtype="uint8")
    g.create_array("areas", shape=(2, 8, 8), dtype="uint8")
    beside = tmp_path / "ct.brainfeatures"
    assert default_workspace_path(tmp_path / "ct.zarr") == beside
    assert default_workspace_path(tmp_path / "ct.zarr" / "image") == beside  # one volume
    assert default_workspace_path(tmp_path / "ct.zarr" / "areas") == tmp_path / (
        "ct_areas.brainfeatures"
    )
    ome = zarr.open_group(str(tmp_path / "x.ome.zarr"), mode="w")
    ome.create_array("1", shape=(2, 4, 4), dtype="uint8")
    assert default_workspace_path(tmp_path / "x.ome.zarr" / "1").name == "x_1.brainfeatures"
    old = tmp_path / "ct.zarr" / "image.brainfeatures"  # where earlier versions put it
    old.mkdir()
    (old / "workspace.json").write_text("{}")
    assert default_workspace_path(tmp_path / "ct.zarr" / "image") == old  # still found
