"""The core must import without napari or Qt (house style, rule 1)."""

import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import napari_brainfeatures
from napari_brainfeatures._util.aliases import OLD_NAMES

STAGES = ("io", "train", "features", "factors", "analyse", "latent")

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(napari_brainfeatures.__path__, "napari_brainfeatures.")
    if "._widgets" not in m.name and not m.name.endswith("._cli.demo")
)


def test_core_modules_exist():
    assert "napari_brainfeatures.cli" in CORE
    assert "napari_brainfeatures.models.cnn" in CORE


def test_core_imports_without_napari_or_qt():
    blocked = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui")
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib
for m in {CORE!r}:
    importlib.import_module(m)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_package_init_imports_no_widget_and_no_napari():
    code = (
        "import sys, napari_brainfeatures, napari_brainfeatures.cli;"
        "bad=[m for m in sys.modules if m.startswith(('napari.', 'napari_brainfeatures._widgets'))"
        " or m in ('napari', 'qtpy', 'torch')];"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_export_resolves(stage):
    mod = importlib.import_module(f"napari_brainfeatures.{stage}")
    assert mod.__all__, stage
    # import every submodule first: a submodule named like an export would shadow it
    for sub in pkgutil.iter_modules(mod.__path__, f"{mod.__name__}."):
        importlib.import_module(sub.name)
    for name in mod.__all__:
        obj = getattr(mod, name)
        assert obj is not None, f"{stage}.{name}"
        assert not isinstance(obj, types.ModuleType), f"{stage}.{name} is shadowed by a submodule"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mod.nope  # noqa: B018


def test_top_level_reads_as_the_pipeline():
    root = Path(napari_brainfeatures.__path__[0])
    entries = [p.name for p in root.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 22, sorted(entries)
    for stage in STAGES:
        assert stage in entries


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_module_paths_import_with_a_warning(old):
    new = importlib.import_module(f"napari_brainfeatures.{OLD_NAMES[old]}")
    sys.modules.pop(f"napari_brainfeatures.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"napari_brainfeatures.{old} moved"):
        mod = importlib.import_module(f"napari_brainfeatures.{old}")
    assert mod is new
    assert mod.__spec__.name == new.__name__  # the module keeps its own spec
    assert sys.modules[f"napari_brainfeatures.{old}"] is new


def test_documented_old_imports_keep_working():
    for old in ("dense", "training"):
        sys.modules.pop(f"napari_brainfeatures.{old}", None)
    with pytest.warns(DeprecationWarning):
        from napari_brainfeatures.dense import compute_feature_map
        from napari_brainfeatures.training import train_cnn
    from napari_brainfeatures.features import compute_feature_map as new_cfm
    from napari_brainfeatures.train import train_cnn as new_train

    assert compute_feature_map is new_cfm and train_cnn is new_train
