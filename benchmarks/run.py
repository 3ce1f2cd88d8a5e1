"""Run one benchmark and print its JSON on the last line.

Usage::

    python benchmarks/run.py --list
    python benchmarks/run.py NAME [--quick] [--out DIR]

Each benchmark is ``benchmarks/bench_<name>.py`` with a function
``run(quick: bool, out: pathlib.Path) -> dict`` returning the measured figures.
This runner adds ``name``, ``quick``, ``device``, ``torch_threads`` and
``wall_total_s`` and prints the dict as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover
        pass
    return f"cpu x{os.cpu_count()} ({platform.processor() or platform.machine()})"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="benchmark name (see --list)")
    parser.add_argument("--list", action="store_true", help="list benchmark names")
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    parser.add_argument("--out", type=Path, default=None, help="folder for any files it writes")
    args = parser.parse_args(argv)
    names = available()
    if args.list or not args.name:
        print("\n".join(names))
        return 0
    if args.name not in names:
        parser.error(f"unknown benchmark {args.name!r}; choose from {', '.join(names)}")
    spec = importlib.util.spec_from_file_location(
        f"bench_{args.name}", HERE / f"bench_{args.name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.name}-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = module.run(quick=args.quick, out=out)
    import torch

    record = {
        "name": args.name,
        "quick": args.quick,
        **result,
        "device": result.get("device", device_name()),
        "torch_threads": torch.get_num_threads(),
        "wall_total_s": round(time.perf_counter() - t0, 3),
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
