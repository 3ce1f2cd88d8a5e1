"""The core must import without napari or Qt (house style, rule 1)."""

import pkgutil
import subprocess
import sys

import napari_brainfeatures

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(napari_brainfeatures.__path__, "napari_brainfeatures.")
    if "._widgets" not in m.name
    and not m.name.endswith(("._reader", "._writer", "._sample_data", "._cli.demo"))
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
