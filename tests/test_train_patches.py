"""Patch sampling: interior rule, image bounds, balance, seeding, slices, bad input."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import zarr

from helpers import band_labels
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.train.patches import sample_patches
from napari_brainfeatures.train.splits import (
    choose_slices,
    iter_sample_splits,
    painted_classes,
    painted_slices,
    sample_splits,
    split_slices,
)

P = 16


def toy(z: int = 5, h: int = 64, w: int = 90, seed: int = 0):
    """Three vertical bands (ids 1, 2, 4), an unlabelled top margin, random bytes."""
    img = np.random.default_rng(seed).integers(0, 256, (z, h, w), dtype=np.uint8)
    return img, band_labels((z, h, w), (1, 2, 4), top=5)


def window(vol, z, y, x, p=P):
    return vol[z, y - p // 2 : y - p // 2 + p, x - p // 2 : x - p // 2 + p]


def test_interior_patches_are_uniform_and_match_the_image():
    img, lab = toy()
    ps = sample_patches(img, lab, slices=[0, 2], patch_size=P, per_class=60, seed=3)
    assert ps.patches.shape == (180, P, P) and ps.patches.dtype == np.uint8
    assert ps.class_ids == [1, 2, 4] and ps.interior
    assert set(ps.slices) == {0, 2}
    for patch, label, (z, y, x) in zip(ps.patches, ps.labels, ps.centres, strict=True):
        assert (window(lab, z, y, x) == label).all()  # every pixel shares the class
        np.testing.assert_array_equal(window(img, z, y, x), patch)
    # 30-px bands, 59 labelled rows: (30 - 16 + 1) * (59 - 16 + 1) corners per slice
    assert ps.available == {1: 2 * 15 * 44, 2: 2 * 15 * 44, 4: 2 * 15 * 44}
    assert len({tuple(c) for c in ps.centres}) == len(ps)  # drawn without replacement


def test_unrestricted_patches_centre_label_and_inside_image():
    img, lab = toy()
    ps = sample_patches(img, lab, slices=1, patch_size=P, per_class=500, interior=False, seed=0)
    h, w = img.shape[1:]
    y, x = ps.centres[:, 1], ps.centres[:, 2]
    assert (y - P // 2 >= 0).all() and (y - P // 2 + P <= h).all()
    assert (x - P // 2 >= 0).all() and (x - P // 2 + P <= w).all()
    assert (lab[ps.centres[:, 0], y, x] == ps.labels).all()
    mixed = [len(np.unique(window(lab, *c))) > 1 for c in ps.centres]
    assert any(mixed)  # boundary patches are allowed here
    assert ps.patches.shape == (1500, P, P)


def test_balanced_and_targets():
    img, lab = toy()
    ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=40)
    assert ps.counts == {1: 40, 2: 40, 4: 40}
    np.testing.assert_array_equal(np.bincount(ps.targets), [40, 40, 40])
    sub = ps.subset(ps.labels == 4)
    assert len(sub) == 40 and (sub.targets == 2).all()


def test_seeding_is_deterministic():
    img, lab = toy()
    a = sample_patches(img, lab, slices=0, patch_size=P, per_class=30, seed=7)
    b = sample_patches(img, lab, slices=0, patch_size=P, per_class=30, seed=7)
    c = sample_patches(img, lab, slices=0, patch_size=P, per_class=30, seed=8)
    np.testing.assert_array_equal(a.centres, b.centres)
    np.testing.assert_array_equal(a.patches, b.patches)
    assert not np.array_equal(a.centres, c.centres)


def test_reads_only_the_needed_slices_from_dask_and_zarr(tmp_path):
    img, lab = toy()
    read = []

    def spy(block, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return block

    dimg = da.from_array(img, chunks=(1, 64, 90)).map_blocks(spy, dtype=img.dtype)
    zlab = zarr.create_array(
        str(tmp_path / "lab.zarr"), shape=lab.shape, chunks=(1, 64, 90), dtype=lab.dtype
    )
    zlab[:] = lab
    ps = sample_patches(dimg, zlab, slices=[3], patch_size=P, per_class=5)
    assert set(read) == {3}
    ref = sample_patches(img, lab, slices=[3], patch_size=P, per_class=5)
    np.testing.assert_array_equal(ps.patches, ref.patches)


def test_few_positions_warn_and_give_all():
    img, lab = toy()
    lab[:, 5:, 60:] = 0
    lab[:, 20:37, 70:87] = 4  # room for 2 x 2 interior corners only
    with pytest.warns(UserWarning, match=r"'VP'.*only 4 interior patch positions.*using 4"):
        ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=10, classes=[1, 2, 4])
    assert ps.counts == {1: 10, 2: 10, 4: 4}


def test_classes_from_a_table_keep_its_order_and_names():
    img, lab = toy()
    table = ClassTable.from_names(["a", "b", "c", "d"]).remove(3)
    table = ClassTable((table.by_id(4), table.by_id(1), table.by_id(2)))
    ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=5, classes=table)
    assert ps.class_ids == [4, 1, 2] and ps.classes.names == ["d", "a", "b"]
    assert (ps.targets[ps.labels == 4] == 0).all()


def test_ids_beyond_the_default_table_get_generic_names():
    img, lab = toy()
    lab = lab.astype(np.int64)
    lab[lab == 4] = 40000  # int64 labels, an id beyond the default table
    ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=3)
    assert ps.class_ids == [1, 2, 40000] and ps.classes.names[-1] == "class40000"
    atlas = np.where(lab == 40000, 512_000_000, lab)  # an Allen-atlas-like id
    with pytest.raises(ValueError, match="outside 1..65535.*relabel"):
        sample_patches(img, atlas, slices=0, patch_size=P, per_class=3)


def test_nan_pixels_are_kept_out_of_every_patch():
    """Float scans often hold NaN outside the field of view: sampled around, not refused."""
    img, lab = toy()
    img = img.astype(np.float32)
    img[:, :, 40:44] = np.nan  # a NaN stripe through class 2 (columns 30-59)
    for interior in (True, False):
        ps = sample_patches(img, lab, slices=(0, 1), patch_size=P, per_class=20, interior=interior)
        assert np.isfinite(ps.patches).all() and set(ps.class_ids) == {1, 2, 4}
    assert (np.abs(ps.centres[:, 2] - 41.5) >= P // 2 - 1).all()  # no window over the stripe


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda i, lab: (i, lab[:, :, :-1]), "labels shape"),
        (lambda i, lab: (i, np.zeros_like(lab)), "no labels painted"),
        (lambda i, lab: (i, np.where(lab > 0, 2, 0).astype(np.uint8)), "at least two classes"),
        (
            lambda i, lab: (i.astype(np.float32) * np.where(lab == 1, np.nan, 1), lab),
            "free of NaN pixels.*'Ctx'",
        ),
        (lambda i, lab: (i[:, :10, :10], lab[:, :10, :10]), "patch_size must be"),
    ],
    ids=["shape", "unpainted", "one-class", "nan", "too-small"],
)
def test_bad_input_errors(change, match):
    img, lab = change(*toy())
    with pytest.raises(ValueError, match=match):
        sample_patches(img, lab, slices=0, patch_size=P, per_class=5)


def test_class_without_room_errors():
    img, lab = toy()
    lab[:, 10:20, 70:80] = 5  # a 10 x 10 island of WM: no room for a 16 px patch
    with pytest.raises(ValueError, match=r"no 16x16 patch fits entirely inside.*\['WM'\]"):
        sample_patches(img, lab, slices=0, patch_size=P, per_class=5)
    # unrestricted sampling can still use it
    ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=5, interior=False)
    assert ps.counts[5] == 5


def test_bad_slices_and_per_class():
    img, lab = toy()
    with pytest.raises(ValueError, match="slices must be in 0..4"):
        sample_patches(img, lab, slices=[9], patch_size=P)
    with pytest.raises(ValueError, match="distinct"):
        sample_patches(img, lab, slices=[1, 1], patch_size=P)
    with pytest.raises(ValueError, match="per_class"):
        sample_patches(img, lab, slices=[1], patch_size=P, per_class=0)


def test_split_slices_50um_rule():
    assert split_slices(128, voxel_size=1.17) == (20, 63, 106)  # delta = round(50 / 1.17) = 43
    assert split_slices(720, voxel_size=1.17, start=159) == (159, 202, 245)
    assert split_slices(128, voxel_size=1.17, start=100) == (100, 113, 126)  # clipped
    assert split_slices(5) == (0, 2, 4)
    with pytest.raises(ValueError, match="no room"):
        split_slices(128, start=126)
    with pytest.raises(ValueError, match="3 distinct"):
        split_slices(2)


def test_sample_splits_rules():
    img, lab = toy()
    s = sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, per_class=40)
    assert s.slices() == {"train": [0], "val": [2], "test": [4]}
    assert s.train.interior and not s.val.interior and not s.test.interior
    assert s.counts()["val"] == {1: 20, 2: 20, 4: 20}
    assert s.train.class_ids == s.val.class_ids == s.test.class_ids
    with pytest.raises(ValueError, match="train and test slices must be disjoint"):
        sample_splits(img, lab, slices=([0, 1], 2, [3, 1]), patch_size=P)
    default = sample_splits(img, lab, patch_size=P, per_class=4)
    assert default.slices() == {"train": [0], "val": [2], "test": [4]}
    with pytest.raises(ValueError, match="single section: split it by region"):
        sample_splits(img[:1], lab[:1], slices=(0, 0, 0), patch_size=P)


def test_no_warning_when_enough():
    img, lab = toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_patches(img, lab, slices=0, patch_size=P, per_class=100)


def scribbles(z: int = 5, h: int = 64, w: int = 90):
    """Class 1 as a filled band, classes 2 and 4 as 3-px strokes (no 16-px patch fits inside)."""
    img, full = toy(z, h, w)
    lab = np.zeros_like(full)
    lab[:, 5:, :30] = 1
    lab[:, 20:50, 44:47] = 2  # a vertical stroke inside band 2
    lab[:, 30:33, 64:85] = 4  # a horizontal stroke inside band 4
    return img, lab


def test_auto_centres_the_patches_of_stroke_painted_classes():
    img, lab = scribbles()
    with pytest.raises(ValueError, match=r"fits entirely inside.*\['HypoTh', 'VP'\].*'auto'"):
        sample_patches(img, lab, slices=0, patch_size=P, per_class=20)
    both = r"class\(es\) 'HypoTh' \(id 2, 90 px\), 'VP' \(id 4, 63 px\)"
    with pytest.warns(UserWarning, match=r"no 16x16 patch fits inside the paint of " + both):
        ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=20, interior="auto")
    assert ps.centred == (2, 4) and not ps.interior
    assert ps.counts == {1: 20, 2: 20, 4: 20}
    for label, (z, y, x) in zip(ps.labels, ps.centres, strict=True):
        assert lab[z, y, x] == label  # centred on its own paint
        if label == 1:  # a filled class keeps the paper's interior rule
            assert (window(lab, z, y, x) == 1).all()
    assert ps.subset(slice(0, 3)).centred == (2, 4)
    with pytest.raises(ValueError, match="interior must be"):
        sample_patches(img, lab, slices=0, patch_size=P, interior="yes")


def test_the_warning_of_a_context_network_speaks_of_its_central_view():
    """With ``core``, the inside rule is on the central view: the warning says so, with its size."""
    img, lab = scribbles()
    with pytest.warns(UserWarning) as caught:
        ps = sample_patches(img, lab, slices=0, patch_size=P, per_class=20, interior="auto",
                            core=8)  # fmt: skip
    msg = str(caught[0].message)
    assert "no 16x16 patch with its central 8x8 view fits inside the paint of" in msg
    assert "of a 8x8 window is painted with it" in msg
    assert "widest fully painted square is 3 px" in msg
    assert ps.centred == (2, 4)


def test_auto_is_the_interior_rule_when_every_class_fits():
    img, lab = toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto = sample_patches(img, lab, slices=[0, 2], patch_size=P, per_class=30, interior="auto")
    strict = sample_patches(img, lab, slices=[0, 2], patch_size=P, per_class=30)
    np.testing.assert_array_equal(auto.centres, strict.centres)
    assert auto.interior and auto.centred == ()


def test_splits_leave_out_a_class_missing_on_an_evaluation_slice():
    img, lab = scribbles()
    lab[2][lab[2] == 4] = 0  # VP not painted on the validation slice
    with pytest.warns(UserWarning) as rec:
        s = sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, per_class=10)
    msgs = [str(w.message) for w in rec]
    assert any(m.startswith("training slices: no 16x16 patch fits inside") for m in msgs)
    assert any(m.startswith("validation slices: class(es) ['VP'] offer no") for m in msgs)
    assert s.train.class_ids == s.val.class_ids == [1, 2, 4]  # the network's outputs
    assert s.val.counts[4] == 0 and s.test.counts[4] == 5
    assert set(s.val.targets) <= {0, 1}  # every label maps to an output (VP's is 2)
    with pytest.raises(ValueError, match=r"^training slices: .*fits entirely inside"):
        sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, interior=True)
    lab[4] = 0
    with pytest.raises(ValueError, match=r"^test slices: no labels painted"):
        sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, per_class=10)


def test_splits_record_their_warnings_and_report_progress():
    img, lab = scribbles()
    lab[2][lab[2] == 4] = 0
    gen = iter_sample_splits(
        img, lab, slices=(0, 2, 4), patch_size=P, per_class=10, warn=False
    )  # a GUI shows the warnings itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records, s = [], None
        while s is None:
            try:
                records.append(next(gen))
            except StopIteration as stop:
                s = stop.value
    assert [r.step for r in records] == [0, 1, 2] and records[0].total == 3
    assert "validation slices [2]" in records[1].message
    assert s.warned[0].startswith("training slices: no 16x16 patch fits inside")
    assert any(m.startswith("validation slices: class(es) ['VP']") for m in s.warned)


def test_painted_classes_and_default_slices():
    img, lab = toy()
    lab[1:4] = 0  # painted on z = 0 and 4 only
    lab[4][lab[4] == 4] = 0
    table = ClassTable.from_names(["a", "b", "c", "d"])  # ids 1..4
    assert painted_classes(table, lab, 4).ids == [1, 2]
    assert painted_classes(table, lab, [0, 4]).ids == [1, 2, 4]
    assert painted_classes(None, lab, 0) is None
    lab[0, :2, :2] = 9  # an id no class of the table has: said, not dropped silently
    with pytest.warns(UserWarning, match=r"label ids 9 are painted but are no class"):
        assert painted_classes(table, lab, [0, 4]).ids == [1, 2, 4]
    lab[0, :2, :2] = 1
    assert painted_slices(lab) == [0, 4] and painted_slices(lab[0]) is None
    given = choose_slices(lab, ([0], 2, [4]))
    assert given.slices == ([0], [2], [4]) and given.how == "" and given.painted is None
    rule = choose_slices(lab, voxel_size=2.0)  # two painted slices: the 50 µm rule
    assert rule.slices == ([0], [2], [4]) and rule.how == "2 slices = 4 µm apart"
    lab[2] = lab[0]
    lab[3] = lab[0]
    after = choose_slices(lab, (1, None, None))  # from the given training slice
    assert after.slices == ([1], [2], [3]) and after.painted == [0, 2, 3, 4]
    lab[:] = 0
    lab[[1, 2, 3]] = 1  # the rule's 0 / 2 / 4 are not all painted: the painted ones
    picked = choose_slices(lab)
    assert picked.slices == ([1], [2], [3]) and "painted slices [1, 2, 3]" in picked.how


def test_a_tissue_mask_keeps_patches_mostly_in_tissue():
    img, lab = toy()
    tissue = np.ones_like(lab)
    tissue[:, :, 75:] = 0  # a cut face: background on the right, painted over by coarse paint
    tissue[3] = 0  # slice 3's mask was never computed: not restricted
    kw = {"patch_size": P, "per_class": 400, "interior": False, "seed": 0}
    free = sample_patches(img, lab, slices=[0, 3], **kw)
    held = sample_patches(img, lab, slices=[0, 3], tissue=tissue, min_tissue=0.75, **kw)
    assert free.min_tissue is None and held.min_tissue == 0.75
    share = np.array([window(tissue, *c).mean() if c[0] == 0 else 1.0 for c in held.centres])
    assert (share >= 0.75).all()
    on0 = held.centres[held.centres[:, 0] == 0]
    # at most a quarter of the window beyond x = 75: centres at x <= 75 + 16 // 4 - 8
    assert on0[:, 2].max() <= 71 and on0[:, 2].max() >= 69
    free0 = free.centres[free.centres[:, 0] == 0]
    assert free0[:, 2].max() > 75  # without the mask, patches of background are drawn
    on3 = held.centres[held.centres[:, 0] == 3]
    assert on3[:, 2].max() > 75  # the uncomputed slice is not restricted
    assert held.available[4] < free.available[4] and held.available[1] == free.available[1]
    with pytest.raises(ValueError, match="min_tissue must be"):
        sample_patches(img, lab, slices=[0], tissue=tissue, min_tissue=0, **kw)
    with pytest.raises(ValueError, match="tissue mask shape"):
        sample_patches(img, lab, slices=[0], tissue=tissue[:, :10], **kw)


def test_splits_pass_the_tissue_mask_to_every_split():
    img, lab = toy()
    tissue = np.ones_like(lab)
    tissue[:, :, 80:] = 0
    splits = sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, per_class=30,
                           eval_per_class=30, tissue=tissue, min_tissue=1.0)  # fmt: skip
    for ps in (splits.train, splits.val, splits.test):
        assert ps.min_tissue == 1.0
        assert (ps.centres[:, 2] + P - P // 2 <= 80).all()
    # the model file's training record says how the patches were restricted
    import torch

    from napari_brainfeatures.train.recipe import Recipe, training_record

    best = {"epoch": 1, "val_acc": 0.5, "val_loss": 1.0}
    rec = training_record(Recipe(epochs=1, batch_size=8, lr=1e-3), splits.train, splits.val, [],
                          best=best, device=torch.device("cpu"), started=0.0)  # fmt: skip
    assert rec["min_tissue"] == 1.0


def test_core_applies_the_inside_rule_to_the_central_view():
    """A band narrower than the window trains from windows whose central view is inside it."""
    rng = np.random.default_rng(0)
    lab = np.ones((1, 80, 80), np.uint8)
    lab[:, 30:50] = 2  # a 20 px band, narrower than a 32 px window
    img = rng.integers(0, 256, lab.shape, dtype=np.uint8)
    kw = {"slices": [0], "patch_size": 32, "per_class": 50, "seed": 0}
    with pytest.raises(ValueError, match="fits entirely inside"):
        sample_patches(img, lab, **kw)
    ps = sample_patches(img, lab, core=16, **kw)
    assert ps.patches.shape[1:] == (32, 32)
    band = ps.centres[ps.labels == 2]
    assert len(band) == 50 and (band[:, 1] - 8 >= 30).all() and (band[:, 1] + 8 <= 50).all()
    for z, y, x in band:  # the central 16 px are all band; the window shows the areas around
        assert (lab[z, y - 8 : y + 8, x - 8 : x + 8] == 2).all()
    assert any((window(lab, *c, p=32) == 1).any() for c in band)
    with pytest.raises(ValueError, match="core must be"):
        sample_patches(img, lab, core=15, **kw)
