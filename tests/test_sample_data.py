import numpy as np
import pytest
import zarr

from napari_brainfeatures._napari import sample_data as _sample_data
from napari_brainfeatures.cli import main
from napari_brainfeatures.io.volume import open_volume
from napari_brainfeatures.progress import run


@pytest.fixture
def small_microct(monkeypatch):
    monkeypatch.setattr(_sample_data, "MICROCT_SHAPE", (4, 160, 192))
    return run(_sample_data.ensure_microct((4, 160, 192)))


def test_microct_sample_is_cached_and_lazy(small_microct):
    path = small_microct
    assert path.exists() and not list(path.parent.glob(".*partial*"))
    again = run(_sample_data.ensure_microct((4, 160, 192)))  # no regeneration
    assert again == path
    layers = _sample_data.microct_layers(path)
    (img, img_kw, kind), (areas, areas_kw, kind2), (_lay, _kw, kind3) = layers
    assert (kind, kind2, kind3) == ("image", "labels", "labels")
    assert img.shape == areas.shape == (4, 160, 192) and img.dtype == np.uint8
    assert img_kw["scale"] == pytest.approx((1.17, 1.17, 1.17))
    assert set(np.unique(np.asarray(areas[2]))) - {0} <= set(range(1, 7))
    assert areas_kw["colormap"][1][3] == 1.0  # class colours
    assert open_volume(path).name == "image"  # the reader opens the cache too


def test_sample_microct_in_viewer(make_napari_viewer, small_microct):
    viewer = make_napari_viewer()
    for data, kwargs, kind in _sample_data.sample_microct():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    assert [lay.name for lay in viewer.layers] == [
        "micro-CT (synthetic)",
        "areas (truth)",
        "cortical layers (truth)",
    ]


def test_cli_sample_microct_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "ct.zarr"
    assert (
        main(
            ["sample", "microct", str(out), "--shape", "2", "64", "64", "--chunks", "2", "32", "32"]
        )
        == 0
    )
    assert open_volume(out).shape == (2, 64, 64)
    assert main(["sample", "microct", str(out), "--shape", "2", "64", "64"]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["microct", "population"])
def test_cli_sample_overwrite_replaces_only_a_zarr_store(tmp_path, capsys, kind):
    small = "--shape 2 64 64 --chunks 2 64 64 --n 4 --section-shape 32 32".split()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    for out in (victim, victim / "notes.txt"):
        assert main(["sample", kind, str(out), "--overwrite", *small]) == 2
        assert "never deleted" in capsys.readouterr().err
    assert [p.name for p in victim.iterdir()] == ["notes.txt"]
    store = tmp_path / "s.zarr"
    assert main(["sample", kind, str(store), *small]) == 0
    assert main(["sample", kind, str(store), "--overwrite", "--seed", "1", *small]) == 0
    assert zarr.open_group(store, mode="r").attrs["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "victim"]


def test_demo_viewer_docks_every_widget(small_microct, make_napari_viewer):
    from npe2 import PluginManager

    from napari_brainfeatures._cli.demo import open_demo_viewer

    # The fixture's viewer: closed, checked for leaks and its status thread kept off.
    viewer = make_napari_viewer()
    assert open_demo_viewer(viewer=viewer) is viewer
    manifest = PluginManager.instance().get_manifest("napari-brainfeatures")
    names = {c.display_name for c in manifest.contributions.widgets}
    docked = set(viewer.window.dock_widgets)
    assert all(any(n in d for d in docked) for n in names), docked
    assert viewer.layers[0].name == "micro-CT (synthetic)"


def test_demo_without_a_display_says_so(monkeypatch, capsys):
    from napari_brainfeatures._cli import demo

    monkeypatch.setattr(demo.sys, "platform", "linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert main(["demo"]) == 2  # a message, not Qt aborting the process
    err = capsys.readouterr().err
    assert "no display" in err and "--headless" in err
    monkeypatch.setenv("DISPLAY", ":99")
    assert demo.display_problem() is None
