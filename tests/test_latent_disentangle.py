"""The mutual information gap against codes whose answer is known."""

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from napari_brainfeatures.latent.disentangle import discretize, impact_scores, mutual_info_gap


@pytest.fixture
def factors():
    return np.random.default_rng(0).normal(size=(1000, 4))  # independent, as the population's


def test_perfect_code_scores_near_one_whatever_the_scale_and_order(factors):
    # each factor read off one latent, rescaled monotonically, latents permuted, one unused
    codes = np.c_[np.exp(factors[:, 2]), 3 * factors[:, 0], np.zeros(1000), factors[:, [3, 1]]]
    res = mutual_info_gap(codes, factors, factor_names=list("abcd"))
    assert res["mig"] > 0.9  # the plug-in bias keeps it a little under 1 at N = 1000
    assert res["best_latent"] == {"a": 1, "b": 4, "c": 0, "d": 3}
    assert res["mi"].shape == (5, 4) and res["n_factors"] == 4


def test_a_rotated_perfect_code_scores_low(factors):
    for seed in (1, 2, 3):
        rotation = special_ortho_group.rvs(4, random_state=seed)
        assert mutual_info_gap(factors @ rotation, factors)["mig"] < 0.35


def test_a_factor_copied_into_two_latents_has_no_gap(factors):
    res = mutual_info_gap(np.c_[factors, factors[:, 0]], factors)
    assert res["gaps"]["factor 0"] == pytest.approx(0.0, abs=1e-12)
    assert min(res["gaps"][f"factor {k}"] for k in (1, 2, 3)) > 0.9
    assert res["mig"] == pytest.approx(np.mean(list(res["gaps"].values())))


def test_codes_that_ignore_the_factors_score_about_zero(factors):
    noise = np.random.default_rng(5).normal(size=(1000, 4))
    assert mutual_info_gap(noise, factors)["mig"] < 0.03


def test_unused_latents_do_not_move_the_score(factors):
    base = mutual_info_gap(factors, factors)["mig"]
    dead = np.random.default_rng(1).normal(scale=1e-4, size=(1000, 3))  # collapsed latents
    assert mutual_info_gap(np.c_[factors, dead], factors)["mig"] == pytest.approx(base, abs=0.03)


def test_constant_factors_are_left_out_and_all_constant_is_refused(factors):
    with_const = np.c_[factors, np.ones(1000)]
    res = mutual_info_gap(factors, with_const)
    assert res["n_factors"] == 4 and "factor 4" not in res["gaps"]
    with pytest.raises(ValueError, match="no factor varies"):
        mutual_info_gap(factors, np.ones((1000, 2)))


def test_discretize_equal_frequency_and_ties():
    x = np.c_[np.arange(100.0), np.zeros(100), np.repeat([0.0, 1.0], 50)]
    d = discretize(x, bins=10)
    assert np.bincount(d[:, 0]).tolist() == [10] * 10
    assert len(set(d[:, 1])) == 1  # a constant column is one bin
    assert len(set(d[:, 2])) == 2  # two levels stay two


@pytest.mark.parametrize(
    ("codes", "factors", "kw", "match"),
    [
        (np.zeros((5, 2)), np.zeros((4, 2)), {}, "share N"),
        (np.zeros((2, 2)), np.zeros((2, 2)), {}, "N >= 3"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, "NaN"),
        (np.zeros((5, 2)), np.arange(10.0).reshape(5, 2), {"bins": 1}, "bins"),
        (np.zeros((5, 2)), np.arange(10.0).reshape(5, 2), {"factor_names": ["a"]}, "1 factor"),
    ],
)
def test_bad_input_is_refused(codes, factors, kw, match):
    with pytest.raises(ValueError, match=match):
        mutual_info_gap(codes, factors, **kw)


def test_impact_scores_over_all_and_active_latents():
    impact = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2]])  # latent 2: spurious impact, unused
    res = impact_scores(impact, np.array([True, True, False]))
    assert res["disentanglement_active"] == float("inf")  # the two used latents: one ROI each
    assert res["disentanglement"] < 10 and res["active"] == 2
    for one_or_none in ([False] * 3, [True, False, False]):  # no off-diagonal: no score
        assert impact_scores(impact, np.array(one_or_none))["disentanglement_active"] is None
    assert set(impact_scores(impact)) == {"disentanglement"}
    with pytest.raises(ValueError, match="one entry per latent"):
        impact_scores(impact, np.ones(2, bool))
