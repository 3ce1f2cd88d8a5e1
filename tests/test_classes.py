import pytest

from napari_brainfeatures.classes import AreaClass, ClassTable, default_table, prasad2020_table


def test_default_table_is_the_papers_six_areas_alphabetical():
    t = default_table()
    assert t.names == ["Ctx", "HypoTh", "Str", "VP", "WM", "ZI"]
    assert t.ids == [1, 2, 3, 4, 5, 6]


def test_prasad_ids():
    t = prasad2020_table()
    assert t.by_id(4).name == "VP" and t.by_id(6).name == "IC" and len(t) == 8


def test_edit_and_json_round_trip():
    t = default_table().add("CA1").rename(2, "Hyp").recolour(3, "#123456").remove(6)
    assert ClassTable.from_json(t.to_json()) == t
    assert t.by_name("CA1").id == 7
    assert t.color_dict()[0][3] == 0.0
    assert default_table().by_id(2).long_name and not t.by_id(2).long_name  # renamed: no stale
    assert default_table().rename(1, "SSp", "primary somatosensory").by_id(1).long_name == (
        "primary somatosensory"
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"id": 0, "name": "a", "colour": "#000000"}, "class id"),
        ({"id": 1, "name": " ", "colour": "#000000"}, "name"),
        ({"id": 1, "name": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_class(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AreaClass(**kwargs)


def test_duplicates_refused():
    with pytest.raises(ValueError, match="unique"):
        default_table().add("Ctx")
    with pytest.raises(ValueError, match="classes"):
        ClassTable.from_dict({"nope": []})


def test_a_class_colour_too_light_for_a_white_plot_is_darkened():
    from napari_brainfeatures.classes import on_white

    r, g, b, _ = on_white("#f0f0f0")  # white matter in tables of earlier versions
    assert 0.299 * r + 0.587 * g + 0.114 * b == pytest.approx(0.7)
    assert on_white("#e6194b") == pytest.approx((0xE6 / 255, 0x19 / 255, 0x4B / 255, 1.0))
