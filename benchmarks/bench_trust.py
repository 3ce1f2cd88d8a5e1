"""Trust (#23): hostile files refused cleanly, every argument checked, no stroke lost.

``header_fuzz_cases``: mutated model headers (JSON types, missing and extra keys,
out-of-range and huge config values, tensor tables that do not fit, truncated bytes,
pickle/eval payloads) of a CNN, a VAE and a PCA file, each loaded by every loader;
``store_fuzz_cases``: a feature store and a labels store with missing chunks, wrong
dtypes, corrupt ``zarr.json``, run through the CLI.  ``tracebacks``: cases ending in
anything but a ``ModelFileError`` (models) or a clean CLI exit (stores);
``code_executed``: 1 if a payload's sentinel file appeared.  ``cli_bad_args``: every
numeric option (read from the parsers) of the ``OWNED`` subcommands given 0 (unless
``ZERO_OK``), -1, 1e30, nan, inf, a word, in a worker process (20 s, 8 GB a case);
``unchecked`` = accepted, traceback or timeout, ``unquoted`` = refused without quoting
the value, ``wrote_something`` = left a file; other subcommands' numeric options are
listed as ``not_checked_yet``.  ``concurrent_strokes_lost``: two processes paint 400
pixels each into one chunk (``tests/test_workspace_concurrency.py``'s writer, one
``Workspace.open(wait=30)`` per stroke); strokes reported written but not stored.
``--quick``: the same (45 s, 2 cores).  ``BENCH_TRUST_EXAMPLES=N``: list N failures.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import selectors
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OWNED = ("sample", "info", "convert", "features", "factors", "cluster", "train-vae", "latent",
         "train-cnn", "evaluate", "analyse")  # fmt: skip
EXAMPLES = int(os.environ.get("BENCH_TRUST_EXAMPLES", "12"))
ZERO_OK = {"--tol", "--z-range", "--seed", "--z", "--erode", "--smooth", "--lam", "--eps",
           "--kl-warmup", "--section", "--patience", "--guard", "--slice", "--train-slice",
           "--val-slice", "--test-slice", "--split-slice", "--sigmas", "--random-seed",
           "--min-context", "--rotate", "--gradient", "--local-contrast",
           "--min-tissue"}  # fmt: skip  # 0: that augmentation (or the tissue rule) off


def fixtures(d: Path) -> dict[str, Path]:
    """A tiny CNN, image, feature store, labels, population and VAE under ``d``."""
    import tifffile
    import torch
    import zarr

    from napari_brainfeatures._cli.sample import write_population
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.latent.model import fit_latent_model
    from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, save_cnn
    from napari_brainfeatures.progress import run as run_gen

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = CNNConfig(patch_size=32, channels=(4, 8, 8), kernels=(5, 3, 3), paddings=(0, 0, 0),
                    fc=(16, 8), n_classes=3)  # fmt: skip
    f = {"cnn": save_cnn(d / "cnn", BrainAreaCNN(cfg), classes=ClassTable.from_names("abc"))}
    image = (np.random.default_rng(0).random((3, 72, 150)) * 200).astype(np.uint8)  # train-cnn:
    tifffile.imwrite(d / "image.tif", image)  # three slices for its 64 px patches
    f["image"] = d / "image.tif"
    labels = np.zeros(image.shape, np.uint8)
    labels[:, :, :75], labels[:, :, 75:] = 1, 2
    zarr.create_array(str(d / "labels.zarr"), data=labels, chunks=(1, 36, 75))
    f["labels"], f["store"] = d / "labels.zarr", d / "feat.zarr"
    run_gen(compute_feature_map(image[:1], f["cnn"], out=f["store"], stride=2, tile=8))
    f["pop"] = write_population(d / "pop.zarr", n=12, shape=(32, 32), seed=0)
    f["vae"] = d / "vae.safetensors"
    images = zarr.open_group(str(f["pop"]), mode="r")["images"][:]
    run_gen(fit_latent_model(images, latent_dim=2, n_down=2, channels=4, epochs=1, batch_size=4,
                             checkpoint_path=f["vae"], device="cpu"))  # fmt: skip
    f["pca"] = d / "pca.safetensors"
    run_gen(fit_latent_model(images, kind="pca", latent_dim=2, checkpoint_path=f["pca"]))
    return f


BAD_VALUES = [None, "x", -1, 0, 10**12, 2**70, 1e300, float("nan"), [], {}, True, 1.5, [-1]]


def _split(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _pack(header: object, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def header_cases(path: Path, sentinel: Path) -> list[tuple[str, bytes]]:
    """Mutations of the model file ``path``: (name, file bytes)."""
    raw, body = _split(path)
    md = raw["__metadata__"]
    cases: list[tuple[str, bytes]] = []

    def with_md(name: str, **changes: object) -> None:
        h = copy.deepcopy(raw)
        h["__metadata__"] = {k: v for k, v in {**md, **changes}.items() if v is not ...}
        cases.append((name, _pack(h, body)))

    for v in (["x"], "x", 3, None):
        cases.append((f"top={v!r}", _pack(v, body)))
        h = copy.deepcopy(raw)
        h["__metadata__"] = v
        cases.append((f"metadata={v!r}", _pack(h, body)))
    for key in ("format", "kind", "config", "meta"):
        with_md(f"{key} missing", **{key: ...})
        for v in (3, None, ["a"], {"a": 1}, "", "{", "[1]", '"s"', "1e999", "[" * 50000):
            with_md(f"{key}={str(v)[:12]!r}", **{key: v})
    config = json.loads(md["config"])
    for key in [*config, "bogus"]:
        for v in BAD_VALUES:
            c = {**config, key: v}
            with_md(f"config.{key}={v!r}", config=json.dumps(c))
        with_md(f"config.{key} missing", config=json.dumps({k: x for k, x in config.items()
                                                          if k != key}))  # fmt: skip
    meta = json.loads(md["meta"])
    for v in ([1, 2], {"classes": "x"}, {"classes": [{"id": "a"}]}, "x", 7):
        with_md(f"meta.classes={v!r}", meta=json.dumps({**meta, "classes": v}))
    names = [k for k in raw if k != "__metadata__"]
    for change, value in (("dtype", "F64"), ("dtype", "XX"), ("dtype", 5), ("shape", [1]),
                          ("shape", "x"), ("data_offsets", [0, 10**15]),
                          ("data_offsets", [-4, 0]), ("data_offsets", "x")):  # fmt: skip
        h = copy.deepcopy(raw)
        h[names[0]][change] = value
        cases.append((f"tensor.{change}={value!r}", _pack(h, body)))
    for tensor_change in ("drop", "rename", "add"):
        h = copy.deepcopy(raw)
        entry = h.pop(names[0]) if tensor_change != "add" else h[names[0]]
        if tensor_change != "drop":
            h[names[0] + ".x"] = entry
        cases.append((f"tensor {tensor_change}", _pack(h, body)))
    full = _pack(raw, body)
    for cut in (0, 4, 8, 9, 40, len(full) - len(body) - 1, len(full) - len(body) + 3, -1):
        cases.append((f"truncated at {cut}", full[:cut]))
    cases.append(("length huge", (2**62).to_bytes(8, "little") + full[8:]))
    cases.append(("length zero", bytes(8) + full[8:]))

    evil = f"c__builtin__\nopen\n(S{str(sentinel)!r}\nS'w'\ntR.".encode()  # pickle: open(...)
    code = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    cases += [("pickle file", evil), ("pickle body", _pack(raw, evil + body[len(evil) :]))]
    with_md("config=eval", config=json.dumps({**config, "extra": {"__reduce__": code}}))
    with_md("meta=eval", meta=json.dumps({"classes": code, "__class__": code}))
    with_md("kind=eval", kind=code)
    with_md("config string code", config=code)
    return cases


def fuzz_headers(d: Path, f: dict[str, Path]) -> dict:
    from napari_brainfeatures.latent.model import load_latent_model
    from napari_brainfeatures.models.checkpoint import ModelFileError
    from napari_brainfeatures.models.cnn import load_cnn
    from napari_brainfeatures.models.vae import load_vae

    d.mkdir(parents=True, exist_ok=True)
    sentinel = d / "code-ran"
    loaders = (load_cnn, load_vae, load_latent_model)
    n, bad, examples = 0, 0, []
    for which in ("cnn", "vae", "pca"):
        for i, (name, data) in enumerate(header_cases(f[which], sentinel)):
            (path := d / f"{which}-{i}.safetensors").write_bytes(data)
            n += 1
            for load in loaders:
                try:
                    load(path)
                except ModelFileError:
                    continue
                except BaseException as err:  # noqa: BLE001 - what the count is about
                    bad += 1
                    examples.append(f"{which} {name}: {load.__name__} {type(err).__name__}")
                    break
    return {"cases": n, "tracebacks": bad, "code_executed": int(sentinel.exists()),
            "examples": examples[:8]}  # fmt: skip


def store_cases(d: Path, f: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """Damaged copies of the feature store and the labels store: (name, argv)."""
    cases = []
    for which, argv in (("store", ["cluster", "{p}", "--k", "2", "--out", "{o}"]),
                        ("labels", ["info", "{p}"])):  # fmt: skip
        src = f[which]
        metas = sorted(p for p in src.rglob("*") if p.name in ("zarr.json", ".zarray"))
        chunks = sorted(p for p in src.rglob("*") if p.is_file() and p not in metas
                        and p.name[0] not in ".z")  # fmt: skip
        edits: list[tuple[str, Path, str | None]] = [("missing chunk", chunks[0], None)]
        edits += [(f"{len(chunks)} chunks missing", c, None) for c in chunks[1:2]]
        for m in metas[:3]:
            text, rel = m.read_text(), m.relative_to(src)
            edits += [(f"{rel} {what}", m, bad) for what, bad in
                      (("corrupt", "{"), ("list", "[]"), ("empty", ""),
                       ("shape", text.replace("[", "[-5, ", 1)))]  # fmt: skip
            for old, new in (('"float32"', '"int8"'), ('"uint8"', '"float64"'), ("<f4", "|i1")):
                if old in text:
                    edits.append((f"{rel} dtype", m, text.replace(old, new)))
        for i, (name, target, content) in enumerate(edits):
            dst = d / f"{which}-{i}{src.suffix}"
            shutil.copytree(src, dst)
            for c in chunks if name.endswith("chunks missing") else [target]:
                hit = dst / c.relative_to(src)
                hit.unlink() if content is None else hit.write_text(content)
            cases.append((f"{which}: {name}", [a.format(p=dst, o=d / f"o-{i}") for a in argv]))
    return cases


WORKER = textwrap.dedent(
    """
    import contextlib, io, json, resource, sys, traceback
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    from napari_brainfeatures.cli import main
    for line in sys.stdin:
        argv, out, err = json.loads(line), io.StringIO(), io.StringIO()
        rc, exc = None, None
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:
            exc = type(e).__name__ + ": " + traceback.format_exc()[-300:]
        print(json.dumps({"rc": rc, "exc": exc, "err": err.getvalue()[-600:]}), flush=True)
    """
)


class Worker:
    """One Python process running ``cli.main`` on argv lists, restarted after a timeout."""

    def __init__(self, timeout: float = 20.0) -> None:
        self.timeout, self.proc = timeout, None

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip

    def __call__(self, argv: list[str]) -> dict:
        fresh = self.proc is None
        self.proc = self.proc or self._start()
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(self.timeout + 30 * fresh)  # a fresh worker imports first
        line = self.proc.stdout.readline() if ready else ""
        if not line:  # a timeout (accepted and working) or a crash: a fresh worker next
            self.close()
            return {"rc": None, "exc": "timeout" if not ready else "worker died", "err": ""}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.communicate()
        self.proc = None


def numeric_options(command: str) -> list[tuple[str, int, str]]:
    """``(flag, nargs, "int" | "float")`` of every numeric option of ``command``'s parser."""
    from napari_brainfeatures.cli import build_parser

    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    found = []
    for a in sub._actions:
        kind = getattr(a.type, "numeric", None) or {int: "int", float: "float"}.get(a.type)
        if kind and a.option_strings:
            found.append((a.option_strings[-1], a.nargs if isinstance(a.nargs, int) else 1, kind))
    return found


BASES = {  # valid command lines: {o} a fresh output folder, {name} the fixture file f[name]
    "sample": ["sample microct {o}/s.zarr --shape 4 64 64 --chunks 4 32 32",
               "sample population {o}/p.zarr --n 4"],
    "info": ["info {image}"],
    "convert": ["convert {image} {o}/c.ome.zarr --levels 1"],
    "features": ["features {cnn} {image} --out {o}/f.zarr --stride 4 --tile 8 --device cpu"],
    "factors": ["factors {store} --k 2 --out {o} --rois {labels} --device cpu"],
    "cluster": ["cluster {store} --k 2 --out {o} --mask {labels}"],
    "train-vae": ["train-vae {pop} --out {o}/v.safetensors --epochs 1 --n-down 2 --channels 4 "
                  "--latent 2 --batch-size 4 --device cpu"],
    "latent": ["latent {vae} {pop} --out {o} --what traversal receptive --n-images 4 --step 0.5"],
    "train-cnn": ["train-cnn {image} --labels {labels} --out {o}/m.safetensors --patch-size 64 "
                  "--train-slice 0 --val-slice 1 --test-slice 2 --per-class 4 --eval-per-class 2 "
                  "--epochs 1 --batch-size 4 --threads 1 --device cpu"],
    "evaluate": ["evaluate {cnn} {image} --labels {labels} --slice 1 --per-class 2 --batch-size 4 "
                 "--json {o}/e.json --device cpu"],
    "analyse": ["analyse {cnn} {image} --labels {labels} --train-slice 0 --test-slice 1 "
                "--per-class 6 --sigmas 0 0.1 --out {o}/a --device cpu"],
}  # fmt: skip


def bases(f: dict[str, Path]) -> dict[str, list[list[str]]]:
    """:data:`BASES` as argv lists (split at spaces first: paths are kept whole)."""
    names = {**{k: str(v) for k, v in f.items()}, "o": "{o}"}
    return {c: [[w.format_map(names) for w in t.split()] for t in ts] for c, ts in BASES.items()}


def _bad_values(flag: str, kind: str) -> list[str]:
    values = ["-1", "1e30" if kind == "float" else str(10**30), "nan", "abc"]
    values += ["inf"] if kind == "float" else ["1.5"]
    return values if flag in ZERO_OK else ["0", *values]


def _with(argv: list[str], flag: str, nargs: int, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        i = argv.index(flag)
        return argv[: i + 1] + [value] + argv[i + 2 :]
    return argv + [flag, value] + ["1"] * (nargs - 1) if nargs > 1 else argv + [flag, value]


def _quoted(value: str, err: str) -> bool:
    forms = {value}
    with contextlib.suppress(ValueError):
        x = float(value)
        forms |= {repr(x), f"{x:g}", str(int(x)) if math.isfinite(x) and x == int(x) else "nan"}
    return any(v in err for v in forms)


def _wrote(d: Path) -> bool:
    return d.exists() and any(d.rglob("*"))


def cli_bad_args(d: Path, f: dict[str, Path], worker: Worker) -> dict:
    from napari_brainfeatures.cli import COMMANDS

    inputs = f["image"].parent
    before = {p: p.stat().st_mtime_ns for p in inputs.rglob("*")}
    tried = unchecked = unquoted = wrote = 0
    examples, baseline_failed = [], []
    for command, argvs in bases(f).items():
        for j, base in enumerate(argvs):
            ok = worker([a.replace("{o}", str(d / f"base-{command}-{j}")) for a in base])
            if ok["rc"] != 0:
                baseline_failed.append(f"{command}: {ok['exc'] or ok['err'][-200:]}")
            present = {flag for flag, *_ in numeric_options(command) if flag in base}
            for flag, nargs, kind in numeric_options(command):
                if j and flag not in present:
                    continue  # options absent from a second base line were tried on the first
                for value in _bad_values(flag, kind):
                    case = d / f"case-{tried}"
                    argv = [a.replace("{o}", str(case)) for a in _with(base, flag, nargs, value)]
                    res, tried = worker(argv), tried + 1
                    bad = res["rc"] != 2 or res["exc"] is not None or "Traceback" in res["err"]
                    quiet = not bad and not _quoted(value, res["err"])
                    unchecked, unquoted = unchecked + bad, unquoted + quiet
                    wrote += _wrote(case)
                    if (bad or quiet or _wrote(case)) and len(examples) < EXAMPLES:
                        tail = (res["exc"] or res["err"])[-120:]
                        examples.append(f"{command} {flag} {value}: rc={res['rc']} {tail!r}")
    after = {p: p.stat().st_mtime_ns for p in inputs.rglob("*")}
    left = {c: o for c in COMMANDS if c not in OWNED if (o := [x for x, *_ in numeric_options(c)])}
    return {"tried": tried, "unchecked": unchecked, "unquoted": unquoted,
            "wrote_something": wrote + (before != after), "baseline_failed": baseline_failed,
            "examples": examples, "not_checked_yet": left}  # fmt: skip


def strokes_lost(d: Path, n: int = 400) -> int:
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))  # the writer imports the tests' helpers
    writer = ROOT / "tests/test_workspace_concurrency.py"
    spec = importlib.util.spec_from_file_location("ws", writer)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from napari_brainfeatures.workspace import Workspace

    d.mkdir(parents=True, exist_ok=True)
    root = d / "w.brainfeatures"
    Workspace.open(root, shape=mod.SHAPE).close()  # one chunk, 40 px wide as the writer paints
    outs = mod._run_two(d, mod.WRITER, [[str(root), str(w), str(n), "each", "30"] for w in (0, 1)])
    stored = np.asarray(Workspace.open(root, mode="r").labels(mode="r")[0]).ravel()
    idx = [(2 * np.asarray(o["written"], dtype=int) + w, w + 1) for w, o in enumerate(outs)]
    return sum(int((stored[i] != label).sum()) for i, label in idx)


def run(quick: bool, out: Path) -> dict:
    f = fixtures(out / "inputs")
    heads = fuzz_headers(out / "headers", f)
    worker = Worker()
    try:
        store_bad, store_examples, cases = 0, [], store_cases(out / "stores", f)
        for name, argv in cases:
            res = worker(argv)
            if res["exc"] is not None or "Traceback" in res["err"] or res["rc"] not in (0, 2):
                store_bad += 1
                store_examples.append(f"{name}: {(res['exc'] or res['err'])[-150:]!r}")
        cli = cli_bad_args(out / "cli", f, worker)
    finally:
        worker.close()
    return {"header_fuzz_cases": heads["cases"], "store_fuzz_cases": len(cases),
            "tracebacks": heads["tracebacks"] + store_bad, "code_executed": heads["code_executed"],
            "cli_bad_args": cli, "concurrent_strokes_lost": strokes_lost(out / "strokes", 400),
            "examples": {"headers": heads["examples"], "stores": store_examples[:8]}}  # fmt: skip
