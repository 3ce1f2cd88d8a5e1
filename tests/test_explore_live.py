"""The live classifier: strokes -> stored features -> prediction of the viewed region."""

import numpy as np
import pytest

from napari_brainfeatures.explore.live import (
    LiveClassifier,
    LiveSession,
    load_live_model,
    save_live_model,
)
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.models.checkpoint import ModelFileError


def stripes(h=60, w=80, d=12, seed=0):
    """Three vertical bands of features (channel 0: 0, 4, 8 on average), stride 2."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(h, w, d)).astype(np.float32)
    band = np.arange(w) * 3 // w  # 0, 1, 2
    f[..., 0] += 4.0 * band[None, :]
    f[:3] = np.nan  # not computed
    return FeatureGrid.of(f, origin=(0, 0), step=(2, 2), image_shape=(2 * h, 2 * w))


def paint(shape, boxes):
    strokes = np.zeros(shape, np.uint8)
    for label, (y0, y1, x0, x1) in boxes:
        strokes[y0:y1, x0:x1] = label
    return strokes


def test_strokes_of_three_classes_predict_the_bands():
    grid = stripes()
    s = LiveSession(grid, context_px=0)  # the pixels' own features (context: below)
    s.view(s.box_of(0, 119, 0, 159))
    strokes = paint(
        (120, 160), [(1, (40, 60, 10, 14)), (2, (40, 60, 70, 74)), (5, (40, 60, 140, 144))]
    )
    r = s.update(strokes)
    assert r.labels.shape == grid.shape and r.labels.dtype == np.uint8
    # each stroke covers 11 x 3 grid points (stride 2)
    assert r.n_samples == {1: 33, 2: 33, 5: 33}
    band = np.arange(80) * 3 // 80
    truth = np.array([1, 2, 5])[band][None].repeat(60, 0)
    assert (r.labels[3:] == truth[3:]).mean() > 0.8  # far above chance (1/3)
    assert (r.labels[:3] == 0).all() and np.isnan(r.uncertainty[:3]).all()
    u = r.uncertainty[3:]
    assert 0 <= u.min() and u.max() <= 1
    # less sure at the band borders than in their middles
    assert u[:, [26, 27, 53, 54]].mean() > u[:, [10, 40, 70]].mean()


def test_a_view_predicts_its_region_only_and_reads_it_once():
    grid = stripes()
    s = LiveSession(grid)
    box = s.box_of(20, 59, 30, 99)  # image px -> grid points
    assert box == (10, 31, 15, 51)
    assert s.view(box) and not s.view(box)  # cached: the same view is not read again
    strokes = paint((120, 160), [(1, (40, 60, 10, 14)), (2, (40, 60, 140, 144))])
    r = s.update(strokes)  # the strokes lie outside the view: read from the store
    assert r.labels.shape == (21, 36)
    assert r.grid.origin == (20, 30) and r.grid.step == (2, 2)
    assert r.grid.layer_kwargs()["translate"] == (20.0, 30.0)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([], "no strokes yet"),
        ([(1, (40, 60, 10, 14))], "one class only"),
        ([(1, (0, 5, 10, 14)), (2, (0, 5, 70, 74))], "no feature was computed"),
    ],
)
def test_bad_strokes_say_what_to_do(boxes, message):
    s = LiveSession(stripes())
    s.view(s.box_of(0, 119, 0, 159))
    with pytest.raises(ValueError, match=message):
        s.update(paint((120, 160), boxes))


def test_strokes_outside_the_store_region():
    grid = FeatureGrid.of(stripes().features[10:20, 10:20], origin=(20, 20), step=(2, 2))
    s = LiveSession(grid)
    s.view((0, 10, 0, 10))
    with pytest.raises(ValueError, match=r"outside the feature store's region \(image rows 20"):
        s.update(paint((120, 160), [(1, (80, 90, 0, 5)), (2, (100, 110, 0, 5))]))
    with pytest.raises(ValueError, match="does not overlap"):
        s.box_of(100, 119, 100, 159)
    with pytest.raises(ValueError, match="call view"):
        LiveSession(grid).update(paint((120, 160), [(1, (20, 22, 20, 22))]))


def test_two_classes_and_refits_keep_working():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4))
    y = np.where(x[:, 1] > 0, 3, 7)
    clf = LiveClassifier().fit(x, y)
    pred, unc = clf.predict(x)
    assert clf.weight_.shape == (2, 4) and (pred == y).mean() > 0.95
    clf.fit(x[:100], y[:100])  # warm start from the last fit
    assert (clf.predict(x)[0] == y).mean() > 0.9
    with pytest.raises(ValueError, match="C must be"):
        LiveClassifier(C=0)


def test_save_and_load_with_the_stroke_set(tmp_path):
    grid = stripes()
    s = LiveSession(grid, context_px=0)  # the pixel's features only: predict() needs no map
    s.view(s.box_of(0, 119, 0, 159))
    with pytest.raises(ValueError, match="nothing to save"):
        save_live_model(tmp_path / "live", s)
    r = s.update(paint((120, 160), [(1, (40, 60, 10, 14)), (2, (40, 60, 140, 144))]))
    path = save_live_model(tmp_path / "live", s, names={1: "L4", 2: "L5"})
    assert path.name == "live.safetensors"
    clf, meta = load_live_model(path)
    points, labels = meta["strokes"]
    assert points.shape == (2 * 11 * 3, 2) and sorted(set(labels.tolist())) == [1, 2]
    assert meta["names"] == {"1": "L4", "2": "L5"} and meta["grid_shape"] == [60, 80]
    pred, _ = clf.predict(np.asarray(grid.features).reshape(-1, 12))
    np.testing.assert_array_equal(pred.reshape(60, 80), r.labels)  # the same classifier
    cnn = tmp_path / "cnn.safetensors"
    cnn.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not replaced"):
        save_live_model(cnn, s)  # never over another file


def test_within_a_mask_only():
    grid = stripes()
    within = np.zeros(grid.shape, bool)
    within[:, 40:] = True  # e.g. one predicted area
    s = LiveSession(grid, within=within)
    s.view(s.box_of(0, 119, 40, 159))  # grid columns 20..79
    r = s.update(paint((120, 160), [(1, (40, 60, 10, 14)), (2, (40, 60, 140, 144))]))
    assert (r.labels[:, :20] == 0).all() and np.isnan(r.uncertainty[:, :20]).all()
    assert (r.labels[3:, 20:] > 0).all()
    with pytest.raises(ValueError, match="mask on the grid"):
        LiveSession(grid, within=within[1:])


def test_context_sees_the_surroundings():
    """Two classes whose pixels look alike; only their neighbourhoods' means differ."""
    rng = np.random.default_rng(2)
    h, w = 64, 64
    f = 0.3 * rng.normal(size=(h, w, 4)).astype(np.float32)
    p_high = np.where(np.arange(w) < 32, 0.75, 0.25)[None, :]  # left: mostly +2; right: -2
    f[..., 0] += np.where(rng.random((h, w)) < p_high, 2.0, -2.0)
    grid = FeatureGrid.of(f, image_shape=(h, w))
    strokes = paint((h, w), [(1, (10, 50, 8, 10)), (2, (10, 50, 54, 56))])
    truth = np.where(np.arange(w) < 32, 1, 2)[None].repeat(h, 0)
    inner = np.r_[4:28, 36:60]  # a block or so away from the border
    scores = {}
    for px in (0.0, 8.0):
        s = LiveSession(grid, context_px=px)
        s.view((0, h, 0, w))
        r = s.update(strokes)
        scores[px] = (r.labels[:, inner] == truth[:, inner]).mean()
    assert s.block == 8 and s.classifier.weight_.shape == (2, 8)
    assert scores[0.0] < 0.8 < 0.9 < scores[8.0]


def test_a_zoomed_out_view_predicts_every_other_point():
    grid = stripes()
    s = LiveSession(grid, context_px=0)
    s.view((0, 60, 0, 80))
    strokes = paint((120, 160), [(1, (40, 60, 10, 14)), (2, (40, 60, 140, 144))])
    full = s.update(strokes)
    assert not s.view((0, 60, 0, 80)) and s.view((0, 60, 0, 80), thin=2)  # not read again
    half = s.update(strokes)
    assert half.labels.shape == (30, 40) and half.grid.step == (4, 4)
    np.testing.assert_array_equal(half.labels, full.labels[::2, ::2])


def test_a_saved_classifier_labels_a_whole_slice_in_bands(tmp_path, monkeypatch):
    import napari_brainfeatures.explore.apply as apply_mod

    grid = stripes()
    s = LiveSession(grid, context_px=16)  # blocks of 8 grid points
    s.view((0, 60, 0, 80))
    s.update(paint((120, 160), [(1, (40, 60, 10, 14)), (2, (40, 60, 140, 144))]))
    whole, whole_unc = s.predict()
    path = save_live_model(tmp_path / "live", s, names={1: "L4", 2: "L5"})
    monkeypatch.setattr(apply_mod, "_BAND_POINTS", 7 * 80)  # nine bands of 7 rows
    pred = apply_mod.apply_live_model(path, grid)
    np.testing.assert_array_equal(pred.labels, whole)
    np.testing.assert_allclose(pred.uncertainty, whole_unc, atol=1e-6)
    assert pred.names == {1: "L4", 2: "L5"} and pred.context_px == 16
    assert sum(pred.counts().values()) == (whole > 0).sum()
    inside = np.zeros(grid.shape, bool)
    inside[:, :40] = True
    only = apply_mod.apply_live_model(path, grid, within=inside)
    assert not only.labels[:, 40:].any() and (only.labels[:, :40] == whole[:, :40]).all()
    other = FeatureGrid.of(np.zeros((10, 10, 5), np.float32))  # another CNN's 5 features
    with pytest.raises(ValueError, match="another CNN"):
        apply_mod.apply_live_model(path, other)


def test_apply_live_command_writes_the_prediction(tmp_path, capsys):
    import json

    import zarr

    from helpers import two_area_store
    from napari_brainfeatures.cli import main

    store, _ = two_area_store(tmp_path)
    grid = FeatureGrid.from_store(store)
    s = LiveSession(grid, context_px=0)
    s.view((0, grid.shape[0], 0, grid.shape[1]))
    s.update(paint((40, 44), [(1, (10, 30, 4, 10)), (2, (10, 30, 30, 40))]))
    model = save_live_model(tmp_path / "live", s, names={1: "dark", 2: "bright"})
    out = tmp_path / "pred"
    assert main(["apply-live", str(model), str(store), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = np.asarray(zarr.open_group(out / "prediction.zarr", mode="r")["labels"])
    np.testing.assert_array_equal(labels, s.predict()[0])
    assert report["names"] == {"1": "dark", "2": "bright"} and (out / "prediction.png").exists()
    assert main(["apply-live", str(model), str(store), "--within", "Nowhere"]) == 2
    assert "not one of the store's areas" in capsys.readouterr().err
    assert main(["apply-live", str(tmp_path / "gone.safetensors"), str(store)]) == 2
    assert "no model at" in capsys.readouterr().err
    assert labels.shape == grid.shape  # the earlier result is still there
    np.testing.assert_array_equal(
        np.asarray(zarr.open_group(out / "prediction.zarr", mode="r")["labels"]), labels
    )


class _Counting:
    """A feature array that records the grid points each read asks for."""

    def __init__(self, array):
        self.array, self.read = array, 0
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        out = self.array[key]
        self.read += int(np.prod(out.shape[:2]))
        return out


def test_a_pan_reads_only_the_newly_shown_strips():
    whole = stripes()
    feats = _Counting(np.asarray(whole.features))
    grid = FeatureGrid.of(feats, origin=(0, 0), step=(2, 2), image_shape=(120, 160))
    s = LiveSession(grid, context_px=0)
    s.view((10, 40, 20, 60))
    assert feats.read == 30 * 40
    s.view((14, 44, 15, 55))  # panned down 4 and left 5: 4 new rows, 5 new columns
    assert feats.read == 30 * 40 + 4 * 40 + 26 * 5
    np.testing.assert_array_equal(s._region, np.asarray(whole.features)[14:44, 15:55])
    s.view((50, 60, 0, 10))  # no overlap: read whole
    np.testing.assert_array_equal(s._region, np.asarray(whole.features)[50:60, 0:10])
    s.view((45, 60, 5, 20), thin=2)  # a bigger box around part of the last one
    np.testing.assert_array_equal(s._region, np.asarray(whole.features)[45:60, 5:20])
    np.testing.assert_array_equal(s._shown, np.asarray(whole.features)[45:60:2, 5:20:2])
