"""One section split by region (blocks, drawn mask, k-fold) with a guard band; real paint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_brainfeatures.train.patches import sample_patches
from napari_brainfeatures.train.recipe import overlapping_patches
from napari_brainfeatures.train.regions import SplitMap, default_split, spatial_split
from napari_brainfeatures.train.splits import sample_splits
from napari_brainfeatures.train.windows import near

P = 16


def section(h: int = 200, w: int = 260, seed: int = 0):
    """One (1, Y, X) section: four areas in quadrants-and-band, random bytes."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((1, h, w), np.uint8)
    lab[0, 10:, :130], lab[0, 10:, 130:] = 1, 2
    lab[0, 100:, 60:200] = 4
    img = rng.integers(0, 256, (1, h, w), dtype=np.uint8)
    return img, lab


def gap(a: np.ndarray, b: np.ndarray) -> int:
    """Smallest Chebyshev distance between the (z, y, x) centres of two patch sets."""
    d = np.abs(a[:, None, 1:] - b[None, :, 1:]).max(-1)  # (Na, Nb)
    return int(d.min())


def test_blocks_guard_band_keeps_every_split_apart():
    _, lab = section()
    sm = spatial_split(lab[0], patch_size=P, seed=1)
    assert sm.guard == P and sm.mode == "blocks"
    regions = [sm.region(s) for s in ("train", "val", "test")]
    for i, r in enumerate(regions):
        assert r.any()
        for j, other in enumerate(regions):
            if i != j:  # no pixel of another split within the guard band
                assert not (near(r, sm.guard) & other).any()
    rec = sm.to_dict()
    assert rec["guard"] == P and len(rec["blocks"]) >= 3 and rec["pixels"]["train"] > 0
    again = SplitMap.from_dict(rec)
    np.testing.assert_array_equal(again.regions, sm.regions)


def test_no_test_or_validation_window_touches_a_training_window():
    img, lab = section()
    for guard in (P, 2 * P):
        sm = spatial_split(lab[0], patch_size=P, guard=guard, seed=0)
        s = sample_splits(img, lab, split_map=sm, patch_size=P, per_class=200, warn=False)
        assert s.train.slices == s.val.slices == s.test.slices == [0]
        for held in (s.val, s.test):
            assert overlapping_patches(s.train, held) == 0
            # windows never intersect, and stay a guard band apart: centres >= P + guard
            assert gap(s.train.centres, held.centres) >= P + guard
        assert gap(s.val.centres, s.test.centres) >= P + guard
        for part, name in zip(s.parts(), ("train", "val", "test"), strict=True):
            region = sm.region(name)
            for _, y, x in part.centres:  # the whole window inside its region
                assert region[y - P // 2 : y + P // 2, x - P // 2 : x + P // 2].all()
        assert set(s.val.class_ids) == {1, 2, 4}
        rec = s.record()
        assert rec["mode"] == "blocks" and rec["guard"] == guard
        assert rec["patches"] == {"train": len(s.train), "val": len(s.val), "test": len(s.test)}


def test_drawn_mask_gets_a_guard_band_and_is_hash_checked():
    _, lab = section()
    mask = np.zeros(lab.shape[1:], np.uint8)
    mask[:, :120], mask[:, 120:190], mask[:, 190:] = 1, 2, 3  # touching regions
    sm = spatial_split(lab[0], patch_size=P, mode="mask", mask=mask, guard=20)
    assert not (near(sm.region("train"), 20) & (sm.regions > 1)).any()
    assert not (near(sm.region("val"), 20) & sm.region("test")).any()
    assert sm.region("train")[:, :110].all()  # each side gives up half the guard band
    assert not sm.region("train")[:, 110:].any() and sm.region("val")[:, 131:179].all()
    rec = sm.to_dict()
    assert rec["mask_sha256"] and "blocks" not in rec
    np.testing.assert_array_equal(SplitMap.from_dict(rec, mask=mask).regions, sm.regions)
    other = mask.copy()
    other[0, 0] = 2
    with pytest.raises(ValueError, match="not the one recorded"):
        SplitMap.from_dict(rec, mask=other)
    with pytest.raises(ValueError, match="give the same mask"):
        SplitMap.from_dict(rec)
    with pytest.raises(ValueError, match=r"no \['test'\] region"):
        spatial_split(lab[0], patch_size=P, mode="mask", mask=np.minimum(mask, 2))
    with pytest.raises(ValueError, match="holds no 16x16 patch"):
        spatial_split(lab[0], patch_size=P, mode="mask", mask=mask, guard=80)


def test_spatial_kfold_tests_every_group_once():
    _, lab = section()
    maps = [spatial_split(lab[0], patch_size=P, folds=3, fold=f, seed=2) for f in range(3)]
    tests = np.stack([m.region("test") for m in maps])
    assert not (tests.sum(0) > 1).any()  # each pixel is test in at most one fold
    assert all(m.to_dict()["folds"] == 3 and m.to_dict()["fold"] == f for f, m in enumerate(maps))
    with pytest.raises(ValueError, match="folds needs"):
        spatial_split(lab[0], patch_size=P, folds=2)


def test_one_painted_slice_defaults_to_blocks():
    assert default_split([4], 10)[0] == "blocks" and "z = 4" in default_split([4], 10)[1]
    assert default_split([1, 5, 9], 10) == ("slices", "")
    assert default_split(None, 1)[0] == "blocks"


def test_the_sampler_refuses_a_split_map_for_another_patch_size():
    img, lab = section()
    sm = spatial_split(lab[0], patch_size=P)
    with pytest.raises(ValueError, match="made for 16-px patches"):
        sample_splits(img, lab, split_map=sm, patch_size=24)


def test_pinholes_in_a_painted_rectangle_keep_inside_patches():
    """950 x 350 px painted, vessel lumens (0.4 % pinholes) left out: still inside patches."""
    rng = np.random.default_rng(0)
    lab = np.zeros((1, 760, 1100), np.uint8)
    lab[0, 100:450, 100:1050] = 5
    lab[0, 100:450, 100:1050][rng.random((350, 950)) < 0.004] = 0
    lab[0, 600:660, 100:1000] = 1  # a 60-px wide stroke of another class
    img = rng.integers(0, 256, lab.shape, dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps = sample_patches(img, lab, slices=0, patch_size=128, per_class=40, interior="auto")
    assert ps.centred == (1,)  # the stroke is centred, WM keeps the paper's rule
    for label, (_, y, x) in zip(ps.labels, ps.centres, strict=True):
        if label == 5:
            win = lab[0, y - 64 : y + 64, x - 64 : x + 64]
            assert set(np.unique(win)) <= {0, 5} and (win == 5).mean() >= 0.99
    msg = str(caught[0].message)
    assert "'Ctx' (id 1, 54000 px)" in msg and "brush" not in msg
    assert "at best 47% of a 128x128 window is painted with it (99% needed)" in msg
    assert "widest fully painted square is 60 px" in msg
    strict = sample_patches(img, lab, slices=0, patch_size=128, per_class=5, min_painted=1.0,
                            interior="auto")  # fmt: skip
    assert strict.centred == (1, 5)  # the old all-pixels rule demotes the pinholed area


def test_usable_paint_loses_the_corner_a_diagonal_neighbour_guards():
    """A window centred in a block's corner reaches its diagonal neighbour's guard band."""
    from napari_brainfeatures.train.regions import _usable_counts

    lab = np.zeros((10, 10), np.uint8)
    lab[7:, 7:] = 1  # paint in the bottom-right corner only
    got = _usable_counts(lab, [(0, 10, 0, 10)], 3)[0, :, 0]
    assert got[0] == 9 and got[16] == 9  # no other split around; the top-left corner differs
    assert got[128] == 0 and got[2] == 0 and got[2 | 128] == 0  # bottom-right corner, bottom side
    full = _usable_counts(np.ones((10, 10), np.uint8), [(0, 10, 0, 10)], 3)[0, :, 0]
    assert full[16 | 32 | 64 | 128] == 100 - 4 * 9
    wide = _usable_counts(np.ones((10, 10), np.uint8), [(0, 10, 0, 10)], 6)[0, :, 0]
    assert wide[16 | 32 | 64 | 128] == 0 and wide[16 | 128] == 100 - 2 * 36 + 4  # overlaps once


def test_blocks_give_training_every_class_on_a_v3_section():
    """Paint in block corners next to another split counted as usable left a class untrained.

    On this v3 section (coarse paint, 64 px patches) the training region held no
    VP window before the corners were counted; a user with one scan got an error.
    """
    from scipy import ndimage

    from napari_brainfeatures.synthetic import make_microct_lazy
    from napari_brainfeatures.train.windows import patch_centres, within_mask

    ct = make_microct_lazy((1, 1024, 768), seed=4, version=3, chunks=(1, 1024, 768))
    areas, p = np.asarray(ct.areas[0]), 64
    lab = np.zeros_like(areas)
    for c in np.unique(areas[areas > 0]):
        lab[ndimage.binary_erosion(areas == c, iterations=p // 3)] = c
    sm = spatial_split(lab, patch_size=p)
    fits = within_mask(sm.region("train"), p)
    centre = np.zeros(lab.shape, bool)
    centre[p // 2 : p // 2 + fits.shape[0], p // 2 : p // 2 + fits.shape[1]] = fits
    centre &= patch_centres(lab.shape, p)
    assert set(np.unique(lab[centre])) - {0} == set(np.unique(lab)) - {0}


def test_patch_centres_keep_the_image_edge_and_the_tissue_rule():
    from napari_brainfeatures.train.plan import split_centres
    from napari_brainfeatures.train.windows import patch_centres

    ok = patch_centres((40, 50), 8)
    assert ok[4:37, 4:47].all() and ok.sum() == 33 * 43  # a window of 8 around (y, x): y-4..y+3
    tissue = np.zeros((40, 50), np.uint8)
    tissue[:, :20] = 1  # tissue on the left 20 columns
    half = patch_centres((40, 50), 8, tissue=tissue, min_tissue=0.5)
    assert half[10, 20] and not half[10, 21]  # 4 of a window's 8 columns in tissue, then 3
    assert split_centres((40, 50), 8, 0, tissue[None], 0.5).tolist() == half.tolist()
    assert (patch_centres((40, 50), 8, tissue=np.zeros((40, 50))) == ok).all()  # never computed
    with pytest.raises(ValueError, match="tissue mask shape"):
        patch_centres((40, 50), 8, tissue=tissue[:, :10])


def test_a_region_without_room_for_a_class_says_how_to_split_instead():
    img, lab = section()
    region = np.zeros(lab.shape[1:], bool)
    region[:60, :100] = True  # class 1 only
    with pytest.raises(ValueError, match=r"\['HypoTh', 'VP'\].*draw the split regions yourself"):
        sample_patches(img, lab, slices=0, patch_size=P, per_class=5, interior=False,
                       within=region, classes=[1, 2, 4])  # fmt: skip
