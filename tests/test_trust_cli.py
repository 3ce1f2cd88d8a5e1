"""Every numeric option is range-checked at the boundary: exit 2, the value quoted (#23)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_brainfeatures.cli import main
from napari_brainfeatures.io.convert import convert_to_ome_zarr, max_levels
from napari_brainfeatures.progress import run

# Each subcommand line (the option goes after it, or replaces its value where the line has
# it) with its bad "option value"s; the inputs need not exist: the value is refused before
# anything is opened
REFUSED = {
    "sample microct {o}": ["--seed -1", f"--seed {10**30}"],
    "sample microct {o} --shape 4 64": ["--shape 0"],
    "sample population {o}": ["--n 0"],
    "sample population {o} --section-shape 32": ["--section-shape -5"],
    "convert in.tif {o}": ["--levels 0"],
    "convert in.tif {o} --chunks 4 4": ["--chunks 0"],
    "convert in.tif {o} --voxel-size 1 1": ["--voxel-size nan"],
    "features m.safetensors in.tif --out {o}": [
        f"--stride {10**30}", "--workers 0", "--memory-mb inf"
    ],
    "factors s.zarr --out {o}": ["--seed -1", f"--max-iter {10**30}", "--tol nan"],
    "cluster s.zarr --out {o}": [f"--max-fit {10**30}"],
    "train-vae p.zarr --out {o}": [
        "--n-down 0", "--lr 1e30", "--kl-warmup nan", "--batch-size abc"
    ],
    "latent v.safetensors p.zarr --out {o}": ["--step 0", "--c-max -1", "--n-images 0"],
    "train-cnn in.tif --out {o}": [
        "--patch-size 0", f"--epochs {10**30}", "--lr nan", "--patience -1", "--per-class 1.5",
        f"--train-slice {10**30}", "--guard -1", "--folds 2", "--threads 0", "--seed -1",
    ],
    "evaluate m.safetensors in.tif --json {o}": [
        "--batch-size 0", "--predict-stride inf", "--per-class 0"
    ],
    "analyse m.safetensors in.tif --out {o}": [
        "--sigmas nan", f"--random-seed {2**32}", "--test-slice x"
    ],
}  # fmt: skip
# (subcommand line, option, a bad value)
BAD = [(line.split(), *bad.split()) for line, bads in REFUSED.items() for bad in bads]


@pytest.mark.parametrize(
    ("line", "flag", "value"), BAD, ids=[f"{b[0][0]}{b[1]}={b[2]}" for b in BAD]
)
def test_out_of_range_option_exits_2_quoting_it(tmp_path, capsys, line, flag, value):
    out = tmp_path / "out"
    argv = [a.replace("{o}", str(out)) for a in line]
    i = argv.index(flag) + 1 if flag in argv else len(argv)
    argv = [*argv[:i], *([] if flag in argv else [flag]), value, *argv[i:]]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


# Options the core checks, with its own messages (regular expressions): exit 2, the
# message, before any input is read (none exists here)
CORE_REFUSED = {
    "factors feat.zarr --k 2 --out {o}": [
        ("--lam -1", r"--lam must be >= 0, got -1\.0"),
        ("--eps 1.5", r"--eps must be in \[0, 1\), got 1\.5"),
        ("--k 0", "--k must be an integer >= 1, got 0"),
        ("--max-iter 0", "--max-iter must be an integer >= 1, got 0"),
        ("--tol -1", "--tol must be a number >= 0"),
    ],
    "features m.safetensors img.zarr --out {o}": [
        ("--tile 0", "tile must be a positive integer .*got 0"),
        ("--memory-mb 0", r"memory_mb must be a positive number .*got 0\.0"),
        ("--memory-mb -5", r"memory_mb must be a positive number .*got -5\.0"),
        ("--stride 0", "stride must be a positive integer, got 0"),
        ("--which features,logits", "which must be a non-empty subset .*'logits'"),
    ],
}
CORE = [(line, *case) for line, cases in CORE_REFUSED.items() for case in cases]


@pytest.mark.parametrize(
    ("line", "options", "message"), CORE, ids=[f"{c[0].split()[0]} {c[1]}" for c in CORE]
)
def test_option_refused_by_the_core_exits_2_with_its_message(
    tmp_path, capsys, line, options, message
):
    out = tmp_path / "out"
    argv = [a.replace("{o}", str(out)) for a in line.split()] + options.split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(f"brainfeatures {argv[0]}: error: {message}", err), err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_convert_refuses_levels_beyond_the_volume(tiff_stack, tmp_path, capsys):
    out = tmp_path / "o.ome.zarr"
    top = max_levels((6, 40, 50))
    assert top == 6  # 40 -> 20 -> 10 -> 5 -> 2 -> 1 (the fixture is 6 x 40 x 50)
    with pytest.raises(
        ValueError,
        match=r"levels must be an integer in 1\.\.6 \(for this volume of Y, X \(40, 50\).* got 50",
    ):
        run(convert_to_ome_zarr(tiff_stack, out, levels=50))
    assert main(["convert", str(tiff_stack), str(out), "--levels", "50"]) == 2
    assert "got 50" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]


@pytest.mark.parametrize("voxel", [("0", "1", "1"), ("-1", "1", "1"), ("1e30", "1", "1")])
def test_convert_refuses_a_bad_voxel_size(tiff_stack, tmp_path, capsys, voxel):
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(tiff_stack), str(out), "--voxel-size", *voxel])
    assert exit_.value.code == 2 and f"got {voxel[0]!r}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="voxel"):
        run(convert_to_ome_zarr(tiff_stack, out, voxel_size=tuple(map(float, voxel))))
    assert not out.exists()


def test_api_refuses_what_the_cli_refuses(tiff_stack, tmp_path):
    from napari_brainfeatures._cli.sample import write_population

    with pytest.raises(ValueError, match=r"chunks must be an integer in 1\.\.65536 \(px\), got 0"):
        run(convert_to_ome_zarr(tiff_stack, tmp_path / "o.zarr", chunks=(0, 16, 16)))
    with pytest.raises(ValueError, match=r"n must be an integer in 1\.\.100000, got 0"):
        write_population(tmp_path / "p.zarr", n=0, shape=(32, 32), seed=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        write_population(tmp_path / "p.zarr", n=2, shape=(32, 32), seed=-1)
    assert not list(tmp_path.glob("*.zarr"))


def test_bounded_number():
    from napari_brainfeatures._util.ranges import Bounded

    lr = Bounded("float", 0, 10, open_lo=True)
    assert lr("0.5") == 0.5 and lr.check("lr", np.float32(2)) == 2.0
    for bad in ("0", "nan", "inf", "11", "x", True):
        with pytest.raises(ValueError, match="lr must be a number > 0 and <= 10"):
            lr.check("lr", bad)
    k = Bounded("int", 1, 64)
    assert k("3") == 3 and k.check("k", np.int64(4)) == 4 and k.check("k", 5.0) == 5
    for bad in ("1.5", "0", 2.5, None):
        with pytest.raises(ValueError, match="k must be an integer in 1..64"):
            k.check("k", bad)


@pytest.mark.parametrize("value", ["-1", "1e30", "abc"])
def test_demo_seed_is_checked_before_anything_runs(value, tmp_path, capsys):
    from napari_brainfeatures import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--headless", str(tmp_path / "out"), "--seed", value])
    assert exit_.value.code == 2 and f"got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
