"""`make demo`: the sample opens with the shipped CNN in place, then the docks explore a slice."""

import pytest

from napari_brainfeatures._napari import sample_data as _sample_data
from napari_brainfeatures.progress import run


def _sample(monkeypatch, shape):
    monkeypatch.setattr(_sample_data, "MICROCT_SHAPE", shape)
    return run(_sample_data.ensure_microct(shape))


def test_demo_viewer_puts_the_shipped_model_in_the_workspace(monkeypatch, make_napari_viewer):
    from napari_brainfeatures._cli.demo import MODEL_NAME, open_demo_viewer
    from napari_brainfeatures.models.cnn import load_cnn
    from napari_brainfeatures.synthetic.weights import sample_model_record

    sample = _sample(monkeypatch, (4, 160, 192))
    got = []
    viewer = make_napari_viewer()
    assert open_demo_viewer(viewer=viewer, on_ready=got.append) is viewer  # explore: off here
    record = sample_model_record()
    path = sample.with_suffix(".brainfeatures") / "models" / MODEL_NAME
    model, meta = load_cnn(path)  # the workspace's copy: an ordinary float32 model file
    assert meta["sample_model"]["test_accuracy"] == record["test_accuracy"]
    assert meta["sample_model"]["chance_level"] == record["chance_level"]
    assert next(model.parameters()).dtype.is_floating_point
    (out,) = got
    assert (out["ok"], out["steps"], out["error"]) == (True, [], None)
    assert out["model"]["path"] == str(path) and out["model"]["model_source"] == "shipped"
    train = out["widgets"]["Train CNN"]
    assert train.model is not None and train.model.config.patch_size == 128
    acc = f"{record['test_accuracy']:.1%}"
    assert acc in train.status.value and "chance" in train.status.value
    assert acc in viewer.title
    features = out["widgets"]["Feature maps"]
    assert features.model is not None and acc in features.model_info.value


@pytest.mark.slow
def test_demo_explores_the_slice_in_the_docks(monkeypatch, make_napari_viewer, qtbot):
    from napari_brainfeatures._cli.demo import META_KEY, open_demo_viewer

    _sample(monkeypatch, (4, 384, 320))
    got = []
    viewer = make_napari_viewer()
    open_demo_viewer(viewer=viewer, explore=True, stride=16, erode=8, smooth=0,
                     on_ready=got.append)  # fmt: skip
    qtbot.waitUntil(lambda: bool(got), timeout=180_000)
    assert got[0]["steps"][:3] == ["feature maps", "NMF", "clusters"], got[0]
    names = [layer.name for layer in viewer.layers]
    assert "micro-CT (synthetic) predicted areas" in names and "clusters" in names
    assert any(n.startswith("NMF factor ") for n in names)
    made = [ly for ly in viewer.layers if ly.metadata.get("brainfeatures_owner")]
    assert made and all(META_KEY in ly.metadata for ly in made if ly.name != "patch centres")
    stamp = made[0].metadata[META_KEY]
    assert stamp["model_source"] == "shipped" and 0 < stamp["chance_level"] < 0.5
