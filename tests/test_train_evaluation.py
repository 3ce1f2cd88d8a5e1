"""Evaluation: metrics against scikit-learn, JSON round trip, slice maps, the figure."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.progress import run
from napari_brainfeatures.train.evaluation import (
    Evaluation,
    confusion_figure,
    evaluate,
    trained_with_flips,
)
from napari_brainfeatures.train.patches import PatchSet
from napari_brainfeatures.train.predict import predict_proba, predict_slice, slice_accuracy

P = 16
TABLE = ClassTable.from_names(["a", "b", "c"])


class CentreModel(BrainAreaCNN):
    """Class 1 ('b') when a patch's centre pixel is bright, else class 0 ('a')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, 0, P // 2, P // 2]  # (B,)
        z = torch.zeros_like(c)
        return torch.stack([(0.5 - c) * 20, (c - 0.5) * 20, z - 5], 1)  # (B, 3)


def centre_model() -> CentreModel:
    cfg = CNNConfig(
        patch_size=P, n_classes=3, channels=(2, 2), kernels=(3, 3), paddings=(0, 0), fc=(4,)
    )
    return CentreModel(cfg).eval()


def patchset(centres_bright: list[bool], labels: list[int]) -> PatchSet:
    n = len(labels)
    patches = np.zeros((n, P, P), np.uint8)
    # the central 2 x 2 block: unchanged by the 8 flips of the default evaluation
    patches[np.array(centres_bright), P // 2 - 1 : P // 2 + 1, P // 2 - 1 : P // 2 + 1] = 255
    return PatchSet(patches, np.array(labels, np.int64), np.zeros((n, 3), np.int64), TABLE)


def test_metrics_match_sklearn():
    bright = [False, False, True, True, True, False, True, False]
    labels = [1, 1, 2, 2, 1, 3, 3, 2]
    ev = evaluate(centre_model(), patchset(bright, labels), batch_size=3)
    y_true = np.array(labels) - 1
    y_pred = np.array(bright, int)
    assert ev.accuracy == pytest.approx((y_true == y_pred).mean())
    np.testing.assert_array_equal(ev.confusion, [[2, 1, 0], [1, 2, 0], [1, 1, 0]])
    np.testing.assert_allclose(
        ev.f1, f1_score(y_true, y_pred, labels=[0, 1, 2], average=None, zero_division=0)
    )
    assert ev.macro_f1 == pytest.approx(ev.f1.mean())
    assert ev.support.tolist() == [3, 3, 2] and ev.n == 8
    assert ev.class_names == ["a", "b", "c"] and ev.class_ids == [1, 2, 3]
    assert ev.per_class()["b"]["recall"] == pytest.approx(2 / 3)


class CornerModel(BrainAreaCNN):
    """Class 1 ('b') when the top-left pixel is bright: not invariant to flips."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, 0, 0, 0]  # (B,)
        return torch.stack([(0.5 - c) * 20, (c - 0.5) * 20, torch.zeros_like(c) - 5], 1)


def test_tta_is_the_mean_over_the_eight_flips():
    cfg = centre_model().config
    model = CornerModel(cfg).eval()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, P, P)).astype(np.uint8)
    x[:2, 0, 0] = 255
    x[:2, 0, -1] = x[:2, -1, 0] = x[:2, -1, -1] = 0  # only one bright corner
    views = [np.rot90(x, k, (1, 2)) for k in range(4)]
    views += [v.transpose(0, 2, 1) for v in views]
    want = np.mean([predict_proba(model, np.ascontiguousarray(v)) for v in views], 0)
    got = predict_proba(model, x, tta=True, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, predict_proba(model, x))  # the flips matter to this model
    ps = PatchSet(x[:2], np.array([2, 2]), np.zeros((2, 3), np.int64), TABLE)
    assert evaluate(model, ps, tta=False).accuracy == 1.0  # corner bright: 'b' seen once
    ev = evaluate(model, ps)  # default: 2 of 8 views see the bright corner -> 'a'
    assert ev.tta and ev.accuracy == 0.0
    assert Evaluation.from_dict(ev.to_dict()).tta


def test_trained_with_flips_reads_the_training_record():
    assert trained_with_flips({"training": {"augment": True}})
    assert not trained_with_flips({"training": {"augment": False}})
    assert trained_with_flips({})  # no record (an imported model): the paper's augmentation


def test_json_round_trip(tmp_path):
    ev = evaluate(centre_model(), patchset([True, False, True], [2, 1, 1]))
    path = ev.save(tmp_path / "sub" / "ev.json")
    back = Evaluation.load(path)
    assert back.to_dict() == ev.to_dict()
    np.testing.assert_array_equal(back.confusion, ev.confusion)
    (tmp_path / "bad.json").write_text('{"accuracy": 1}')
    with pytest.raises(ValueError, match="not an evaluation record"):
        Evaluation.load(tmp_path / "bad.json")


def test_evaluate_refuses_foreign_labels():
    ps = patchset([True], [7])
    ps.classes = ClassTable.from_names([f"c{i}" for i in range(7)])
    with pytest.raises(ValueError, match="3 outputs"):
        evaluate(centre_model(), ps)
    with pytest.raises(ValueError, match=r"\[7\] are not classes"):
        evaluate(centre_model(), ps, classes=TABLE)


def test_confusion_figure_writes_png_without_pyplot(tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    ev = evaluate(centre_model(), patchset([True, False, True, False], [2, 1, 1, 3]))
    path = confusion_figure(ev, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


def bright_right(h: int = 48, w: int = 60, edge: int = 37) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    img[:, edge:] = 255
    return img


def test_predict_slice_stride1_is_aligned_to_patch_centres():
    img = bright_right()
    records = []
    pred = run(
        predict_slice(centre_model(), img, stride=1, batch_size=100, classes=TABLE), records.append
    )
    assert records[-1].step == records[-1].total == (48 - P + 1) * (60 - P + 1)
    h, w = img.shape
    inside = np.zeros_like(img, bool)
    inside[P // 2 : h - P + P // 2 + 1, P // 2 : w - P + P // 2 + 1] = True
    assert (pred.areas[~inside] == 0).all() and np.isnan(pred.confidence[~inside]).all()
    want = np.where(img > 0, 2, 1)
    np.testing.assert_array_equal(pred.areas[inside], want[inside])
    assert (pred.confidence[inside] > 0.99).all()


def test_predict_slice_coarse_stride_is_nearest_centre():
    img = bright_right(edge=37)
    pred = run(predict_slice(centre_model(), img, stride=4, classes=TABLE))
    row = pred.areas[20]
    cols = np.flatnonzero(row)
    assert cols[0] == P // 2 and cols[-1] == 60 - P + P // 2
    # grid centres at 8, 12, ..., 36, 40, ...: 36 is dark, 40 bright; the switch lies between
    switch = cols[np.argmax(row[cols] == 2)]
    assert 37 <= switch <= 40
    labels = np.where(img > 0, 2, 1)
    assert slice_accuracy(pred, labels) > 0.9


def test_predict_slice_input_checks():
    with pytest.raises(ValueError, match="smaller than the 16 px patch"):
        run(predict_slice(centre_model(), np.zeros((10, 40), np.uint8)))
    with pytest.raises(ValueError, match="2-D"):
        run(predict_slice(centre_model(), np.zeros((2, 40, 40), np.uint8)))
    with pytest.raises(ValueError, match="stride"):
        run(predict_slice(centre_model(), np.zeros((40, 40), np.uint8), stride=0))


def test_scoring_leaves_the_model_layout_as_it_was():
    model = BrainAreaCNN(centre_model().config).eval()
    w = model.convs[-1].weight
    x = np.zeros((3, P, P), np.uint8)
    predict_proba(model, x, tta=True)
    assert w.is_contiguous()  # converted for the run, then restored
    model.to(memory_format=torch.channels_last)
    predict_proba(model, x)
    assert not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)


def test_warnings_near_chance_and_never_predicted():
    model = centre_model()  # never predicts 'c'
    good = evaluate(model, patchset([False, True] * 6, [1, 2] * 6), classes=TABLE, tta=False)
    assert good.accuracy == 1.0 and good.chance_level == 0.5 and good.warnings() == []
    mixed = patchset([False, True, False], [1, 2, 3])
    ev = evaluate(model, mixed, classes=TABLE, tta=False)
    assert ev.accuracy == pytest.approx(2 / 3)
    assert ev.warnings() == ["never predicted: c"]  # 67 % is not near a chance of 33 %
    bad = evaluate(model, patchset([True, False, True], [1, 2, 3]), classes=TABLE, tta=False)
    text = bad.warnings()
    assert bad.accuracy == 0.0 and len(text) == 2 and "near chance (33.3%)" in text[0]
    assert bad.to_dict()["warnings"] == text and bad.to_dict()["chance_level"] == pytest.approx(
        1 / 3
    )


def test_model_warnings_read_the_training_record():
    from napari_brainfeatures.train.recorded import model_warnings

    counts = {"val": {"1": 50, "2": 50, "3": 50}}
    weak = {"training": {"best_val_acc": 0.4, "counts": counts}}
    assert "near chance (33.3%)" in model_warnings(weak)[0]
    assert model_warnings({"training": {"best_val_acc": 0.9, "counts": counts}}) == []
    assert model_warnings({}) == []  # no record: nothing to say
    run = {"best_val_acc": 0.9, "counts": counts, "epochs": 40, "epochs_run": 4}
    assert "stopped at epoch 4 of 40" in model_warnings({"training": run})[0]  # cancelled
    assert model_warnings({"training": {**run, "stopped_early": True}}) == []  # ended itself


def test_pixel_size_warning_compares_the_image_with_the_model():
    from napari_brainfeatures.train.recorded import pixel_size_warning

    meta = {"voxel_size_um": [1.17, 1.17, 1.17]}
    said = pixel_size_warning(meta, (1.17, 4.68, 4.68))
    assert "4.68 µm" in said and "16 times" in said and "resample" in said
    assert pixel_size_warning(meta, (1.0, 1.2, 1.2)) is None  # within 10 %
    assert pixel_size_warning(meta, None) is None and pixel_size_warning({}, (1, 2, 2)) is None
