"""Hidden temporaries of a killed writer are cleaned on the next write, never read (#23)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import tiny_cnn
from napari_brainfeatures._util.leftovers import (
    IDLE_S,
    clean_leftovers,
    is_leftover,
    leftover_of,
    temp_path,
)
from napari_brainfeatures._util.overwrite import check_target, swap_in
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.cnn import save_cnn


@pytest.fixture(scope="module")
def dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def _leftover(path, *, age_s=0.0, inner=None):
    """A folder like a killed writer's (holding ``inner``), last touched ``age_s`` ago."""
    path.mkdir()
    if inner:
        (path / inner).mkdir()
        (path / inner / "zarr.json").write_text("{}")
    when = time.time() - age_s
    for p in [*path.rglob("*"), path]:
        os.utime(p, (when, when))
    return path


def test_names(tmp_path):
    assert leftover_of(".saved.zarr.partial-123") == ("saved.zarr", "partial", 123)
    assert leftover_of(".saved.zarr.old-9-ab12") == ("saved.zarr", "old", 9)
    assert leftover_of(".saved.zarr.k3j_h2x9") == ("saved.zarr", "random", None)
    assert leftover_of(".labels.json.ab12cd34.tmp") == ("labels.json", "random", None)
    for mine in ("saved.zarr", ".git", ".saved.zarr.notes", ".a.partial-x"):
        assert leftover_of(mine) is None
    t = temp_path(tmp_path / "x.zarr", "partial")
    assert leftover_of(t)[:3] == ("x.zarr", "partial", os.getpid()) and not t.exists()
    assert is_leftover(tmp_path / ".s.zarr.k3j4h2x9" / "s.zarr" / "0")
    assert not is_leftover(tmp_path / "s.zarr" / "0")


def test_a_write_removes_the_leftovers_of_dead_writers_only(tmp_path, dead_pid):
    target = tmp_path / "saved.zarr"
    dead = _leftover(tmp_path / f".saved.zarr.partial-{dead_pid}", inner="0")
    dead_new = _leftover(tmp_path / f".saved.zarr.tmp-{dead_pid}-a1b2c3")
    alive = _leftover(tmp_path / f".saved.zarr.partial-{os.getppid()}")  # still writing
    stale = _leftover(tmp_path / ".saved.zarr.k3j_h2x9", age_s=IDLE_S + 60, inner="saved.zarr")
    recent = _leftover(tmp_path / ".saved.zarr.q8w7e6r5", age_s=5, inner="saved.zarr")
    foreign = _leftover(tmp_path / ".saved.zarr.abcd1234", age_s=IDLE_S + 60, inner="notes")
    other = _leftover(tmp_path / f".other.zarr.partial-{dead_pid}")
    check_target(target, overwrite=False)  # the start of a write to saved.zarr
    assert not dead.exists() and not dead_new.exists() and not stale.exists()
    assert alive.exists() and recent.exists()  # may be in use
    assert foreign.exists() and other.exists()  # not ours, or not this target's


def test_refused_write_cleans_nothing(tmp_path, dead_pid):
    (tmp_path / "saved.zarr").mkdir()
    (tmp_path / "saved.zarr" / "zarr.json").write_text("{}")
    dead = _leftover(tmp_path / f".saved.zarr.partial-{dead_pid}")
    with pytest.raises(FileExistsError):
        check_target(tmp_path / "saved.zarr", overwrite=False)
    assert dead.exists()


def test_a_swap_killed_between_its_renames_is_undone(tmp_path, dead_pid):
    target = tmp_path / "r.zarr"
    old = _leftover(tmp_path / f".r.zarr.old-{dead_pid}", inner="0")
    assert clean_leftovers(target) == [old]
    assert (target / "0" / "zarr.json").exists() and not old.exists()  # put back
    new = tmp_path / "new"
    (new / "1").mkdir(parents=True)
    swap_in(new, target)
    assert (target / "1").exists() and [p.name for p in tmp_path.iterdir()] == ["r.zarr"]


def test_model_save_cleans_its_killed_saves(tmp_path, dead_pid):
    killed = tmp_path / f".m.safetensors.tmp-{dead_pid}-00aa11"
    killed.write_bytes(b"half a model")
    path = save_cnn(tmp_path / "m", tiny_cnn(), classes=ClassTable.from_names(list("abc")))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_convert_again_after_a_killed_convert(tiff_stack, tmp_path, dead_pid):
    from napari_brainfeatures.io.convert import convert_to_ome_zarr
    from napari_brainfeatures.progress import run

    target = tmp_path / "o.ome.zarr"
    run(convert_to_ome_zarr(tiff_stack, target, levels=1))
    killed = _leftover(tmp_path / f".o.ome.zarr.partial-{dead_pid}-abc123", inner="0")
    run(convert_to_ome_zarr(tiff_stack, target, levels=1, overwrite=True))
    assert not killed.exists() and [p.name for p in tmp_path.iterdir() if p.name[0] == "."] == []


def test_factors_results_clean_leftovers(tmp_path, dead_pid):
    from napari_brainfeatures.factors.results import _write_group

    killed = _leftover(tmp_path / f".f.zarr.tmp-{dead_pid}", inner="maps")
    _write_group(tmp_path / "f.zarr", {"a": np.zeros((2, 2))}, {}, [])
    assert not killed.exists() and (tmp_path / "f.zarr").is_dir()
